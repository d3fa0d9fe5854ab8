// amqp_connection against real RabbitMQ nodes: the run's shared node for
// what leaves the broker running, a node of its own for a broker that goes
// silent or dies.

#include "bs_router/amqp_connection.hpp"
#include "bs_router/broker.hpp"

#include "support/amqp_test_client.hpp"
#include "support/run_coroutine.hpp"
#include "support/loopback.hpp"
#include "support/rabbitmq_node.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <iostream>

#include <unistd.h>

namespace bs_router {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::amqp_test_client;
using testing::rabbitmq_node;
using testing::shared_rabbitmq_node;
using testing::unique_name;

// Runs one coroutine to its end; a bug fails the test instead of hanging it.
void run(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  ASSERT_TRUE(bs_router::testing::run_coroutine(io, std::move(body), 120s)) << "coroutine did not finish";
}

amqp_settings settings_for(const rabbitmq_node& node) {
  std::string problem;
  auto uri = parse_amqp_uri(node.uri(), problem);
  EXPECT_TRUE(uri) << problem;
  amqp_settings s;
  s.uris = {*uri};
  s.operation_timeout = 10s;
  s.publish_timeout = 10s;
  return s;
}

// The error of the broker_error that `body` throws (a default code if none).
std::error_code error_of(asio::io_context& io, std::function<asio::awaitable<void>()> body,
                         std::string* what = nullptr) {
  std::error_code code;
  EXPECT_NO_FATAL_FAILURE(run(io, [&]() -> asio::awaitable<void> {
    try {
      co_await body();
    } catch (const broker_error& e) {
      code = e.code();
      if (what) *what = e.what();
    }
  }));
  return code;
}

TEST(AmqpConnection, PublishIsConfirmedPersistentWithIds) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  const std::string reply_queue = unique_name("reply");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    EXPECT_TRUE(conn.is_open());
    EXPECT_EQ(conn.peer(), "amqp://guest@127.0.0.1:" + std::to_string(node.amqp_port()) + "/");
    co_await conn.declare_reply_queue(reply_queue);
    co_await conn.publish(reply_queue, R"({"ErrCode":0})", "job-1", "job-1");
  });
  amqp_test_client client(node.amqp_port());
  // Confirmed means enqueued: it is there at once.
  const auto reply = client.get(reply_queue);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->body, R"({"ErrCode":0})");
  EXPECT_EQ(reply->message_id, "job-1");
  EXPECT_EQ(reply->correlation_id, "job-1");
  EXPECT_EQ(reply->delivery_mode, 2);
}

TEST(AmqpConnection, PublishConfirmRoundTrip) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  const std::string queue = unique_name("roundtrip");
  constexpr int count = 200;
  std::vector<double> micros;
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
    for (int i = 0; i < count; ++i) {
      const auto began = std::chrono::steady_clock::now();
      co_await conn.publish(queue, "{}", "m" + std::to_string(i), "m" + std::to_string(i));
      micros.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began).count());
    }
  });
  std::sort(micros.begin(), micros.end());
  std::cout << "publish->confirm on a quorum queue, one node: p50 " << micros[count / 2] << " us, p99 "
            << micros[count * 99 / 100] << " us\n";
  amqp_test_client client(node.amqp_port());
  EXPECT_EQ(client.message_count(queue), static_cast<std::uint32_t>(count));
}

TEST(AmqpConnection, ConsumesWithManualAcks) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  const std::string queue = unique_name("jobs");
  amqp_test_client client(node.amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
    client.publish(queue, R"({"Command":"jls"})", "job-a", "replies-here");
    co_await conn.set_prefetch(4);
    EXPECT_FALSE((co_await conn.consume(queue)).empty());
    auto d = co_await conn.next(30s);
    EXPECT_TRUE(d);
    if (!d) co_return;
    EXPECT_EQ(d->body, R"({"Command":"jls"})");
    EXPECT_TRUE(d->has_message_id);
    EXPECT_EQ(d->message_id, "job-a");
    EXPECT_EQ(d->reply_to, "replies-here");
    EXPECT_FALSE(d->redelivered);
    EXPECT_FALSE(d->body_too_large);
    co_await conn.ack(d->delivery_tag);
  });
  conn.close();
  // Had the ack been lost, job-a would come back before the next message
  // (a quorum queue hands out returned messages first).
  client.publish(queue, "{}", "job-b");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.consume(queue);
    auto d = co_await conn.next(30s);
    EXPECT_TRUE(d);
    if (d) {
      EXPECT_EQ(d->message_id, "job-b");
    }
  });
}

