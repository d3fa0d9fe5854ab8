// The three-node test cluster: it forms, a quorum queue lives on through
// kill -9 of one node, the node comes back, and nothing of it outlives the
// cluster. Its own executable, so that the run's shared node is not up
// beside it.

#include "bs_router/amqp_connection.hpp"
#include "bs_router/broker.hpp"

#include "bs_router/journal.hpp"
#include "support/amqp_test_client.hpp"
#include "support/run_coroutine.hpp"
#include "support/rabbitmq_node.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

namespace bs_router::testing {
namespace {

bool process_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// The cluster of the failover tests below, booted once for them (it takes
// 30-50 s) and killed at exit; each test first brings back the nodes an
// earlier one killed.
rabbitmq_cluster& shared_cluster() {
  static std::unique_ptr<rabbitmq_cluster> cluster;
  if (!cluster) {
    cluster = std::make_unique<rabbitmq_cluster>();
    std::cout << "shared cluster formed in " << cluster->form_seconds() << " s" << std::endl;
  }
  for (std::size_t i = 0; i < cluster->size(); ++i)
    if (!cluster->node(i).running()) cluster->node(i).restart();
  return *cluster;
}

// A quorum queue just declared, or whose leader just died, nacks publishes
// until its members have elected a leader; and a channel that was open
// while the leader died was seen to nack every publish from then on (3.10).
// So a nack is answered as the router answers it: a new connection, and the
// publish again. The number of tries is printed.
void publish_until_confirmed(std::unique_ptr<amqp_test_client>& client, std::uint16_t port,
                             const std::string& queue, const std::string& body, const std::string& id) {
  int tries = 0;
  const bool confirmed = wait_until([&] {
    if (tries++ > 0) client = std::make_unique<amqp_test_client>(port);
    try {
      client->publish(queue, body, id);
      return true;
    } catch (const std::runtime_error& ex) {
      if (std::string(ex.what()).find("nacked") == std::string::npos) throw;
      return false;
    }
  }, std::chrono::seconds{60}, std::chrono::milliseconds{50});
  EXPECT_TRUE(confirmed) << queue;
  std::cout << "publish of " << id << " confirmed after " << tries << " tries" << std::endl;
}

TEST(RabbitmqCluster, FormsSurvivesKillOfOneAndRestartsIt) {
  std::vector<pid_t> pids;
  std::filesystem::path dir;
  {
    rabbitmq_cluster cluster;
    std::cout << "cluster formed in " << cluster.form_seconds() << " s (first node "
              << cluster.node(0).last_boot_seconds() << " s)" << std::endl;
    ASSERT_EQ(cluster.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) pids.push_back(cluster.node(i).pid());
    dir = cluster.node(0).dir().parent_path();

    const std::string queue = unique_name("cluster");
    {
      amqp_test_client first(cluster.node(0).amqp_port());
      first.declare_quorum_queue(queue);
    }
    // One cluster: the queue declared through the first node is known to the others.
    auto second = std::make_unique<amqp_test_client>(cluster.node(1).amqp_port());
    auto third = std::make_unique<amqp_test_client>(cluster.node(2).amqp_port());
    EXPECT_TRUE(second->queue_exists(queue));
    EXPECT_TRUE(third->queue_exists(queue));
    publish_until_confirmed(second, cluster.node(1).amqp_port(), queue, "before", "m1");

    cluster.node(0).kill();
    EXPECT_TRUE(process_gone(pids[0]));
    publish_until_confirmed(third, cluster.node(2).amqp_port(), queue, "after", "m2");
    auto got = second->wait_get(queue);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->body, "before");
    got = second->wait_get(queue);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->body, "after");

    cluster.node(0).restart();
    pids.push_back(cluster.node(0).pid());
    amqp_test_client back(cluster.node(0).amqp_port());
    EXPECT_TRUE(back.queue_exists(queue));
    EXPECT_EQ(back.message_count(queue), 0u);
  }
  for (pid_t pid : pids) EXPECT_TRUE(process_gone(pid)) << pid;
  EXPECT_FALSE(std::filesystem::exists(dir));
}

} // namespace
} // namespace bs_router::testing

