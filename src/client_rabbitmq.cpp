// bs_router-client over RabbitMQ: makes the job's message id, declares the
// pool's queue and the reply queue <reply_queue_prefix><message id> as the
// router does (the same arguments: a declare that differs is refused with
// 406), consumes the reply queue, publishes the job (persistent, confirmed)
// and prints the replies until the final one; then deletes the reply queue.

#include "bs_router/client_session.hpp"

#include <utility>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <string>

#include <unistd.h>

#include "bs_router/amqp_connection.hpp"
#include "bs_router/async_event.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/escape.hpp"
#include "bs_router/rabbitmq_broker.hpp"
#include "bs_router/unix_time.hpp"

namespace bs_router {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// The longest one wait for a reply lasts before the client looks at its clock.
constexpr std::chrono::milliseconds reply_poll{1000};

} // namespace

std::string make_message_id() {
  // Time and pid tell runs apart on one host, the random part hosts apart.
  std::random_device random;
  const std::uint64_t r = (static_cast<std::uint64_t>(random()) << 32) ^ random();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r));
  const std::int64_t now = unix_now();
  return "bs_router-client." + std::to_string(now) + "." + std::to_string(::getpid()) + "." + hex;
}

asio::awaitable<void> run_rabbitmq_client(client_session& s) {
  const rabbitmq_config& r = s.cfg.rabbitmq;
  const auto ex = co_await asio::this_coro::executor;
  amqp_settings settings = amqp_settings_for(s.cfg);
  // Replies, not jobs: as large as the router makes them.
  settings.max_body_bytes = s.cfg.max_reply_bytes;
  amqp_connection conn(ex, settings);
  asio::steady_timer pause(ex);
  s.on_timeout = [&] {
    conn.close(); // ends the call or the wait in progress
    pause.cancel();
  };
  struct forget {
    client_session& s;
    ~forget() { s.on_timeout = nullptr; }
  } forget_on_exit{s};

  const std::string id = make_message_id();
  const std::string reply_queue = r.reply_queue_prefix + id;
  const std::string where = r.uris.front().redacted();
  enum class stage { before_put, put_sent, waiting } at = stage::before_put;
  auto report_timeout = [&] {
    std::ostringstream limit;
    limit << *s.options.timeout;
    switch (at) {
      case stage::before_put:
        s.timed_out_with("the broker at " + where + " did not answer within " + limit.str() +
                         " s; the job was not put");
        break;
      case stage::put_sent:
        s.timed_out_with("the broker at " + where + " did not confirm the job within " + limit.str() +
                         " s; it may have been put, and then runs anyway");
        break;
      case stage::waiting:
        // The reply queue stays: the broker deletes it after a day unused.
        s.timed_out_with("no final reply to job " + id + " on " + reply_queue + " within " + limit.str() + " s");
        break;
    }
  };
  // Replies are consumed before the job goes out, so none can be missed.
  auto listen = [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_reply_queue(reply_queue);
    co_await conn.consume(reply_queue);
  };

  try {
    co_await listen();
    // Declared as the router declares it, so that a job sent before the
    // router ever ran waits for it instead of being returned.
    co_await conn.declare_job_queue(r.queue);
    at = stage::put_sent;
    co_await conn.publish(r.queue, s.options.body, id, id);
  } catch (const broker_error& e) {
    if (s.out_of_time()) {
      report_timeout();
      co_return;
    }
    s.err << "bs_router-client: cannot put the job on " << where << " queue " << r.queue << ": "
          << loggable(e.what()) << "\n";
    s.status = client_exit::unavailable;
    co_return;
  }
  at = stage::waiting;
  for (;;) {
    if (s.out_of_time()) {
      report_timeout();
      co_return;
    }
    bool failed = false;
    try {
      if (!conn.is_open()) co_await listen();
      std::optional<amqp_delivery> reply = co_await conn.next(reply_poll);
      if (!reply) continue;
      // Acknowledged once read: a reply printed is not handed out again.
      co_await conn.ack(reply->delivery_tag);
      if (reply->body_too_large) {
        s.err << "bs_router-client: ignoring a reply of " << reply->body_size << " bytes on " << reply_queue
              << ", larger than max_reply_bytes (" << s.cfg.max_reply_bytes
              << "); still waiting for the final reply\n";
        continue;
      }
      if (s.handle_reply(reply->body, id, reply_queue)) break;
    } catch (const broker_error& e) {
      if (s.out_of_time()) continue; // reported at the top
      // The job is in the broker; its reply will be too. Keep waiting.
      conn.close();
      s.err << "bs_router-client: " << where << ": " << loggable(e.what()) << "; retrying\n";
      failed = true;
    }
    if (failed) co_await sleep_on(pause, client_retry_pause);
  }
  try {
    co_await conn.delete_queue(reply_queue);
  } catch (const broker_error& e) {
    // Not the job's failure: the broker deletes the queue after a day unused.
    if (!s.out_of_time())
      s.err << "bs_router-client: cannot delete the reply queue " << reply_queue << ": " << loggable(e.what())
            << "\n";
  }
}

} // namespace bs_router
