// The job source and reply sink over RabbitMQ (rabbitmq_broker.hpp), at the
// level of broker.hpp, against the run's shared node.

#include "bs_router/rabbitmq_broker.hpp"

#include "support/amqp_test_client.hpp"
#include "support/run_coroutine.hpp"
#include "support/rabbitmq_node.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <functional>

#include <nlohmann/json.hpp>

namespace bs_router {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::amqp_test_client;
using testing::shared_rabbitmq_node;
using testing::unique_name;

void run(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  ASSERT_TRUE(bs_router::testing::run_coroutine(io, std::move(body), 120s)) << "coroutine did not finish";
}

// A pool config on the shared node, with queue names of its own.
config pool_config(std::size_t max_body_bytes = 65536) {
  const nlohmann::json doc = {
      {"cbsdenv", "/pool1"},
      {"broker", "rabbitmq"},
      {"logfile", "/dev/null"},
      {"max_body_bytes", max_body_bytes},
      {"rabbitmq",
       {{"uri", shared_rabbitmq_node().uri()},
        {"queue", unique_name("cbsd_pool")},
        {"reply_queue_prefix", unique_name("cbsd_pool_result_id") + "."},
        {"logdir", "/tmp"}}}};
  return parse_config(doc.dump(), "pool.json");
}

// A journal entry for job `id` (journal_entry names it broker_id and keeps
// reply_to beside it; an older one has only a numeric job_id).
journal_entry entry_for(const std::string& id, const std::string& body, const std::string& reply_to = {}) {
  journal_entry e;
  e.broker_id = id;
  e.numeric_id = false;
  e.reply_to = reply_to;
  e.body = body;
  return e;
}

// Puts `text` as a reply (the body maker named: g++ 12 may destroy a
// temporary of a co_await expression twice).
asio::awaitable<void> put_text(reply_sink& sink, const journal_entry& entry, std::string text) {
  const reply_sink::body_maker body = [text](std::size_t) { return text; };
  const reply_sink::before_put ready;
  co_await sink.put(entry, body, ready);
}

TEST(RabbitmqJobSource, TakesAJobByItsMessageIdAndHoldsItByAck) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_job_source source(io.get_executor(), cfg);
  EXPECT_FALSE(source.can_give_back());
  EXPECT_NE(source.describe().find("queue " + cfg.rabbitmq.queue), std::string::npos) << source.describe();
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await source.open(); // declares the queue
    client.publish(cfg.rabbitmq.queue, R"({"Command":"jls"})", "42", "their-replies");
    auto job = co_await source.next(30s);
    EXPECT_TRUE(job);
    if (!job) co_return;
    EXPECT_EQ(job->id, "42");
    EXPECT_FALSE(job->numeric_id);
    EXPECT_EQ(job->body, R"({"Command":"jls"})");
    EXPECT_EQ(job->reply_to, "their-replies");
    EXPECT_TRUE(job->problem.empty()) << job->problem;
    EXPECT_GT(job->taken_at, 0);
    const std::vector<const broker_job*> jobs{&*job};
    const std::vector<bool> held = co_await source.hold(jobs);
    EXPECT_EQ(held, std::vector<bool>{true});
    const journal_entry entry = entry_for("42", job->body);
    EXPECT_EQ(co_await source.settle(entry), broker_standing::held);
    EXPECT_TRUE(co_await source.same_job(entry, *job));
    broker_job other = *job;
    other.body = "{}";
    EXPECT_FALSE(co_await source.same_job(entry, other));
    other = *job;
    other.id = "43";
    EXPECT_FALSE(co_await source.same_job(entry, other));
  });
  source.close();
  // Held means acknowledged: the next consumer gets the next message.
  client.publish(cfg.rabbitmq.queue, "{}", "44");
  run(io, [&]() -> asio::awaitable<void> {
    co_await source.open();
    auto job = co_await source.next(30s);
    EXPECT_TRUE(job);
    if (job) {
      EXPECT_EQ(job->id, "44");
      co_await source.discard(*job);
    }
  });
}

TEST(RabbitmqJobSource, AHoldOnALostConnectionIsNotKnownAndTheJobComesAgain) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_job_source source(io.get_executor(), cfg);
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  std::optional<broker_job> job;
  run(io, [&]() -> asio::awaitable<void> {
    co_await source.open();
    client.publish(cfg.rabbitmq.queue, "{}", "77");
    job = co_await source.next(30s);
  });
  ASSERT_TRUE(job);
  source.close(); // the connection is gone before the hold
  run(io, [&]() -> asio::awaitable<void> {
    const std::vector<const broker_job*> jobs{&*job};
    const std::vector<bool> held = co_await source.hold(jobs);
    EXPECT_EQ(held, std::vector<bool>{false});
    EXPECT_EQ(co_await source.settle(entry_for("77", "{}")), broker_standing::held);
    co_await source.open();
    auto again = co_await source.next(30s);
    EXPECT_TRUE(again);
    if (!again) co_return;
    EXPECT_EQ(again->id, "77");
    EXPECT_TRUE(co_await source.same_job(entry_for("77", "{}"), *again));
    co_await source.hold_again(*again);
  });
}

