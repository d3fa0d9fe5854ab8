// The bs_router daemon on RabbitMQ ("broker": "rabbitmq"), end to end: real
// router processes with the fake cbsd against the run's shared node, each
// test on queues of its own. The guarantees of delivery_test.cpp and
// router_test.cpp for beanstalkd, checked the same way: the fake cbsd's
// records count the runs, the reply queues are read as a controller does.

#include <gtest/gtest.h>

#include <fstream>
#include <iostream>

#include "bs_router/journal.hpp"
#include "support/amqp_test_client.hpp"
#include "support/loopback.hpp"
#include "support/rabbitmq_node.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;
using body = nlohmann::ordered_json; // keeps the keys of a job body in order
using namespace std::chrono_literals;
namespace fs = std::filesystem;

rabbitmq_target shared_node() { return rabbitmq_target{{shared_rabbitmq_node().uri()}}; }

body held_job(const std::string& command, const fs::path& gate, const std::string& out = "done\n") {
  return body{{"Command", command}, {"CommandArgs", {{"fake_wait_for", gate.string()}, {"fake_stdout", out}}}};
}

void open_gate(const fs::path& gate) { std::ofstream(gate) << "go"; }

std::size_t journal_entries(const test_pool& pool) { return journal::inspect(pool.statedir().string()).size(); }

bool is_final(const json& reply) {
  const auto it = reply.find("Progress");
  return it != reply.end() && it->is_number() && *it == 100;
}

// The controller's side: publishes jobs to the pool's queue, reads replies.
struct controller {
  explicit controller(const test_pool& p, std::uint16_t node_port = shared_rabbitmq_node().amqp_port())
      : pool(p), port(node_port), client(std::make_unique<amqp_test_client>(port)) {}

  amqp_test_client& broker() {
    if (!client) client = std::make_unique<amqp_test_client>(port);
    return *client;
  }
  std::string queue() const { return pool.config().at("rabbitmq").at("queue").get<std::string>(); }
  std::string reply_queue(const std::string& id) const {
    return pool.config().at("rabbitmq").at("reply_queue_prefix").get<std::string>() + id;
  }
  void publish(const std::string& id, const body& job, const std::string& reply_to = {}) {
    broker().publish(queue(), job.dump(), id, reply_to);
  }
  void publish_raw(const std::string& id, const std::string& text, const std::string& reply_to = {}) {
    broker().publish(queue(), text, id, reply_to);
  }
  // The next message on `queue`, which the router may not have declared yet
  // (a controller declares it before it publishes; here the router does).
  // A quorum queue just declared, or on a node just restarted, refuses a
  // get until its leader is up (541 noproc, the connection closed): then a
  // new connection, and again.
  std::optional<amqp_test_message> wait_get(const std::string& queue, std::chrono::milliseconds limit = 60s) {
    std::optional<amqp_test_message> m;
    wait_until([&] {
      try {
        if (!client) client = std::make_unique<amqp_test_client>(port);
        return client->queue_exists(queue) && (m = client->get(queue)).has_value();
      } catch (const std::runtime_error& ex) {
        std::cout << "get from " << queue << ": " << ex.what() << "; again" << std::endl;
        client.reset();
        return false;
      }
    }, limit, 20ms);
    return m;
  }
  // The replies on `queue` up to the final one (or until `limit` passes).
  std::vector<amqp_test_message> wait_final(const std::string& reply_queue, std::chrono::seconds limit = 60s) {
    std::vector<amqp_test_message> replies;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      auto m = wait_get(reply_queue, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  deadline - std::chrono::steady_clock::now()));
      if (!m) break;
      replies.push_back(std::move(*m));
      if (is_final(json::parse(replies.back().body))) break;
    }
    return replies;
  }
  // Nothing more on `reply_queue` once the router has let the job go.
  void expect_no_more(const std::string& reply_queue) {
    EXPECT_TRUE(wait_until([&] { return journal_entries(pool) == 0; }));
    const auto extra = broker().queue_exists(reply_queue) ? broker().get(reply_queue) : std::nullopt;
    EXPECT_FALSE(extra.has_value()) << (extra ? extra->body : "");
  }

  const test_pool& pool;
  std::uint16_t port;
  std::unique_ptr<amqp_test_client> client;
};