namespace bs_router {
namespace {

using testing::publish_until_confirmed;
namespace asio = boost::asio;
using namespace std::chrono_literals;

void run(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  ASSERT_TRUE(bs_router::testing::run_coroutine(io, std::move(body), 180s)) << "coroutine did not finish";
}

// The router's connection to the node that holds the queue's leader dies
// with it; the next open() finds another node, where the unacknowledged job
// comes again and a reply is confirmed.
TEST(RabbitmqCluster, AmqpConnectionGoesOnThroughAnotherNodeWhenItsNodeIsKilled) {
  testing::rabbitmq_cluster& cluster = testing::shared_cluster();
  amqp_settings settings;
  for (const std::string& text : cluster.uris()) {
    std::string problem;
    settings.uris.push_back(*parse_amqp_uri(text, problem));
  }
  settings.operation_timeout = 10s;
  settings.publish_timeout = 10s;
  asio::io_context io;
  amqp_connection conn(io.get_executor(), settings);
  const std::string queue = testing::unique_name("failover");
  const std::string replies = testing::unique_name("failover_replies");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    EXPECT_EQ(conn.peer(), settings.uris[0].redacted());
    co_await conn.declare_job_queue(queue); // its leader on the first node
    co_await conn.declare_reply_queue(replies);
  });
  auto client = std::make_unique<testing::amqp_test_client>(cluster.node(1).amqp_port());
  publish_until_confirmed(client, cluster.node(1).amqp_port(), queue, "{}", "job-f");
  std::error_code dropped;
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.consume(queue);
    auto d = co_await conn.next(60s);
    EXPECT_TRUE(d);
    cluster.node(0).kill(); // before the ack
    try {
      co_await conn.next(100s);
      ADD_FAILURE() << "next() returned on a connection whose node was killed";
    } catch (const broker_error& e) {
      dropped = e.code();
    }
  });
  EXPECT_EQ(dropped, make_error_code(amqp_errc::connection_failed));
  // As the router does: open again (the first URI refuses now), and again
  // after a failure while the queue elects a new leader.
  std::optional<amqp_delivery> again;
  int opens = 0;
  run(io, [&]() -> asio::awaitable<void> {
    for (; !again && opens < 20; ++opens) {
      try {
        co_await conn.open();
        co_await conn.consume(queue);
        again = co_await conn.next(30s);
      } catch (const broker_error& e) {
        std::cout << "open " << opens << ": " << e.what() << std::endl;
      }
    }
    EXPECT_TRUE(again);
    if (!again) co_return;
    EXPECT_NE(conn.peer(), settings.uris[0].redacted());
    EXPECT_EQ(again->message_id, "job-f");
    EXPECT_TRUE(again->redelivered);
    co_await conn.ack(again->delivery_tag);
    // The reply queue's leader died too: publishes are nacked until its
    // other members elect one. As the router would, try again after a
    // pause (here 100 ms, not reconnect_timeout), on a new connection.
    bool confirmed = false;
    int tries = 0;
    asio::steady_timer pause(co_await asio::this_coro::executor);
    const auto give_up = std::chrono::steady_clock::now() + 120s;
    while (!confirmed && std::chrono::steady_clock::now() < give_up) {
      ++tries;
      try {
        if (!conn.is_open()) co_await conn.open();
        co_await conn.publish(replies, "{}", "job-f", "job-f");
        confirmed = true;
      } catch (const broker_error&) {
      }
      if (!confirmed) {
        pause.expires_after(100ms);
        co_await pause.async_wait(asio::use_awaitable);
      }
    }
    std::cout << "reply confirmed after " << tries << " tries" << std::endl;
    EXPECT_TRUE(confirmed);
  });
  std::cout << "failed over after " << opens << " opens" << std::endl;
  const auto reply = client->wait_get(replies);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->correlation_id, "job-f");
}