TEST(AmqpConnection, UnackedMessageIsRedeliveredAfterTheConnectionDrops) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  const std::string queue = unique_name("redeliver");
  amqp_test_client client(node.amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
    client.publish(queue, "body-1", "job-1");
    co_await conn.consume(queue);
    auto d = co_await conn.next(30s);
    EXPECT_TRUE(d);
    if (d) {
      EXPECT_FALSE(d->redelivered);
    }
  });
  conn.close(); // no ack
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.consume(queue);
    auto d = co_await conn.next(30s);
    EXPECT_TRUE(d);
    if (!d) co_return;
    EXPECT_EQ(d->message_id, "job-1");
    EXPECT_EQ(d->body, "body-1");
    EXPECT_TRUE(d->redelivered);
    co_await conn.ack(d->delivery_tag);
  });
}

TEST(AmqpConnection, NackWithRequeueHandsTheMessageOutAgain) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  const std::string queue = unique_name("postpone");
  amqp_test_client client(node.amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
    client.publish(queue, "x", "job-n");
    co_await conn.consume(queue);
    auto d = co_await conn.next(30s);
    EXPECT_TRUE(d);
    if (!d) co_return;
    co_await conn.nack(d->delivery_tag, true);
    auto again = co_await conn.next(30s);
    EXPECT_TRUE(again);
    if (!again) co_return;
    EXPECT_EQ(again->message_id, "job-n");
    EXPECT_TRUE(again->redelivered);
    EXPECT_NE(again->delivery_tag, d->delivery_tag);
    co_await conn.ack(again->delivery_tag);
  });
}

TEST(AmqpConnection, MandatoryPublishToAMissingQueueIsReturnedAsAnError) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  run(io, [&]() -> asio::awaitable<void> { co_await conn.open(); });
  std::string what;
  const auto code = error_of(io, [&]() -> asio::awaitable<void> {
    co_await conn.publish(unique_name("nobody"), "{}", "job-x", "job-x");
  }, &what);
  EXPECT_EQ(code, make_error_code(amqp_errc::returned)) << what;
  EXPECT_NE(what.find("basic.publish"), std::string::npos) << what;
  EXPECT_NE(what.find("312 NO_ROUTE"), std::string::npos) << what;
  // A return is the message's failure, not the connection's.
  EXPECT_TRUE(conn.is_open());
  const std::string queue = unique_name("somebody");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.declare_reply_queue(queue);
    co_await conn.publish(queue, "{}", "job-y", "job-y");
  });
}

TEST(AmqpConnection, BodyOverTheLimitIsDroppedNotHeld) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_settings settings = settings_for(node);
  settings.max_body_bytes = 1024;
  amqp_connection conn(io.get_executor(), settings);
  const std::string queue = unique_name("big");
  amqp_test_client client(node.amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
    // Larger than a frame too: several body frames to skip.
    client.publish(queue, std::string(300000, 'x'), "big-1");
    client.publish(queue, std::string(1024, 'y'), "fits-1");
    co_await conn.consume(queue);
    auto big = co_await conn.next(30s);
    EXPECT_TRUE(big);
    if (!big) co_return;
    EXPECT_TRUE(big->body_too_large);
    EXPECT_TRUE(big->body.empty());
    EXPECT_EQ(big->body_size, 300000u);
    EXPECT_EQ(big->message_id, "big-1");
    auto fits = co_await conn.next(30s);
    EXPECT_TRUE(fits);
    if (!fits) co_return;
    EXPECT_FALSE(fits->body_too_large);
    EXPECT_EQ(fits->body, std::string(1024, 'y'));
    co_await conn.ack(big->delivery_tag);
    co_await conn.ack(fits->delivery_tag);
  });
}

