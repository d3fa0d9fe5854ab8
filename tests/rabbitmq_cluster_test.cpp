// The three-node test cluster: it forms, a quorum queue lives on through
// kill -9 of one node, the node comes back, and nothing of it outlives the
// cluster. Its own executable, so that the run's shared node is not up
// beside it.

#include "support/amqp_test_client.hpp"
#include "support/rabbitmq_node.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <iostream>

namespace bs_router::testing {
namespace {

bool process_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

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