TEST(RabbitmqJobSource, MessagesWithoutAUsableIdAreNotJobs) {
  asio::io_context io;
  const config cfg = pool_config(1024);
  rabbitmq_job_source source(io.get_executor(), cfg);
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await source.open();
    client.publish(cfg.rabbitmq.queue, "{}", "", "r1");
    client.publish(cfg.rabbitmq.queue, "{}", "has space", "r2");
    client.publish(cfg.rabbitmq.queue, "{}", std::string(129, 'x'), "r3");
    client.publish(cfg.rabbitmq.queue, std::string(2000, ' '), "big", "r4");
    const std::vector<std::string> reply_tos{"r1", "r2", "r3"};
    for (const std::string& reply_to : reply_tos) {
      auto job = co_await source.next(30s);
      EXPECT_TRUE(job);
      if (!job) co_return;
      EXPECT_FALSE(job->problem.empty()) << reply_to;
      // A name of its own that no message id can be: never a reply queue's.
      EXPECT_TRUE(job->id.starts_with('?')) << job->id;
      EXPECT_FALSE(valid_message_id(job->id)) << job->id;
      EXPECT_EQ(job->reply_to, reply_to); // where the error reply can go
      co_await source.discard(*job);
    }
    auto big = co_await source.next(30s);
    EXPECT_TRUE(big);
    if (!big) co_return;
    EXPECT_EQ(big->id, "big");
    EXPECT_NE(big->problem.find("larger than max_body_bytes (1024)"), std::string::npos) << big->problem;
    EXPECT_TRUE(big->body.empty());
    co_await source.discard(*big);
  });
}

TEST(RabbitmqJobSource, PostponeHandsTheJobOutAgain) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_job_source source(io.get_executor(), cfg);
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await source.open();
    client.publish(cfg.rabbitmq.queue, "{}", "7");
    auto job = co_await source.next(30s);
    EXPECT_TRUE(job);
    if (!job) co_return;
    co_await source.postpone(*job);
    auto again = co_await source.next(30s);
    EXPECT_TRUE(again);
    if (!again) co_return;
    EXPECT_EQ(again->id, "7");
    EXPECT_NE(again->handle, job->handle);
    co_await source.hold_again(*again);
  });
}

// Polls `cond` on the loop (a short timer between looks) for at most 30 s.
asio::awaitable<bool> eventually(std::function<bool()> cond) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int i = 0; i < 3000; ++i) {
    if (cond()) co_return true;
    timer.expires_after(10ms);
    co_await timer.async_wait(asio::use_awaitable);
  }
  co_return cond();
}

TEST(RabbitmqJobSource, AskMoreCollectsOnlyWhatArrivedAndWasAskedFor) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_job_source source(io.get_executor(), cfg);
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await source.open();
    for (int i = 1; i <= 3; ++i) client.publish(cfg.rabbitmq.queue, "{}", std::to_string(i));
    EXPECT_TRUE(co_await source.next(30s));
    EXPECT_TRUE(co_await eventually([&] { return source.waiting() == 2; }));
    co_await source.ask_more(1);
    auto more = co_await source.collect_more();
    EXPECT_EQ(more.size(), 1u);
    if (more.size() == 1) {
      EXPECT_EQ(more[0].id, "2");
    }
    EXPECT_TRUE((co_await source.collect_more()).empty()); // nothing asked
    co_await source.ask_more(5);
    more = co_await source.collect_more();
    EXPECT_EQ(more.size(), 1u);
    if (more.size() == 1) {
      EXPECT_EQ(more[0].id, "3");
    }
  });
}

TEST(RabbitmqJobSource, PrefetchFollowsTheFreeSlotsAtTheNextOpen) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_job_source source(io.get_executor(), cfg);
  EXPECT_EQ(source.prefetch(), cfg.max_jobs);
  source.set_prefetch(0);
  EXPECT_EQ(source.prefetch(), 1); // 0 would be no limit at all in AMQP
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await source.open();
    for (int i = 1; i <= 3; ++i) client.publish(cfg.rabbitmq.queue, "{}", std::to_string(i));
    EXPECT_TRUE(co_await source.next(30s));
    // One handed over: the broker keeps the other two.
    EXPECT_EQ(client.message_count(cfg.rabbitmq.queue), 2u);
  });
}