TEST(AmqpConnection, DeclareWithOtherArgumentsNamesTheOperation) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  const std::string queue = unique_name("classic");
  amqp_test_client(node.amqp_port()).declare_classic_queue(queue);
  amqp_connection conn(io.get_executor(), settings_for(node));
  std::string what;
  const auto code = error_of(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
  }, &what);
  EXPECT_EQ(code, make_error_code(amqp_errc::closed_by_broker)) << what;
  EXPECT_NE(what.find("queue.declare " + queue), std::string::npos) << what;
  EXPECT_NE(what.find("406 PRECONDITION_FAILED"), std::string::npos) << what;
  EXPECT_FALSE(conn.is_open());
}

TEST(AmqpConnection, DeleteQueueRemovesItAndWhatItHolds) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  amqp_test_client client(node.amqp_port());
  const std::string queue = unique_name("reply");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_reply_queue(queue);
    co_await conn.publish(queue, "{}", "m1", "m1");
    co_await conn.delete_queue(queue);
  });
  EXPECT_FALSE(client.queue_exists(queue));
}

// A listener that never answers: open() waits for connection.start. A
// close() meanwhile ends the wait then (not_open), not at the deadline of
// the handshake (timed_out).
TEST(AmqpConnection, CloseEndsACallWaitingForTheBroker) {
  std::uint16_t port = 0;
  const int listener = testing::listen_on_loopback(&port, "silent broker");
  asio::io_context io;
  std::string problem;
  amqp_settings s;
  s.uris = {*parse_amqp_uri("amqp://guest:guest@127.0.0.1:" + std::to_string(port) + "/", problem)};
  s.operation_timeout = 20s;
  amqp_connection conn(io.get_executor(), s);
  asio::steady_timer closer(io);
  closer.expires_after(200ms);
  closer.async_wait([&](boost::system::error_code) { conn.close(); });
  std::string what;
  const std::error_code code = error_of(io, [&]() -> asio::awaitable<void> { co_await conn.open(); }, &what);
  ::close(listener);
  EXPECT_EQ(code, make_error_code(amqp_errc::not_open)) << what;
}

TEST(AmqpConnection, TriesTheNextUriWhenOneIsDown) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_settings settings = settings_for(node);
  std::string problem;
  // A port nobody listens on: refused at once.
  auto dead = parse_amqp_uri("amqp://guest:guest@127.0.0.1:" + std::to_string(testing::free_loopback_port()) + "/", problem);
  ASSERT_TRUE(dead);
  settings.uris.insert(settings.uris.begin(), *dead);
  amqp_connection conn(io.get_executor(), settings);
  run(io, [&]() -> asio::awaitable<void> { co_await conn.open(); });
  EXPECT_EQ(conn.peer(), settings.uris[1].redacted());
}

TEST(AmqpConnection, WrongPasswordIsALoginError) {
  asio::io_context io;
  amqp_settings settings = settings_for(shared_rabbitmq_node());
  settings.uris[0].password = "wrong";
  amqp_connection conn(io.get_executor(), settings);
  std::string what;
  const auto code = error_of(io, [&]() -> asio::awaitable<void> { co_await conn.open(); }, &what);
  EXPECT_TRUE(code == make_error_code(amqp_errc::login_refused)) << what;
  EXPECT_EQ(what.find("wrong"), std::string::npos) << what;
}

