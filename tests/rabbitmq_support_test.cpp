// Tests of the RabbitMQ test support: the run's shared node and the blocking
// test client. When a RabbitMQ test fails, these say whether to suspect the
// broker set-up.

#include "support/amqp_test_client.hpp"
#include "support/rabbitmq_node.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <sys/stat.h>

namespace bs_router::testing {
namespace {

TEST(RabbitmqNode, SharedNodeIsOnePerRunAndAnswersAmqp) {
  rabbitmq_node& node = shared_rabbitmq_node();
  std::cout << "node boot: " << node.last_boot_seconds() << " s\n";
  EXPECT_EQ(&node, &shared_rabbitmq_node());
  ASSERT_TRUE(node.running());
  EXPECT_EQ(::kill(node.pid(), 0), 0);
  EXPECT_TRUE(amqp_handshakes(node.amqp_port()));
  EXPECT_NE(node.amqp_port(), 5672);
  EXPECT_EQ(node.uri(), "amqp://guest:guest@127.0.0.1:" + std::to_string(node.amqp_port()) + "/");
}

TEST(RabbitmqNode, CookieIsPrivateAndPluginsOff) {
  rabbitmq_node& node = shared_rabbitmq_node();
  struct stat st{};
  ASSERT_EQ(::stat((node.dir() / "home" / ".erlang.cookie").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0400u);
  // No management plugin: nothing listens on its port 15672 for this node,
  // and the plugin list is empty.
  std::ifstream plugins(node.dir() / "enabled_plugins");
  std::string text((std::istreambuf_iterator<char>(plugins)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "[].\n");
}

TEST(AmqpTestClient, DeclaresPublishesAndGets) {
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  const std::string queue = unique_name("selftest");
  EXPECT_FALSE(client.queue_exists(queue));
  client.declare_quorum_queue(queue);
  EXPECT_TRUE(client.queue_exists(queue));
  client.publish(queue, "hello", "id-1", "somewhere");
  const auto message = client.wait_get(queue);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->body, "hello");
  EXPECT_EQ(message->message_id, "id-1");
  EXPECT_EQ(message->reply_to, "somewhere");
  EXPECT_EQ(message->delivery_mode, 2);
  EXPECT_FALSE(client.get(queue));
  client.delete_queue(queue);
}

TEST(AmqpTestClient, PublishToMissingQueueIsReturned) {
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  EXPECT_THROW(client.publish(unique_name("missing"), "x"), std::runtime_error);
}

} // namespace
} // namespace bs_router::testing
