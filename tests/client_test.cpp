// bs_router-client against a real beanstalkd and router.

#include <gtest/gtest.h>

#include "bs_router/client.hpp"

#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include "support/beanstalkd_server.hpp"
#include "support/test_pool.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

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

TEST_F(ClientTest, TimeoutOutOfRangeIsAUsageError) {
  test_pool pool(server);
  // 1e10 s overflowed the clock: the client put the job and timed out at once.
  for (const char* bad : {"1e10", "-1", "abc"}) {
    SCOPED_TRACE(bad);
    std::string out, err;
    EXPECT_EQ(run_client({"-config", pool.config_path().string(), "--timeout", bad, "jls"}, &out, &err),
              client_exit::usage);
    EXPECT_NE(err.find("--timeout: expected a number of seconds"), std::string::npos) << err;
  }
  auto tube = pool.client().stats_tube(pool.tube());
  EXPECT_TRUE(!tube || tube->at("total-jobs") == "0") << "a job was put";
}

// The broker accepts the connection (the kernel does, for a stopped
// process) and never answers anything.
TEST_F(ClientTest, TimeoutEndsTheWaitOnABrokerThatNeverAnswers) {
  test_pool pool(server);
  server.suspend();
  std::string out, err;
  // run_client's own bound (it kills a client still running after a minute)
  // is what fails the test if the client waits on the broker for ever.
  int status = run_client({"-config", pool.config_path().string(), "--timeout", "2", "jls"}, &out, &err);
  server.resume();
  EXPECT_EQ(status, client_exit::timed_out) << err;
  EXPECT_NE(err.find("did not answer within 2 s; the job was not put"), std::string::npos) << err;
}

TEST_F(ClientTest, TimeoutEndsTheWaitOnABrokerThatFallsSilentAfterThePut) {
  test_pool pool(server); // no router: the test sees the job put, then stops the broker
  std::string out, err;
  int status = -1;
  std::thread client([&] {
    status = run_client({"-config", pool.config_path().string(), "--timeout", "2", "jls"}, &out, &err);
  });
  auto job = pool.client().reserve(pool.tube(), 30s);
  server.suspend();
  client.join();
  server.resume();
  ASSERT_TRUE(job) << "the client put no job";
  EXPECT_EQ(status, client_exit::timed_out) << err;
  EXPECT_NE(err.find("no final reply to job " + std::to_string(job->id)), std::string::npos) << err;
}

TEST_F(ClientTest, MalformedRepliesAreNotTakenForTheFinalReply) {
  test_pool pool(server); // no router: the test answers the job itself
  std::string out, err;
  int status = -1;
  std::thread client([&] { status = run_client({"-config", pool.config_path().string(), "jls"}, &out, &err); });
  auto job = pool.client().reserve(pool.tube(), 30s);
  if (!job) {
    client.join();
    FAIL() << "the client put no job: " << err;
  }
  const std::string reply_tube = pool.reply_tube(job->id);
  // Each body, and what the client must say of it.
  const std::vector<std::pair<std::string, std::string>> malformed = {
      {"{}", "it has no Progress"},
      {R"({"ErrCode":"1","Progress":100})", "it has no Message"},
      {R"({"ErrCode":"1","Message":"","Progress":100})", "its ErrCode is not an integer"},
      {R"({"ErrCode":0,"Message":"half way\n","Progress":"50"})", "its Progress is not a number"},
      {R"({"ErrCode":0,"Message":7,"Progress":100})", "its Message is not a string"},
      {R"({"Message":"","Progress":100})", "it has no ErrCode"},
      {R"({"ErrCode":1.5,"Message":"","Progress":100})", "its ErrCode is not an integer"},
      {R"({"ErrCode":0,"Message":"","Progress":101})", "its Progress is not between 0 and 100"},
      {"[100]", "it is not a JSON object"},
      {"not json", "it is not a JSON object"},
  };
  for (const auto& [body, problem] : malformed) pool.client().put(reply_tube, body);
  pool.client().put(reply_tube, R"({"ErrCode":0,"Message":"live\n","Progress":0})");
  pool.client().put(reply_tube, R"({"ErrCode":3,"Message":"live\nthe real one\n","Progress":100,"Guid":"0"})");
  client.join();
  pool.client().delete_job(job->id);

  EXPECT_EQ(status, 3) << err;
  EXPECT_EQ(out, "live\nthe real one\n");
  std::size_t ignored = 0;
  for (auto at = err.find("ignoring a malformed reply on " + reply_tube + ": "); at != std::string::npos;
       at = err.find("ignoring a malformed reply", at + 1))
    ++ignored;
  EXPECT_EQ(ignored, malformed.size()) << err;
  for (const auto& [body, problem] : malformed)
    EXPECT_NE(err.find(": " + problem + "; still waiting for the final reply\n"), std::string::npos)
        << body << "\n" << err;
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

TEST(ClientReply, OnlyAWellFormedReplyIsFinal) {
  auto final_reply = read_reply(R"({"ErrCode":1003,"Message":"m","Progress":100,"Extra":[1]})");
  EXPECT_EQ(final_reply.what, reply_reading::kind::final_reply);
  EXPECT_EQ(final_reply.err_code, 1003);
  EXPECT_EQ(final_reply.message, "m");
  EXPECT_EQ(final_reply.reply["Extra"], json::array({1}));

  EXPECT_EQ(read_reply(R"({"ErrCode":0,"Message":"","Progress":100.0})").what,
            reply_reading::kind::final_reply);
  EXPECT_EQ(read_reply(R"({"ErrCode":-1,"Message":"","Progress":100})").err_code, -1);

  auto progress = read_reply(R"({"Message":"so far","Progress":0})");
  EXPECT_EQ(progress.what, reply_reading::kind::progress);
  EXPECT_EQ(progress.message, "so far");
  EXPECT_EQ(read_reply(R"({"ErrCode":0,"Message":"","Progress":99.5})").what, reply_reading::kind::progress);

  for (const char* body : {"", "{}", "null", "100", R"({"Progress":100})",
                           R"({"ErrCode":0,"Message":"","Progress":-1})",
                           R"({"ErrCode":0,"Message":"","Progress":null})",
                           R"({"ErrCode":"0","Message":"","Progress":0})",
                           R"({"ErrCode":true,"Message":"","Progress":100})",
                           R"({"ErrCode":18446744073709551615,"Message":"","Progress":100})",
                           R"({"ErrCode":0,"Message":null,"Progress":100})"}) {
    auto r = read_reply(body);
    EXPECT_EQ(r.what, reply_reading::kind::malformed) << body;
    EXPECT_FALSE(r.problem.empty()) << body;
  }
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
