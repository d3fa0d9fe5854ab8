// bs_router-client with a RabbitMQ config, against the run's shared node:
// the real client and the real router with the fake cbsd, as client_test
// does over beanstalkd.

#include <gtest/gtest.h>

#include "bs_router/client.hpp"
#include "bs_router/client_session.hpp"
#include "bs_router/rabbitmq_config.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "support/amqp_test_client.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/loopback.hpp"
#include "support/rabbitmq_node.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class RabbitmqClientTest : public ::testing::Test {
 protected:
  RabbitmqClientTest()
      : queue_(unique_name("cbsd_pool")), reply_prefix_(unique_name("cbsd_pool_result_id") + ".") {}

  // The pool's config on the shared node (or on `uri`); its beanstalkd
  // section goes.
  json rabbitmq_patch(const test_pool& pool, const std::string& uri, int reconnect_timeout = 1,
                      bool progress = false) const {
    return json{{"broker", "rabbitmq"},
                {"progress", progress},
                {"beanstalkd", nullptr},
                {"rabbitmq",
                 {{"uri", uri},
                  {"queue", queue_},
                  {"reply_queue_prefix", reply_prefix_},
                  {"reconnect_timeout", reconnect_timeout},
                  {"logdir", pool.logdir().string()}}}};
  }

  // Starts the router and returns once it consumes the pool's queue.
  void start_router(test_pool& pool) {
    pool.spawn_router({"-config", pool.config_path().string()});
    const std::string marker = "connected to rabbitmq ";
    ASSERT_TRUE(wait_until(
        [&] {
          const std::string log = pool.log_text();
          return (log.find(marker) != std::string::npos && log.find("queue " + queue_) != std::string::npos) ||
                 !pool.router_running();
        },
        60s));
    ASSERT_TRUE(pool.router_running()) << pool.output_text() << pool.log_text();
  }

  // The message id of the job the router logged (the client made it).
  static std::string logged_job_id(const test_pool& pool) {
    std::smatch m;
    const std::string log = pool.log_text();
    if (std::regex_search(log, m, std::regex(R"(job (bs_router-client\.[0-9]+\.[0-9]+\.[0-9a-f]{16}))")))
      return m[1].str();
    return "";
  }

  beanstalkd_server server; // test_pool's; unused by a rabbitmq config
  rabbitmq_node& node = shared_rabbitmq_node();
  std::string queue_;
  std::string reply_prefix_;
};

TEST_F(RabbitmqClientTest, PrintsMessageExitsWithErrCodeAndDeletesItsReplyQueue) {
  test_pool pool(server);
  pool.write_config(rabbitmq_patch(pool, node.uri()));
  ASSERT_NO_FATAL_FAILURE(start_router(pool));
  std::string out, err;
  const int status =
      run_client({"-config", pool.config_path().string(), "-body",
                  R"({"Command":"jstart","CommandArgs":{"jname":"a","fake_stdout":"started a\n","fake_exit":3}})"},
                 &out, &err);
  EXPECT_EQ(status, 3) << err;
  EXPECT_EQ(out, "started a\n");
  EXPECT_EQ(err, "");
  const std::string id = logged_job_id(pool);
  ASSERT_FALSE(id.empty()) << pool.log_text();
  EXPECT_TRUE(valid_message_id(id)) << id;
  amqp_test_client broker(node.amqp_port());
  EXPECT_FALSE(broker.queue_exists(reply_prefix_ + id)) << "the reply queue is left behind";
  EXPECT_EQ(broker.message_count(queue_), 0u);
}

TEST_F(RabbitmqClientTest, ShortFormAndJson) {
  test_pool pool(server);
  pool.write_config(rabbitmq_patch(pool, node.uri()));
  ASSERT_NO_FATAL_FAILURE(start_router(pool));
  std::string out, err;
  EXPECT_EQ(run_client({"--config", pool.config_path().string(), "--json", "jcreate", "jname=j9"}, &out, &err), 0)
      << err;
  const json reply = json::parse(out);
  EXPECT_EQ(reply["ErrCode"], 0);
  EXPECT_EQ(reply["Progress"], 100);
  EXPECT_EQ(reply["JobID"], logged_job_id(pool));
}

