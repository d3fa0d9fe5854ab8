// bs_router-client against a real beanstalkd and router.

#include <gtest/gtest.h>

#include "bs_router/client.hpp"

#include <fstream>
#include "support/beanstalkd_server.hpp"
#include "support/test_pool.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;

class ClientTest : public ::testing::Test {
 protected:
  beanstalkd_server server;
};

TEST_F(ClientTest, PrintsMessageAndExitsWithErrCode) {
  test_pool pool(server);
  pool.start_router();
  std::string out, err;
  int status = run_client({"-config", pool.config_path().string(), "-body",
                           R"({"Command":"jstart","CommandArgs":{"jname":"a","fake_stdout":"started a\n","fake_exit":3}})"},
                          &out, &err);
  EXPECT_EQ(status, 3) << err;
  EXPECT_EQ(out, "started a\n");
}

TEST_F(ClientTest, ShortFormBuildsTheBody) {
  test_pool pool(server);
  pool.start_router();
  std::string out, err;
  int status = run_client({"-config", pool.config_path().string(), "jls", "header=0", "display=jname,status"}, &out, &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(out, "fake cbsd: jls ok\n");
  auto runs = pool.runs_of("jls");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["argv"], json::array({FAKE_CBSD_PATH, "jls", "header=0", "display=jname,status"}));
}

TEST_F(ClientTest, JsonPrintsTheWholeFinalReply) {
  test_pool pool(server);
  pool.start_router();
  std::string out, err;
  int status = run_client({"--config", pool.config_path().string(), "--json", "jcreate", "jname=j9"}, &out, &err);
  EXPECT_EQ(status, 0) << err;
  json reply = json::parse(out);
  EXPECT_EQ(reply["ErrCode"], 0);
  EXPECT_EQ(reply["Progress"], 100);
  EXPECT_EQ(reply["Guid"], "bget-guid-j9");
}

TEST_F(ClientTest, RouterErrorCodesExitOne) {
  test_pool pool(server);
  pool.start_router();
  std::string out, err;
  int status = run_client({"-config", pool.config_path().string(), "-body", R"({"Command":"-x"})"}, &out, &err);
  EXPECT_EQ(status, client_exit::router_error);
  EXPECT_NE(out.find("bad job"), std::string::npos);
  EXPECT_NE(err.find("ErrCode 1000"), std::string::npos);
}

TEST_F(ClientTest, TimeoutEndsWithAMessageAndStatus124) {
  test_pool pool(server); // no router runs: nothing will answer
  std::string out, err;
  int status = run_client({"-config", pool.config_path().string(), "--timeout", "1", "jls"}, &out, &err);
  EXPECT_EQ(status, client_exit::timed_out);
  EXPECT_NE(err.find("no final reply"), std::string::npos) << err;
}

TEST_F(ClientTest, UnreachableBrokerExits69) {
  test_pool pool(server);
  server.kill();
  std::string out, err;
  int status = run_client({"-config", pool.config_path().string(), "--timeout", "5", "jls"}, &out, &err);
  EXPECT_EQ(status, client_exit::unavailable);
  EXPECT_NE(err.find("cannot put the job"), std::string::npos) << err;
}

TEST_F(ClientTest, AcceptsTheGoClientsConfigWithoutPoolKeys) {
  test_pool pool(server);
  pool.start_router();
  const auto client_config = pool.dir() / "client.json";
  std::ofstream(client_config) << json{{"broker", "beanstalkd"},
                                       {"beanstalkd", {{"uri", server.uri()},
                                                       {"tube", pool.tube()},
                                                       {"reply_tube_prefix", pool.reply_tube_prefix()},
                                                       {"reconnect_timeout", 1},
                                                       {"reserve_timeout", 1},
                                                       {"publish_timeout", 5}}}}
                                           .dump();
  std::string out, err;
  EXPECT_EQ(run_client({"-config", client_config.string(), "jls"}, &out, &err), 0) << err;
  EXPECT_EQ(out, "fake cbsd: jls ok\n");
}

TEST(ClientExit, ErrCodeMapsToExitStatus) {
  EXPECT_EQ(exit_status_for(0), 0);
  EXPECT_EQ(exit_status_for(3), 3);
  EXPECT_EQ(exit_status_for(255), 255);
  EXPECT_EQ(exit_status_for(256), client_exit::router_error);
  EXPECT_EQ(exit_status_for(1003), client_exit::router_error);
  EXPECT_EQ(exit_status_for(-1), client_exit::router_error);
}

} // namespace
} // namespace bs_router::testing