// The bs_router daemon on the cluster, jobs flowing: kill -9 of the node it
// is connected to (the first URI, where it declared the queue, so the
// queue's leader dies too). The router goes on through another node (URIs
// tried in turn); every job runs once and gets its final reply.
TEST(RabbitmqCluster, TheRouterGoesOnThroughAnotherNodeWhenItsNodeIsKilledWhileJobsFlow) {
  using nlohmann::json;
  testing::rabbitmq_cluster& cluster = testing::shared_cluster();
  testing::test_pool pool(testing::rabbitmq_target{cluster.uris()}, json{{"max_jobs", 4}});
  pool.start_router();
  const std::string queue = pool.config()["rabbitmq"]["queue"];
  const std::string prefix = pool.config()["rabbitmq"]["reply_queue_prefix"];
  auto connected_to = [&](std::size_t node) {
    const std::string line = "connected to rabbitmq amqp://guest@127.0.0.1:" +
                             std::to_string(cluster.node(node).amqp_port()) + "/ queue " + queue;
    return pool.log_text().find(line) != std::string::npos;
  };
  EXPECT_TRUE(connected_to(0)) << pool.log_text();
  const std::uint16_t publish_port = cluster.node(1).amqp_port();
  const std::uint16_t read_port = cluster.node(2).amqp_port();
  auto publisher = std::make_unique<testing::amqp_test_client>(publish_port);
  auto reader = std::make_unique<testing::amqp_test_client>(read_port);
  const int jobs = 30;
  const int kill_after = 8; // replies seen before the node dies
  auto id_of = [](int i) { return "flow-" + std::to_string(i); };
  auto publish = [&](int i) {
    const nlohmann::ordered_json job{{"Command", "jls"},
                                     {"CommandArgs", {{"fake_stdout", id_of(i) + "\n"}, {"fake_sleep_ms", 500}}}};
    testing::publish_until_confirmed(publisher, publish_port, queue, job.dump(), id_of(i));
  };
  // Final replies per job: every message on its reply queue, read through a
  // node that stays up.
  std::map<std::string, std::vector<std::string>> replies;
  auto read_replies = [&](int upto) {
    for (int i = 0; i < upto; ++i) {
      const std::string q = prefix + id_of(i);
      try {
        if (!reader->queue_exists(q)) continue;
        while (auto m = reader->get(q)) replies[id_of(i)].push_back(m->body);
      } catch (const std::runtime_error&) {
        reader = std::make_unique<testing::amqp_test_client>(read_port); // a leader election under way
      }
    }
  };
  auto answered = [&](int upto) {
    for (int i = 0; i < upto; ++i)
      if (replies[id_of(i)].empty()) return false;
    return true;
  };
  // All queued at once: when the node dies, jobs are running, replies on
  // their way, deliveries unacknowledged in the prefetch, and more waiting.
  for (int i = 0; i < jobs; ++i) publish(i);
  ASSERT_TRUE(testing::wait_until([&] {
    read_replies(jobs);
    int n = 0;
    for (int i = 0; i < jobs; ++i) n += !replies[id_of(i)].empty();
    return n >= kill_after;
  }, 120s));
  cluster.node(0).kill();
  std::cout << "node 0 killed with " << pool.runs_of("jls").size() << " of " << jobs << " jobs started" << std::endl;
  const bool all = testing::wait_until([&] {
    read_replies(jobs);
    return answered(jobs);
  }, 180s);
  EXPECT_TRUE(all) << pool.log_text();
  // Settled: the journal is empty, so no reply is still on its way.
  EXPECT_TRUE(testing::wait_until([&] { return journal::inspect(pool.statedir().string()).empty(); }, 60s));
  read_replies(jobs);
  std::size_t duplicates = 0;
  for (int i = 0; i < jobs; ++i) {
    const std::vector<std::string>& got = replies[id_of(i)];
    ASSERT_FALSE(got.empty()) << id_of(i);
    EXPECT_EQ(got.size(), 1u) << id_of(i) << " answered " << got.size() << " times";
    duplicates += got.size() - 1;
    const json reply = json::parse(got.front());
    EXPECT_EQ(reply["ErrCode"], 0) << got.front();
    EXPECT_EQ(reply["Message"], id_of(i) + "\n");
  }
  std::map<std::string, int> runs;
  for (const json& run : pool.runs_of("jls"))
    for (const json& arg : run["argv"])
      if (arg.get<std::string>().starts_with("fake_stdout=")) ++runs[arg.get<std::string>().substr(12)];
  for (int i = 0; i < jobs; ++i) EXPECT_EQ(runs[id_of(i) + "\n"], 1) << id_of(i);
  EXPECT_TRUE(connected_to(1) || connected_to(2)) << pool.log_text();
  std::cout << "duplicate replies: " << duplicates << std::endl;
  EXPECT_EQ(pool.stop_router(), 0);
}