TEST_F(RabbitmqClientTest, LiveOutputIsPrintedWhileTheJobRuns) {
  test_pool pool(server);
  pool.write_config(rabbitmq_patch(pool, node.uri(), 1, true));
  ASSERT_NO_FATAL_FAILURE(start_router(pool));
  const auto gate = pool.dir() / "gate";
  const auto out_path = pool.dir() / "client.out";
  const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(out_fd, 0);
  spawn_options options;
  options.stdout_fd = out_fd;
  const json body = {{"Command", "jstart"},
                     {"CommandArgs",
                      {{"fake_stdout", "first\n"}, {"fake_wait_for", gate.string()}, {"fake_then_stdout", "second\n"}}}};
  const pid_t client =
      spawn_process({BS_ROUTER_CLIENT_PATH, "-config", pool.config_path().string(), "-body", body.dump()}, options);
  ::close(out_fd);
  // The first line is printed while cbsd still runs (it waits for the gate).
  const bool live = wait_until([&] { return file_text(out_path) == "first\n"; }, 60s);
  std::ofstream(gate) << "go";
  const auto status = wait_for_exit(client, 60s);
  if (!status) {
    ::kill(client, SIGKILL);
    wait_for_exit(client, 10s);
    FAIL() << "the client did not finish";
  }
  EXPECT_TRUE(live) << file_text(out_path);
  EXPECT_EQ(exit_status_of(*status), 0);
  EXPECT_EQ(file_text(out_path), "first\nsecond\n");
}

TEST_F(RabbitmqClientTest, TimeoutBoundsTheWaitForAReply) {
  test_pool pool(server);
  pool.write_config(rabbitmq_patch(pool, node.uri())); // no router runs: nothing will answer
  std::string out, err;
  const int status = run_client({"-config", pool.config_path().string(), "--timeout", "2", "jls"}, &out, &err);
  EXPECT_EQ(status, client_exit::timed_out) << err;
  EXPECT_NE(err.find("no final reply to job bs_router-client."), std::string::npos) << err;
  EXPECT_NE(err.find(" on " + reply_prefix_ + "bs_router-client."), std::string::npos) << err;
  // The job was put (persistent, on the pool's queue) and waits for a router.
  amqp_test_client broker(node.amqp_port());
  EXPECT_EQ(broker.message_count(queue_), 1u);
}

// A broker that accepts the connection and never answers: --timeout ends
// the wait, though each AMQP step would wait reconnect_timeout + 5 s.
TEST_F(RabbitmqClientTest, TimeoutEndsTheWaitOnABrokerThatNeverAnswers) {
  std::uint16_t port = 0;
  const int listener = listen_on_loopback(&port, "silent broker");
  test_pool pool(server);
  pool.write_config(rabbitmq_patch(pool, "amqp://guest:guest@127.0.0.1:" + std::to_string(port) + "/", 120));
  std::string out, err;
  // run_client kills a client still running after a minute.
  const int status = run_client({"-config", pool.config_path().string(), "--timeout", "2", "jls"}, &out, &err);
  ::close(listener);
  EXPECT_EQ(status, client_exit::timed_out) << err;
  EXPECT_NE(err.find("did not answer within 2 s; the job was not put"), std::string::npos) << err;
}

TEST_F(RabbitmqClientTest, UnreachableBrokerExits69) {
  const std::uint16_t port = free_loopback_port(); // nothing listens there
  test_pool pool(server);
  pool.write_config(rabbitmq_patch(pool, "amqp://guest:guest@127.0.0.1:" + std::to_string(port) + "/"));
  std::string out, err;
  EXPECT_EQ(run_client({"-config", pool.config_path().string(), "--timeout", "30", "jls"}, &out, &err),
            client_exit::unavailable);
  EXPECT_NE(err.find("cannot put the job"), std::string::npos) << err;
}

TEST(RabbitmqClientMessageId, IsValidAndNewEachTime) {
  const std::string a = make_message_id();
  const std::string b = make_message_id();
  EXPECT_TRUE(valid_message_id(a)) << a;
  EXPECT_NE(a, b);
}

} // namespace
} // namespace bs_router::testing