TEST(RabbitmqRouter, AJobRunsOnceWithOneFinalReplyOnItsReplyQueue) {
  const std::uint16_t metrics_port = free_loopback_port();
  test_pool pool(shared_node(), json{{"metrics_listen", "127.0.0.1:" + std::to_string(metrics_port)}});
  pool.start_router();
  // The log and the metrics name the broker and its node, not the password.
  const std::string node = "amqp://guest@127.0.0.1:" + std::to_string(shared_rabbitmq_node().amqp_port()) + "/";
  EXPECT_NE(pool.log_text().find("connected to rabbitmq " + node + " queue "), std::string::npos) << pool.log_text();
  const std::string metrics = http_get(metrics_port, "/metrics");
  EXPECT_NE(metrics.find("bs_router_broker_info{broker=\"rabbitmq\",node=\"" + node + "\"} 1\n"), std::string::npos)
      << metrics;
  EXPECT_EQ(metrics.find("guest:guest"), std::string::npos);
  EXPECT_EQ(pool.log_text().find("guest:guest"), std::string::npos);
  controller c(pool);
  c.publish("job-1", body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", "listed\n"}}}});
  auto replies = c.wait_final(c.reply_queue("job-1"));
  ASSERT_EQ(replies.size(), 1u);
  const json reply = json::parse(replies.back().body);
  EXPECT_EQ(reply["ErrCode"], 0);
  EXPECT_EQ(reply["JobID"], "job-1");
  EXPECT_EQ(reply["Message"], "listed\n");
  EXPECT_EQ(replies.back().correlation_id, "job-1");
  EXPECT_EQ(replies.back().delivery_mode, 2); // persistent
  EXPECT_EQ(pool.runs_of("jls").size(), 1u);
  c.expect_no_more(c.reply_queue("job-1"));
  EXPECT_EQ(c.broker().message_count(c.queue()), 0u);
  EXPECT_EQ(pool.stop_router(), 0);
}

TEST(RabbitmqRouter, AJobWithReplyToIsAnsweredThereOnly) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const std::string theirs = unique_name("their_replies");
  c.broker().declare_classic_queue(theirs);
  c.publish("job-2", body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", "mine\n"}}}}, theirs);
  auto replies = c.wait_final(theirs);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["Message"], "mine\n");
  EXPECT_EQ(replies.back().correlation_id, "job-2");
  EXPECT_EQ(replies.back().delivery_mode, 2);
  c.expect_no_more(theirs);
  EXPECT_FALSE(c.broker().queue_exists(c.reply_queue("job-2")));
  EXPECT_EQ(pool.runs_of("jls").size(), 1u);
}

// The same message again (a redelivery: an ack lost with its connection)
// while the journal holds its job: acknowledged, not run again.
TEST(RabbitmqRouter, AMessageAgainWhoseIdTheJournalKnowsIsAcknowledgedAndNotRunAgain) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const fs::path gate = pool.dir() / "gate";
  const body job = held_job("jcreate", gate);
  c.publish("job-3", job);
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  c.publish("job-3", job);
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("job job-3 came back") != std::string::npos; }));
  EXPECT_TRUE(wait_until([&] { return c.broker().message_count(c.queue()) == 0; }));
  open_gate(gate);
  auto replies = c.wait_final(c.reply_queue("job-3"));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["ErrCode"], 0);
  c.expect_no_more(c.reply_queue("job-3"));
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
}

// An ack is never confirmed: one lost with its node brings the message back
// on the next connection, maybe after its job was answered and its journal
// entry gone. The same message again after the final reply stands for that:
// acknowledged, not run again, no second reply.
TEST(RabbitmqRouter, AMessageAgainAfterItsJobWasAnsweredIsAcknowledgedAndNotRunAgain) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const body job{{"Command", "jls"}};
  c.publish("job-3b", job);
  auto replies = c.wait_final(c.reply_queue("job-3b"));
  ASSERT_EQ(replies.size(), 1u);
  ASSERT_TRUE(wait_until([&] { return bs_router::journal::inspect(pool.statedir().string()).empty(); }))
      << pool.log_text();
  c.publish("job-3b", job);
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("job job-3b came back") != std::string::npos; }))
      << pool.log_text();
  EXPECT_TRUE(wait_until([&] { return c.broker().message_count(c.queue()) == 0; }));
  c.expect_no_more(c.reply_queue("job-3b"));
  EXPECT_EQ(pool.runs_of("jls").size(), 1u);
}

TEST(RabbitmqRouter, RouterKilledDuringARunReplies1003AfterRestartAndDoesNotRunAgain) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const fs::path gate = pool.dir() / "gate";
  c.publish("job-4", held_job("jcreate", gate));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  pool.kill_router();
  open_gate(gate); // the orphaned cbsd may finish now; nobody records it
  pool.start_router();
  auto replies = c.wait_final(c.reply_queue("job-4"));
  ASSERT_EQ(replies.size(), 1u);
  const json reply = json::parse(replies.back().body);
  EXPECT_EQ(reply["ErrCode"], 1003);
  EXPECT_EQ(reply["JobID"], "job-4");
  EXPECT_NE(reply["Message"].get<std::string>().find("outcome is unknown"), std::string::npos);
  c.expect_no_more(c.reply_queue("job-4"));
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  EXPECT_EQ(c.broker().message_count(c.queue()), 0u);
}