// Two of three nodes killed while a job runs: the node left is a minority,
// so the reply's publish is neither confirmed nor refused. The wait ends at
// publish_timeout, the reply waits in the journal (recorded, finished), and
// goes out once the two nodes are back; the job ran once.
TEST(RabbitmqCluster, WithAMinorityLeftTheReplyWaitsInTheJournalUntilTheClusterIsBack) {
  using nlohmann::json;
  testing::rabbitmq_cluster& cluster = testing::shared_cluster();
  testing::test_pool pool(testing::rabbitmq_target{cluster.uris()},
                          json{{"rabbitmq", {{"publish_timeout", 2}}}});
  pool.start_router();
  const std::string queue = pool.config()["rabbitmq"]["queue"];
  const std::string prefix = pool.config()["rabbitmq"]["reply_queue_prefix"];
  const std::filesystem::path gate = pool.dir() / "gate";
  auto publisher = std::make_unique<testing::amqp_test_client>(cluster.node(0).amqp_port());
  const json job{{"Command", "jls"}, {"CommandArgs", {{"fake_wait_for", gate.string()}, {"fake_stdout", "late\n"}}}};
  testing::publish_until_confirmed(publisher, cluster.node(0).amqp_port(), queue, job.dump(), "minority-1");
  ASSERT_TRUE(testing::wait_until([&] { return pool.runs_of("jls").size() == 1; }, 60s)) << pool.log_text();
  publisher.reset();
  cluster.node(1).kill();
  cluster.node(2).kill();
  std::ofstream(gate) << "go";
  // Bounded: the put fails within publish_timeout, and is logged once.
  ASSERT_TRUE(testing::wait_until(
      [&] { return pool.log_text().find("wait in the journal until the broker is back") != std::string::npos; }, 60s))
      << pool.log_text();
  const std::vector<journal_entry> held = journal::inspect(pool.statedir().string());
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held.front().broker_id, "minority-1");
  EXPECT_EQ(held.front().state, journal_state::finished);
  cluster.node(1).restart();
  cluster.node(2).restart();
  std::vector<std::string> replies;
  const std::uint16_t read_port = cluster.node(1).amqp_port();
  auto reader = std::make_unique<testing::amqp_test_client>(read_port);
  EXPECT_TRUE(testing::wait_until([&] {
    try {
      if (reader->queue_exists(prefix + "minority-1"))
        while (auto m = reader->get(prefix + "minority-1")) replies.push_back(m->body);
    } catch (const std::runtime_error&) {
      reader = std::make_unique<testing::amqp_test_client>(read_port); // a leader election under way
    }
    return !replies.empty();
  }, 180s)) << pool.log_text();
  EXPECT_TRUE(testing::wait_until([&] { return journal::inspect(pool.statedir().string()).empty(); }, 60s));
  ASSERT_FALSE(replies.empty());
  // A publish neither confirmed nor refused may still have been enqueued:
  // then the same reply comes twice, under the same message id.
  for (const std::string& body : replies) {
    const json reply = json::parse(body);
    EXPECT_EQ(reply["ErrCode"], 0) << body;
    EXPECT_EQ(reply["Message"], "late\n") << body;
  }
  std::cout << "replies: " << replies.size() << std::endl;
  EXPECT_EQ(pool.runs_of("jls").size(), 1u);
  EXPECT_EQ(pool.stop_router(), 0);
}

} // namespace
} // namespace bs_router
