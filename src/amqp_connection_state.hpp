#pragma once
// The state an amqp_connection shares with its thread, and the thread's
// side of the work (amqp_connection_thread.cpp): private to the AMQP client.

#include "bs_router/amqp_connection.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/escape.hpp"
#include "bs_router/rabbitmq_c.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <variant>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace bs_router {

namespace amqp_detail {

inline constexpr amqp_channel_t channel = 1;
inline constexpr int frame_max = 131072;
// Reply queues nobody uses for a day are deleted by the broker (x-expires).
inline constexpr std::int32_t reply_queue_expires_ms = 24 * 60 * 60 * 1000;
// Frames handled in a row before the thread looks at its requests again.
inline constexpr int frames_per_round = 256;
// The thread wakes at least this often to send and check heartbeats.
inline constexpr std::chrono::milliseconds longest_poll{1000};
// Bytes of broker text (a close reason) kept for a message.
inline constexpr std::size_t max_broker_text = 200;

// CA bundles of the systems the router runs on, for amqps without ca_file.
inline const char* const system_ca_files[] = {
    "/etc/ssl/certs/ca-certificates.crt",        // Debian
    "/usr/local/share/certs/ca-root-nss.crt",    // FreeBSD ca_root_nss
    "/etc/ssl/cert.pem",                         // FreeBSD base
};


inline timeval to_timeval(std::chrono::milliseconds d) {
  if (d.count() < 0) d = std::chrono::milliseconds{0};
  return timeval{static_cast<time_t>(d.count() / 1000), static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

inline amqp_bytes_t bytes_of(const std::string& s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

inline std::string string_of(amqp_bytes_t b) {
  return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

// A failure on the connection's thread. `fatal`: the connection is unusable
// from now on (the caller opens a new one).
struct thread_failure {
  amqp_errc code;
  std::string detail;
  bool fatal = true;
};

inline thread_failure library_failure(const std::string& what, int status) {
  if (status == AMQP_STATUS_HEARTBEAT_TIMEOUT)
    return thread_failure{amqp_errc::timed_out, what + ": no heartbeat from the broker", true};
  const amqp_errc code = status == AMQP_STATUS_TIMEOUT ? amqp_errc::timed_out : amqp_errc::connection_failed;
  return thread_failure{code, what + ": " + amqp_error_string2(status), true};
}

// The failure an RPC reply stands for (nothing when it is a success).
inline void check_reply(const amqp_rpc_reply_t& reply, const std::string& what) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL: return;
    case AMQP_RESPONSE_NONE: throw thread_failure{amqp_errc::protocol_error, what + ": no reply", true};
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: throw library_failure(what, reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION: break;
  }
  if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* close = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
    throw thread_failure{amqp_errc::closed_by_broker,
                         what + ": channel closed: " + std::to_string(close->reply_code) + " " +
                             loggable(string_of(close->reply_text), max_broker_text),
                         true};
  }
  if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* close = static_cast<const amqp_connection_close_t*>(reply.reply.decoded);
    const amqp_errc code = close->reply_code == AMQP_ACCESS_REFUSED || close->reply_code == AMQP_NOT_ALLOWED
                               ? amqp_errc::login_refused
                               : amqp_errc::closed_by_broker;
    throw thread_failure{code,
                         what + ": connection closed: " + std::to_string(close->reply_code) + " " +
                             loggable(string_of(close->reply_text), max_broker_text),
                         true};
  }
  throw thread_failure{amqp_errc::protocol_error, what + ": unexpected reply", true};
}

// What a loop-side caller waits for: filled on the loop by a handler the
// connection's thread posts. No Asio object lives here, so whichever side
// drops it last may destroy it.
template <class T>
struct pending {
  bool done = false;
  T value{};
  std::error_code error;
  std::string detail;
  bool fatal = false;
  boost::asio::steady_timer* waker = nullptr; // loop side only: the waiting coroutine's timer
};

using none = std::monostate;


} // namespace amqp_detail

// This header is the AMQP client's own (src/, two files): its details are
// named as they were when they were one file.
using namespace amqp_detail;

// --- the state the loop and the connection's thread share -----------------

struct amqp_connection::state : std::enable_shared_from_this<amqp_connection::state> {
  state(boost::asio::any_io_executor ex, amqp_settings s) : loop(std::move(ex)), settings(std::move(s)) {}

  const boost::asio::any_io_executor loop;
  const amqp_settings settings;