// The run ends while the node is frozen: the reply is recorded, and its
// publish waits for a broker that does not answer. The router dies then;
// the next one puts the recorded reply.
TEST(RabbitmqRouter, AReplyRecordedButNotConfirmedBeforeACrashIsPutAfterRestart) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const fs::path gate = pool.dir() / "gate";
  c.publish("job-5", held_job("jcreate", gate, "real result\n"));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  shared_rabbitmq_node().suspend();
  open_gate(gate);
  const bool recorded = wait_until([&] {
    for (const journal_entry& e : journal::inspect(pool.statedir().string()))
      if (e.broker_id == "job-5" && e.state == journal_state::finished) return true;
    return false;
  });
  pool.kill_router();
  shared_rabbitmq_node().resume();
  ASSERT_TRUE(recorded);
  pool.start_router();
  c.client = std::make_unique<amqp_test_client>(shared_rabbitmq_node().amqp_port());
  auto replies = c.wait_final(c.reply_queue("job-5"));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["ErrCode"], 0);
  EXPECT_EQ(json::parse(replies.back().body)["Message"], "real result\n");
  c.expect_no_more(c.reply_queue("job-5"));
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
}

TEST(RabbitmqRouter, BadBodiesGetAnErrorReplyAndNothingRuns) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"bad-1", "not json"},
      {"bad-2", "{}"},
      {"bad-3", R"({"Command":"jls; rm -rf /"})"},
      {"bad-4", R"({"Command":"jls","CommandArgs":"x"})"},
      {"bad-5", std::string("\xff\xfe", 2)},
  };
  for (const auto& [id, text] : bad) c.publish_raw(id, text);
  for (const auto& [id, text] : bad) {
    auto replies = c.wait_final(c.reply_queue(id));
    ASSERT_EQ(replies.size(), 1u) << id;
    const json reply = json::parse(replies.back().body);
    EXPECT_EQ(reply["ErrCode"], 1000) << id;
    EXPECT_EQ(reply["JobID"], id);
    EXPECT_EQ(replies.back().correlation_id, id);
  }
  EXPECT_TRUE(pool.records().empty());
  // And the router goes on.
  c.publish("good", body{{"Command", "jls"}});
  auto replies = c.wait_final(c.reply_queue("good"));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["ErrCode"], 0);
}

// Without a usable message_id a message names no job: an error reply on its
// reply_to when it has one, nothing on any queue of the prefix, never run.
TEST(RabbitmqRouter, AMessageWithoutAUsableMessageIdIsAnsweredOnItsReplyToAndNeverRun) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const std::string theirs = unique_name("their_replies");
  c.broker().declare_classic_queue(theirs);
  const body job{{"Command", "jls"}};
  c.publish("", job, theirs);
  c.publish("", body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", "other\n"}}}}, theirs);
  c.publish("not a usable id!", job, theirs);
  c.publish("", job); // nowhere to answer
  c.publish(std::string(129, 'a'), job, theirs);
  for (int i = 0; i < 4; ++i) {
    auto replies = c.wait_final(theirs);
    ASSERT_EQ(replies.size(), 1u) << "reply " << i;
    const json reply = json::parse(replies.back().body);
    EXPECT_EQ(reply["ErrCode"], 1000) << reply.dump();
    EXPECT_NE(reply["Message"].get<std::string>().find("message_id"), std::string::npos) << reply.dump();
  }
  c.publish("after", job);
  ASSERT_EQ(c.wait_final(c.reply_queue("after")).size(), 1u);
  EXPECT_EQ(pool.runs_of("jls").size(), 1u); // "after" only
  c.expect_no_more(theirs);
  const std::string prefix = pool.config().at("rabbitmq").at("reply_queue_prefix").get<std::string>();
  EXPECT_FALSE(c.broker().queue_exists(prefix));
  EXPECT_EQ(c.broker().message_count(c.queue()), 0u);
}