// RabbitMQ 3.10 applies basic.qos (per consumer: quorum queues refuse the
// global kind) to the consumers started after it, not to one running.
// Ready messages (queue.declare's message count) tell what the broker kept.
TEST(AmqpConnection, PrefetchBoundsTheDeliveriesOfTheNextConsume) {
  asio::io_context io;
  rabbitmq_node& node = shared_rabbitmq_node();
  amqp_connection conn(io.get_executor(), settings_for(node));
  const std::string queue = unique_name("prefetch");
  amqp_test_client client(node.amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
    for (int i = 0; i < 4; ++i) client.publish(queue, "{}", "p" + std::to_string(i));
    co_await conn.set_prefetch(1);
    co_await conn.consume(queue);
    EXPECT_TRUE(co_await conn.next(30s));
    EXPECT_EQ(client.message_count(queue), 3u);
  });
  conn.close();
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.set_prefetch(3);
    co_await conn.consume(queue);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(co_await conn.next(30s)) << i;
    EXPECT_EQ(client.message_count(queue), 1u);
  });
}

// --- a node of its own, to stop or kill ------------------------------------

class AmqpConnectionOwnNode : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { node_ = new rabbitmq_node(); }
  static void TearDownTestSuite() {
    delete node_;
    node_ = nullptr;
  }
  static rabbitmq_node* node_;
};
rabbitmq_node* AmqpConnectionOwnNode::node_ = nullptr;

TEST_F(AmqpConnectionOwnNode, HeartbeatsKeepAnIdleConnectionAndNoticeASilentNode) {
  asio::io_context io;
  amqp_settings settings = settings_for(*node_);
  settings.heartbeat = 1s;
  amqp_connection conn(io.get_executor(), settings);
  const std::string queue = unique_name("idle");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(queue);
    co_await conn.consume(queue);
    // Idle for several heartbeat intervals: the broker would close a
    // connection that sends none after two.
    EXPECT_FALSE(co_await conn.next(5s));
    EXPECT_TRUE(conn.is_open());
  });
  node_->suspend();
  std::string what;
  // A silent node: no heartbeats come, and the wait ends with an error
  // long before its own bound.
  const auto code = error_of(io, [&]() -> asio::awaitable<void> {
    auto d = co_await conn.next(100s);
    EXPECT_FALSE(d) << "a delivery from a stopped node";
    ADD_FAILURE() << "next() returned instead of failing";
  }, &what);
  node_->resume();
  EXPECT_EQ(code, make_error_code(amqp_errc::timed_out)) << what;
  EXPECT_NE(what.find("heartbeat"), std::string::npos) << what;
}

TEST_F(AmqpConnectionOwnNode, PublishToASilentNodeEndsAtThePublishTimeout) {
  asio::io_context io;
  amqp_settings settings = settings_for(*node_);
  settings.heartbeat = 0s; // only the publish timeout bounds the wait
  settings.publish_timeout = 2s;
  amqp_connection conn(io.get_executor(), settings);
  const std::string queue = unique_name("silent");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_reply_queue(queue);
  });
  node_->suspend();
  std::string what;
  const auto code = error_of(io, [&]() -> asio::awaitable<void> {
    co_await conn.publish(queue, "{}", "job-s", "job-s");
  }, &what);
  node_->resume();
  EXPECT_EQ(code, make_error_code(amqp_errc::timed_out)) << what;
  EXPECT_NE(what.find("basic.publish"), std::string::npos) << what;
  EXPECT_FALSE(conn.is_open());
}

TEST_F(AmqpConnectionOwnNode, NodeKilledMidPublishFailsThePublish) {
  asio::io_context io;
  amqp_settings settings = settings_for(*node_);
  settings.heartbeat = 0s;
  settings.publish_timeout = 100s; // the failure must come from the dead socket, not the clock
  amqp_connection conn(io.get_executor(), settings);
  const std::string queue = unique_name("killed");
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_reply_queue(queue);
  });
  // Stopped first so that it cannot confirm before it dies.
  node_->suspend();
  std::string what;
  const auto code = error_of(io, [&]() -> asio::awaitable<void> {
    asio::post(co_await asio::this_coro::executor, [] { node_->kill(); });
    co_await conn.publish(queue, "{}", "job-k", "job-k");
  }, &what);
  EXPECT_EQ(code, make_error_code(amqp_errc::connection_failed)) << what;
  EXPECT_FALSE(conn.is_open());
  // The last test of the suite: the node stays dead.
}

} // namespace
} // namespace bs_router