  // --- under mutex ---
  std::mutex mutex;
  std::deque<std::function<void()>> requests;
  bool stopping = false; // set by close(): nothing is posted to the loop any more
  int sockfd = -1;       // while the thread holds the socket: the loop may shut it down
  int wake[2] = {-1, -1};

  // --- the thread's ---
  amqp_connection_state_t conn = nullptr;
  bool connected = false;
  std::uint64_t next_publish_seq = 1;
  struct unconfirmed {
    std::uint64_t seq;
    std::string message_id;
    bool returned = false;
    std::string return_text;
    std::shared_ptr<pending<none>> waiter;
  };
  std::deque<unconfirmed> unconfirmed_publishes;

  // --- the loop's ---
  bool open = false;
  bool broken = false;
  std::error_code broken_code;
  std::string broken_reason;
  std::string peer;
  std::deque<amqp_delivery> deliveries;
  boost::asio::steady_timer* arrival_waker = nullptr;
  // The timers of the calls waiting for the thread: a connection that
  // breaks or is closed ends them at once rather than at their deadlines
  // (a client's --timeout closes the connection to end what it waits for).
  std::set<boost::asio::steady_timer*> call_wakers;

  // Loop side: hands work to the thread.
  void submit(std::function<void()> work) {
    std::lock_guard lock(mutex);
    if (stopping) return;
    requests.push_back(std::move(work));
    const char byte = 1;
    [[maybe_unused]] ssize_t ignored = ::write(wake[1], &byte, 1);
  }

  // Loop side: ends whatever the thread is blocked in.
  void abort_socket() {
    std::lock_guard lock(mutex);
    if (sockfd >= 0) ::shutdown(sockfd, SHUT_RDWR);
  }

  void stop() {
    std::lock_guard lock(mutex);
    if (stopping) return;
    stopping = true;
    if (sockfd >= 0) ::shutdown(sockfd, SHUT_RDWR);
    const char byte = 1;
    [[maybe_unused]] ssize_t ignored = ::write(wake[1], &byte, 1);
  }

  // Thread side: runs `f` on the loop, unless the connection was closed.
  template <class F>
  void to_loop(F f) {
    std::lock_guard lock(mutex);
    if (stopping) return;
    boost::asio::post(loop, std::move(f));
  }

  template <class T>
  void complete(const std::shared_ptr<pending<T>>& p, T value) {
    to_loop([p, value = std::move(value)]() mutable {
      p->done = true;
      p->value = std::move(value);
      if (p->waker) p->waker->cancel();
    });
  }

  template <class T>
  void fail(const std::shared_ptr<pending<T>>& p, const thread_failure& f) {
    to_loop([self = shared_from_this(), p, f] {
      p->done = true;
      p->error = f.code;
      p->detail = f.detail;
      p->fatal = f.fatal;
      if (f.fatal) self->mark_broken(f.code, f.detail);
      if (p->waker) p->waker->cancel();
    });
  }

  // Loop side.
  void mark_broken(std::error_code code, const std::string& reason) {
    if (!broken) {
      broken = true;
      broken_code = code;
      broken_reason = reason;
    }
    // Their delivery tags died with the channel: the broker hands them out again.
    deliveries.clear();
    if (arrival_waker) arrival_waker->cancel();
    for (boost::asio::steady_timer* t : call_wakers) t->cancel();
  }

  // --- the thread ---

  static void run(std::shared_ptr<state> self) { self->loop_until_stopped(); }

  void loop_until_stopped();

  std::chrono::milliseconds poll_interval() const;

  // The connection is unusable: close the socket, fail what waits for a
  // confirm, and tell the loop.
  void teardown(const thread_failure& f);

  void require_connected(const char* what) const;

  // --- open ---

  std::string connect_all();

  void connect(const amqp_uri& uri);

  // --- frames ---

  // The next frame within `limit` (a delivery's header and body follow its
  // method; they are on their way).
  void wait_frame(amqp_frame_t& frame, std::chrono::steady_clock::time_point deadline, const char* what);

  struct content {
    amqp_basic_properties_t properties{};
    bool has_message_id = false;
    std::string message_id, reply_to, correlation_id;
    std::string body;
    std::uint64_t body_size = 0;
    bool too_large = false;
  };

  // A content header and its body frames, the body kept only up to `keep`
  // bytes: what the broker announces never sizes a buffer.
  content read_content(std::size_t keep, const char* what);

  void read_frames();

  void dispatch(const amqp_frame_t& frame);

  void settle_confirms(std::uint64_t tag, bool multiple, bool acked);
};

} // namespace bs_router
