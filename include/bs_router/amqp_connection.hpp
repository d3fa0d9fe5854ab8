#pragma once
// One AMQP 0-9-1 connection (rabbitmq-c) with one channel, for the router's
// single-threaded Asio loop.
//
// rabbitmq-c runs on a thread of its own, one per connection, which alone
// touches the library's state; the loop sends it requests and awaits each
// with a deadline. Why not on the loop itself: socket open, the TLS
// handshake and login are blocking calls in rabbitmq-c 0.11 (bounded, but
// seconds long against a dead node), and its frame writes wait without a
// deadline when the socket's send buffer is full (a broker that stopped
// reading). On its own thread a stuck call cannot stall the loop: when a
// deadline passes, the loop shuts the socket down (shutdown(2), under a
// lock that keeps the descriptor valid), which ends the call, and throws
// broker_error. Between requests the thread waits in poll(2) for the socket
// and a wake-up pipe, reads frames without blocking
// (amqp_simple_wait_frame_noblock with a zero timeout, amqp_data_in_buffer,
// amqp_frames_enqueued) and thereby sends and checks heartbeats.
//
//   closed --open()--> open --(any failure, channel or connection closed
//   by the broker, a nack, a confirm that does not come)--> broken
//   open|broken --close()--> closed          (the caller opens again)
//
// A call waiting for the broker when the connection breaks or is closed
// ends then, with broker_error, not at its deadline.
//
// Publishes are confirmed (confirm.select): publish() returns once the
// broker has acked the message, and fails on basic.nack, on basic.return
// (mandatory: no queue took it) and when no confirm came within the publish
// timeout. Deliveries of basic.consume are kept in arrival order; a body
// larger than max_body_bytes is read and dropped, never held, whatever size
// the broker announces.

#include <utility> // before Boost 1.74's awaitable.hpp, which uses std::exchange without it
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "bs_router/rabbitmq_config.hpp"

namespace bs_router {

enum class amqp_errc {
  timed_out = 1,      // no answer within the operation's deadline
  connection_failed,  // no node of the list could be reached, or the socket failed
  login_refused,      // the broker refused the credentials or the vhost
  closed_by_broker,   // channel.close or connection.close from the broker
  nacked,             // basic.nack: the broker did not take the message
  returned,           // basic.return: no queue took the (mandatory) message
  not_open,           // the connection is closed or broken
  protocol_error,     // frames the protocol does not allow here
  cancelled,          // basic.cancel from the broker (queue deleted, ...)
};
const std::error_category& amqp_category() noexcept;
std::error_code make_error_code(amqp_errc e) noexcept;

struct amqp_delivery {
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string body;               // empty when body_too_large
  std::uint64_t body_size = 0;    // as announced (and read)
  bool body_too_large = false;    // larger than max_body_bytes: dropped
  bool has_message_id = false;
  std::string message_id;
  std::string reply_to;
  std::string correlation_id;
};

struct amqp_settings {
  std::vector<amqp_uri> uris;      // tried in turn
  std::chrono::seconds heartbeat{10}; // 0: none
  // Each step of open() (TCP connect, TLS, login, each method) and each
  // declare, qos, consume, ack.
  std::chrono::milliseconds operation_timeout{10000};
  std::chrono::milliseconds publish_timeout{5000};
  std::size_t max_body_bytes = 65536;
  // amqps: the CA bundle to verify the broker with; empty: the system's.
  std::string ca_file;
};

class amqp_connection {
 public:
  amqp_connection(boost::asio::any_io_executor loop, amqp_settings settings);
  ~amqp_connection(); // close()
  amqp_connection(const amqp_connection&) = delete;
  amqp_connection& operator=(const amqp_connection&) = delete;

  // Connects to the first node of the list that answers, logs in, opens
  // channel 1 and selects confirms. Throws broker_error naming the step.
  boost::asio::awaitable<void> open();
  void close() noexcept;
  bool is_open() const noexcept;
  // "amqp://router@mq1:5672/cbsd" while open (the node in use), else "".
  std::string peer() const;
  // Counts the opens that succeeded: tells one connection from the next.
  std::uint64_t generation() const noexcept { return generation_; }

  // queue.declare, durable, x-queue-type quorum: the pool's queue
  // (x-single-active-consumer) or a reply queue (x-expires one day). Reply
  // queues are quorum queues too: a classic queue lives on one node, and
  // while that node is down every reply to it is returned (NO_ROUTE).
  boost::asio::awaitable<void> declare_job_queue(const std::string& queue);
  boost::asio::awaitable<void> declare_reply_queue(const std::string& queue);
  // queue.delete, whatever it holds and whoever consumes it (a consumer of
  // this connection then gets basic.cancel, which breaks the connection).
  boost::asio::awaitable<void> delete_queue(const std::string& queue);
  // basic.qos prefetch-count (per consumer, for the next basic.consume).
  boost::asio::awaitable<void> set_prefetch(std::uint16_t count);
  // basic.consume with manual acks; returns the consumer tag.
  boost::asio::awaitable<std::string> consume(const std::string& queue);

  // The next delivery, waiting at most `wait`; nullopt when none came.
  boost::asio::awaitable<std::optional<amqp_delivery>> next(std::chrono::milliseconds wait);
  // Deliveries that have arrived already, at most `n`, without waiting.
  std::vector<amqp_delivery> take_arrived(std::size_t n);
  std::size_t arrived() const noexcept;

  boost::asio::awaitable<void> ack(std::uint64_t delivery_tag);
  // basic.nack, one message; requeue puts it back for a later delivery.
  boost::asio::awaitable<void> nack(std::uint64_t delivery_tag, bool requeue);

  // basic.publish to the default exchange (routing key = queue), persistent,
  // mandatory; returns once the broker confirmed it.
  boost::asio::awaitable<void> publish(const std::string& queue, const std::string& body,
                                       const std::string& message_id, const std::string& correlation_id);

  struct state; // shared by the loop and the connection's thread

 private:
  boost::asio::any_io_executor loop_;
  amqp_settings settings_;
  std::shared_ptr<state> state_;
  std::uint64_t generation_ = 0;
};

} // namespace bs_router

namespace std {
template <> struct is_error_code_enum<bs_router::amqp_errc> : true_type {};
} // namespace std