// A reply_to naming no queue (mandatory: the broker returns the reply) must
// not hold up the replies of other jobs: the reply goes to the job's default
// reply queue instead.
TEST(RabbitmqRouter, AReplyToNamingNoQueueDoesNotHoldUpOtherReplies) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const std::string missing = unique_name("nobody_declared_this");
  c.publish("job-lost", body{{"Command", "jls"}}, missing);
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jls").size() == 1; }));
  c.publish("job-next", body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", "next\n"}}}});
  auto replies = c.wait_final(c.reply_queue("job-next"));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["Message"], "next\n");
  EXPECT_EQ(pool.runs_of("jls").size(), 2u);
  EXPECT_FALSE(c.broker().queue_exists(missing));
  replies = c.wait_final(c.reply_queue("job-lost"));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["ErrCode"], 0);
  EXPECT_EQ(replies.back().correlation_id, "job-lost");
  EXPECT_NE(pool.log_text().find("put on " + c.reply_queue("job-lost") + " instead"), std::string::npos);
  c.expect_no_more(c.reply_queue("job-lost"));
}

TEST(RabbitmqRouter, ProgressRepliesComeInOrderBeforeTheFinalOne) {
  test_pool pool(shared_node(), json{{"progress", true}});
  pool.start_router();
  controller c(pool);
  const fs::path first_gate = pool.dir() / "gate1";
  const fs::path second_gate = pool.dir() / "gate2";
  c.publish("job-p", body{{"Command", "jcreate"},
                          {"CommandArgs",
                           {{"fake_stdout", "first\n"},
                            {"fake_wait_for", first_gate.string()},
                            {"fake_then_stdout", "second\n"},
                            {"fake_then_wait_for", second_gate.string()}}}});
  const std::string queue = c.reply_queue("job-p");
  auto progress = c.wait_get(queue);
  ASSERT_TRUE(progress);
  json reply = json::parse(progress->body);
  EXPECT_LT(reply["Progress"].get<int>(), 100);
  EXPECT_EQ(reply["Message"], "first\n");
  EXPECT_EQ(progress->correlation_id, "job-p");
  open_gate(first_gate);
  progress = c.wait_get(queue);
  ASSERT_TRUE(progress);
  reply = json::parse(progress->body);
  EXPECT_LT(reply["Progress"].get<int>(), 100);
  EXPECT_NE(reply["Message"].get<std::string>().find("second\n"), std::string::npos) << reply.dump();
  open_gate(second_gate);
  auto rest = c.wait_final(queue);
  ASSERT_FALSE(rest.empty());
  reply = json::parse(rest.back().body);
  EXPECT_EQ(reply["Progress"], 100);
  EXPECT_EQ(reply["Message"], "first\nsecond\n");
  c.expect_no_more(queue);
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
}

// A second router on the same queue (another host's statedir) waits while
// the first serves (single active consumer) and takes over when it dies.
TEST(RabbitmqRouter, ASecondRouterOnTheQueueStandsByAndTakesOverWhenTheFirstDies) {
  test_pool first(shared_node());
  test_pool second(shared_node(), json{{"rabbitmq",
                                        {{"queue", first.config()["rabbitmq"]["queue"]},
                                         {"reply_queue_prefix", first.config()["rabbitmq"]["reply_queue_prefix"]}}}});
  first.start_router();
  second.start_router();
  controller c(first);
  for (int i = 0; i < 5; ++i) c.publish("served-" + std::to_string(i), body{{"Command", "jls"}});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(c.wait_final(c.reply_queue("served-" + std::to_string(i))).size(), 1u) << i;
  EXPECT_EQ(first.runs_of("jls").size(), 5u);
  EXPECT_TRUE(second.records().empty());
  first.kill_router();
  c.publish("after", body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", "standby\n"}}}});
  auto replies = c.wait_final(c.reply_queue("after"));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["Message"], "standby\n");
  EXPECT_EQ(second.runs_of("jls").size(), 1u);
  EXPECT_EQ(first.runs_of("jls").size(), 5u);
  EXPECT_EQ(second.stop_router(), 0);
}

// Last: it restarts the run's node. The run ends while the node is down;
// the reply goes out once it is back.
TEST(RabbitmqRouter, ZBrokerRestartedDuringARunGetsTheReplyWhenBack) {
  test_pool pool(shared_node());
  pool.start_router();
  controller c(pool);
  const fs::path gate = pool.dir() / "gate";
  c.publish("job-6", held_job("jcreate", gate, "created\n"));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  c.client.reset();
  shared_rabbitmq_node().kill();
  open_gate(gate);
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("cannot put the reply") != std::string::npos; }, 60s));
  shared_rabbitmq_node().start();
  c.client = std::make_unique<amqp_test_client>(shared_rabbitmq_node().amqp_port());
  auto replies = c.wait_final(c.reply_queue("job-6"), 120s);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(json::parse(replies.back().body)["ErrCode"], 0);
  EXPECT_EQ(json::parse(replies.back().body)["Message"], "created\n");
  c.expect_no_more(c.reply_queue("job-6"));
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  EXPECT_EQ(pool.stop_router(), 0);
}

} // namespace
} // namespace bs_router::testing