TEST(RabbitmqReplySink, RepliesGoToThePrefixQueueConfirmedAndPersistent) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_reply_sink sink(io.get_executor(), cfg);
  EXPECT_EQ(sink.budget(), cfg.max_reply_bytes);
  EXPECT_EQ(sink.life(), 0u);
  const journal_entry entry = entry_for("42", "{}");
  EXPECT_EQ(sink.reply_queue_for(entry), cfg.rabbitmq.reply_queue_prefix + "42");
  std::size_t asked_budget = 0;
  run(io, [&]() -> asio::awaitable<void> {
    co_await sink.open();
    EXPECT_TRUE(sink.is_open());
    EXPECT_TRUE(co_await sink.wanted(entry, 0));
    const reply_sink::body_maker progress = [&](std::size_t budget) {
      asked_budget = budget;
      return std::string(R"({"Progress":50})");
    };
    const reply_sink::before_put ready;
    co_await sink.put(entry, progress, ready);
    co_await put_text(sink, entry, R"({"Progress":100})");
    EXPECT_TRUE(co_await sink.finish(entry));
  });
  EXPECT_EQ(asked_budget, cfg.max_reply_bytes);
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  const std::string queue = cfg.rabbitmq.reply_queue_prefix + "42";
  for (const char* body : {R"({"Progress":50})", R"({"Progress":100})"}) {
    const auto reply = client.get(queue); // confirmed: there already
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->body, body);
    EXPECT_EQ(reply->correlation_id, "42");
    EXPECT_EQ(reply->message_id, "42");
    EXPECT_EQ(reply->delivery_mode, 2);
  }
}

TEST(RabbitmqReplySink, ARepliesQueueIsDeclaredAgainAfterAReconnect) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_reply_sink sink(io.get_executor(), cfg);
  const journal_entry entry = entry_for("9", "{}");
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await sink.open();
    co_await put_text(sink, entry, "first");
  });
  // Deleted behind the router's back (as x-expires would after a day).
  client.delete_queue(cfg.rabbitmq.reply_queue_prefix + "9");
  sink.close();
  run(io, [&]() -> asio::awaitable<void> {
    co_await sink.open();
    co_await put_text(sink, entry, "second");
  });
  const auto reply = client.get(cfg.rabbitmq.reply_queue_prefix + "9");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->body, "second");
}

// A reply queue of the pool's own deleted while the connection that
// declared it lives (the client deletes its queue after the final reply; a
// reply sent again after a lost confirm then finds none): the reply comes
// back returned, the queue is declared again and the reply put there, rather
// than retried for ever behind every other reply.
TEST(RabbitmqReplySink, AReplyQueueDeletedOnTheSameConnectionIsDeclaredAgain) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_reply_sink sink(io.get_executor(), cfg);
  const journal_entry entry = entry_for("19", "{}");
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  run(io, [&]() -> asio::awaitable<void> {
    co_await sink.open();
    co_await put_text(sink, entry, "first");
  });
  client.delete_queue(cfg.rabbitmq.reply_queue_prefix + "19");
  run(io, [&]() -> asio::awaitable<void> { co_await put_text(sink, entry, "again"); });
  EXPECT_TRUE(sink.is_open());
  const auto reply = client.get(cfg.rabbitmq.reply_queue_prefix + "19");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->body, "again");
}

TEST(RabbitmqReplySink, ReplyToNamesTheQueueAndAMissingOneFallsBackToTheDefaultQueue) {
  asio::io_context io;
  const config cfg = pool_config();
  rabbitmq_reply_sink sink(io.get_executor(), cfg);
  amqp_test_client client(shared_rabbitmq_node().amqp_port());
  const std::string theirs = unique_name("controller_replies");
  client.declare_classic_queue(theirs);
  const journal_entry entry = entry_for("5", "{}", theirs);
  EXPECT_EQ(sink.reply_queue_for(entry), theirs);
  const journal_entry missing = entry_for("6", "{}", unique_name("gone"));
  run(io, [&]() -> asio::awaitable<void> {
    co_await sink.open();
    co_await put_text(sink, entry, "{}");
    co_await put_text(sink, missing, "lost");
  });
  const auto reply = client.get(theirs);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->correlation_id, "5");
  // The default queue was not made for a job that named its own...
  EXPECT_FALSE(client.queue_exists(cfg.rabbitmq.reply_queue_prefix + "5"));
  // ...but takes the reply that the queue it named returned.
  const auto fallback = client.get(cfg.rabbitmq.reply_queue_prefix + "6");
  ASSERT_TRUE(fallback);
  EXPECT_EQ(fallback->body, "lost");
  EXPECT_EQ(fallback->correlation_id, "6");
}

} // namespace
} // namespace bs_router
