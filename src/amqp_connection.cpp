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

namespace {

constexpr amqp_channel_t channel = 1;
constexpr int frame_max = 131072;
// Reply queues nobody uses for a day are deleted by the broker (x-expires).
constexpr std::int32_t reply_queue_expires_ms = 24 * 60 * 60 * 1000;
// Frames handled in a row before the thread looks at its requests again.
constexpr int frames_per_round = 256;
// The thread wakes at least this often to send and check heartbeats.
constexpr std::chrono::milliseconds longest_poll{1000};
// Bytes of broker text (a close reason) kept for a message.
constexpr std::size_t max_broker_text = 200;

// CA bundles of the systems the router runs on, for amqps without ca_file.
const char* const system_ca_files[] = {
    "/etc/ssl/certs/ca-certificates.crt",        // Debian
    "/usr/local/share/certs/ca-root-nss.crt",    // FreeBSD ca_root_nss
    "/etc/ssl/cert.pem",                         // FreeBSD base
};

class amqp_category_impl : public std::error_category {
 public:
  const char* name() const noexcept override { return "amqp"; }
  std::string message(int value) const override {
    switch (static_cast<amqp_errc>(value)) {
      case amqp_errc::timed_out: return "timed out";
      case amqp_errc::connection_failed: return "connection failed";
      case amqp_errc::login_refused: return "login refused";
      case amqp_errc::closed_by_broker: return "closed by the broker";
      case amqp_errc::nacked: return "not acknowledged by the broker (basic.nack)";
      case amqp_errc::returned: return "returned by the broker: no queue took it (basic.return)";
      case amqp_errc::not_open: return "connection not open";
      case amqp_errc::protocol_error: return "protocol error";
      case amqp_errc::cancelled: return "consumer cancelled by the broker";
    }
    return "unknown amqp error";
  }
};

timeval to_timeval(std::chrono::milliseconds d) {
  if (d.count() < 0) d = std::chrono::milliseconds{0};
  return timeval{static_cast<time_t>(d.count() / 1000), static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

amqp_bytes_t bytes_of(const std::string& s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

std::string string_of(amqp_bytes_t b) {
  return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

// A failure on the connection's thread. `fatal`: the connection is unusable
// from now on (the caller opens a new one).
struct thread_failure {
  amqp_errc code;
  std::string detail;
  bool fatal = true;
};

thread_failure library_failure(const std::string& what, int status) {
  if (status == AMQP_STATUS_HEARTBEAT_TIMEOUT)
    return thread_failure{amqp_errc::timed_out, what + ": no heartbeat from the broker", true};
  const amqp_errc code = status == AMQP_STATUS_TIMEOUT ? amqp_errc::timed_out : amqp_errc::connection_failed;
  return thread_failure{code, what + ": " + amqp_error_string2(status), true};
}

// The failure an RPC reply stands for (nothing when it is a success).
void check_reply(const amqp_rpc_reply_t& reply, const std::string& what) {
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

} // namespace

const std::error_category& amqp_category() noexcept {
  static const amqp_category_impl category;
  return category;
}

std::error_code make_error_code(amqp_errc e) noexcept { return {static_cast<int>(e), amqp_category()}; }

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

  void loop_until_stopped() {
    for (;;) {
      std::function<void()> work;
      int fd = -1;
      {
        std::lock_guard lock(mutex);
        if (stopping) break;
        if (!requests.empty()) {
          work = std::move(requests.front());
          requests.pop_front();
        }
        fd = sockfd;
      }
      if (work) {
        work();
        continue;
      }
      const bool buffered = connected && (amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn));
      if (!buffered) {
        pollfd fds[2] = {{wake[0], POLLIN, 0}, {connected ? fd : -1, POLLIN, 0}};
        ::poll(fds, 2, connected ? static_cast<int>(poll_interval().count()) : -1);
        char drain[64];
        while (::read(wake[0], drain, sizeof drain) > 0) {
        }
      }
      if (connected) {
        try {
          read_frames();
        } catch (const thread_failure& f) {
          teardown(f);
        }
      }
    }
    teardown(thread_failure{amqp_errc::not_open, "closed", true});
    std::lock_guard lock(mutex);
    ::close(wake[0]);
    ::close(wake[1]);
    wake[0] = wake[1] = -1;
  }

  std::chrono::milliseconds poll_interval() const {
    // rabbitmq-c sends a heartbeat from its read calls once one is due.
    if (settings.heartbeat.count() == 0) return longest_poll;
    return std::clamp(std::chrono::milliseconds(settings.heartbeat) / 4, std::chrono::milliseconds{100},
                      longest_poll);
  }

  // The connection is unusable: close the socket, fail what waits for a
  // confirm, and tell the loop.
  void teardown(const thread_failure& f) {
    if (conn == nullptr) return;
    {
      std::lock_guard lock(mutex);
      sockfd = -1;
    }
    amqp_destroy_connection(conn); // closes the socket
    conn = nullptr;
    connected = false;
    for (auto& u : unconfirmed_publishes) fail(u.waiter, f);
    unconfirmed_publishes.clear();
    to_loop([self = shared_from_this(), f] { self->mark_broken(f.code, f.detail); });
  }

  void require_connected(const char* what) const {
    if (!connected) throw thread_failure{amqp_errc::not_open, what, true};
  }

  // --- open ---

  std::string connect_all() {
    std::string failures;
    for (const amqp_uri& uri : settings.uris) {
      try {
        connect(uri);
        return uri.redacted();
      } catch (const thread_failure& f) {
        if (conn) {
          amqp_destroy_connection(conn);
          conn = nullptr;
        }
        {
          std::lock_guard lock(mutex);
          sockfd = -1;
          if (stopping) throw thread_failure{amqp_errc::not_open, "closed", true};
        }
        if (!failures.empty()) failures += "; ";
        failures += uri.redacted() + ": " + f.detail;
        if (settings.uris.size() == 1) throw thread_failure{f.code, failures, true};
      }
    }
    throw thread_failure{amqp_errc::connection_failed, failures, true};
  }

  void connect(const amqp_uri& uri) {
    conn = amqp_new_connection();
    if (conn == nullptr) throw thread_failure{amqp_errc::connection_failed, "out of memory", true};
    amqp_socket_t* socket = nullptr;
    if (uri.tls) {
      socket = amqp_ssl_socket_new(conn);
      if (socket == nullptr) throw thread_failure{amqp_errc::connection_failed, "cannot create a TLS socket", true};
      amqp_ssl_socket_set_verify_peer(socket, 1);
      amqp_ssl_socket_set_verify_hostname(socket, 1);
      std::string ca = settings.ca_file;
      if (ca.empty())
        for (const char* candidate : system_ca_files)
          if (::access(candidate, R_OK) == 0) {
            ca = candidate;
            break;
          }
      if (!ca.empty()) {
        const int status = amqp_ssl_socket_set_cacert(socket, ca.c_str());
        if (status != AMQP_STATUS_OK) throw library_failure("reading CA bundle " + ca, status);
      }
    } else {
      socket = amqp_tcp_socket_new(conn);
      if (socket == nullptr) throw thread_failure{amqp_errc::connection_failed, "cannot create a socket", true};
    }
    const timeval timeout = to_timeval(settings.operation_timeout);
    const int opened = amqp_socket_open_noblock(socket, uri.host.c_str(), uri.port, &timeout);
    if (opened != AMQP_STATUS_OK) throw library_failure(uri.tls ? "TLS connect" : "connect", opened);
    {
      std::lock_guard lock(mutex);
      sockfd = amqp_get_sockfd(conn);
      if (stopping) throw thread_failure{amqp_errc::not_open, "closed", true};
    }
    amqp_set_rpc_timeout(conn, &timeout);
    amqp_set_handshake_timeout(conn, &timeout);

    // Without this capability the broker would never say that it cancelled
    // our consumer (its queue deleted): the router would wait for ever.
    amqp_table_entry_t capabilities[1];
    capabilities[0].key = amqp_cstring_bytes("consumer_cancel_notify");
    capabilities[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[0].value.value.boolean = 1;
    amqp_table_entry_t properties[2];
    properties[0].key = amqp_cstring_bytes("product");
    properties[0].value.kind = AMQP_FIELD_KIND_UTF8;
    properties[0].value.value.bytes = amqp_cstring_bytes("bs_router");
    properties[1].key = amqp_cstring_bytes("capabilities");
    properties[1].value.kind = AMQP_FIELD_KIND_TABLE;
    properties[1].value.value.table = amqp_table_t{1, capabilities};
    const amqp_table_t client_properties{2, properties};
    const amqp_rpc_reply_t login = amqp_login_with_properties(
        conn, uri.vhost.c_str(), 0, frame_max, static_cast<int>(settings.heartbeat.count()), &client_properties,
        AMQP_SASL_METHOD_PLAIN, uri.user.c_str(), uri.password.c_str());
    check_reply(login, "login");

    amqp_channel_open(conn, channel);
    check_reply(amqp_get_rpc_reply(conn), "channel.open");
    amqp_confirm_select(conn, channel);
    check_reply(amqp_get_rpc_reply(conn), "confirm.select");
    connected = true;
    next_publish_seq = 1;
  }

  // --- frames ---

  // The next frame within `limit` (a delivery's header and body follow its
  // method; they are on their way).
  void wait_frame(amqp_frame_t& frame, std::chrono::steady_clock::time_point deadline, const char* what) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    timeval timeout = to_timeval(left);
    const int status = amqp_simple_wait_frame_noblock(conn, &frame, &timeout);
    if (status != AMQP_STATUS_OK) throw library_failure(what, status);
  }

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
  content read_content(std::size_t keep, const char* what) {
    const auto deadline = std::chrono::steady_clock::now() + settings.operation_timeout;
    content c;
    amqp_frame_t frame;
    wait_frame(frame, deadline, what);
    if (frame.frame_type != AMQP_FRAME_HEADER || frame.channel != channel)
      throw thread_failure{amqp_errc::protocol_error, std::string(what) + ": expected a content header", true};
    c.body_size = frame.payload.properties.body_size;
    const auto* p = static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded);
    if (p != nullptr) {
      if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
        c.has_message_id = true;
        c.message_id = string_of(p->message_id);
      }
      if (p->_flags & AMQP_BASIC_REPLY_TO_FLAG) c.reply_to = string_of(p->reply_to);
      if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) c.correlation_id = string_of(p->correlation_id);
    }
    c.too_large = c.body_size > keep;
    if (!c.too_large) c.body.reserve(static_cast<std::size_t>(c.body_size));
    std::uint64_t got = 0;
    while (got < c.body_size) {
      wait_frame(frame, deadline, what);
      if (frame.frame_type != AMQP_FRAME_BODY || frame.channel != channel)
        throw thread_failure{amqp_errc::protocol_error, std::string(what) + ": expected a body frame", true};
      const auto& fragment = frame.payload.body_fragment;
      got += fragment.len;
      if (got > c.body_size)
        throw thread_failure{amqp_errc::protocol_error, std::string(what) + ": body longer than announced", true};
      if (!c.too_large) c.body.append(static_cast<const char*>(fragment.bytes), fragment.len);
    }
    return c;
  }

  void read_frames() {
    for (int i = 0; i < frames_per_round && connected; ++i) {
      amqp_frame_t frame;
      timeval zero{0, 0};
      const int status = amqp_simple_wait_frame_noblock(conn, &frame, &zero);
      if (status == AMQP_STATUS_TIMEOUT) break;
      if (status != AMQP_STATUS_OK) throw library_failure("reading", status);
      dispatch(frame);
    }
    if (connected) amqp_maybe_release_buffers(conn);
  }

  void dispatch(const amqp_frame_t& frame) {
    if (frame.frame_type != AMQP_FRAME_METHOD)
      throw thread_failure{amqp_errc::protocol_error, "content outside a message", true};
    const amqp_method_t& method = frame.payload.method;
    switch (method.id) {
      case AMQP_BASIC_DELIVER_METHOD: {
        const auto* m = static_cast<const amqp_basic_deliver_t*>(method.decoded);
        amqp_delivery d;
        d.delivery_tag = m->delivery_tag;
        d.redelivered = m->redelivered != 0;
        content c = read_content(settings.max_body_bytes, "basic.deliver");
        d.body = std::move(c.body);
        d.body_size = c.body_size;
        d.body_too_large = c.too_large;
        d.has_message_id = c.has_message_id;
        d.message_id = std::move(c.message_id);
        d.reply_to = std::move(c.reply_to);
        d.correlation_id = std::move(c.correlation_id);
        to_loop([self = shared_from_this(), d = std::move(d)]() mutable {
          if (self->broken) return;
          self->deliveries.push_back(std::move(d));
          if (self->arrival_waker) self->arrival_waker->cancel();
        });
        return;
      }
      case AMQP_BASIC_RETURN_METHOD: {
        const auto* m = static_cast<const amqp_basic_return_t*>(method.decoded);
        const std::string text = std::to_string(m->reply_code) + " " + loggable(string_of(m->reply_text), max_broker_text);
        const content c = read_content(0, "basic.return");
        // The broker returns a message before it confirms it.
        for (auto& u : unconfirmed_publishes)
          if (!u.returned && u.message_id == c.message_id) {
            u.returned = true;
            u.return_text = text;
            break;
          }
        return;
      }
      case AMQP_BASIC_ACK_METHOD: {
        const auto* m = static_cast<const amqp_basic_ack_t*>(method.decoded);
        settle_confirms(m->delivery_tag, m->multiple != 0, true);
        return;
      }
      case AMQP_BASIC_NACK_METHOD: {
        const auto* m = static_cast<const amqp_basic_nack_t*>(method.decoded);
        settle_confirms(m->delivery_tag, m->multiple != 0, false);
        return;
      }
      case AMQP_BASIC_CANCEL_METHOD:
        throw thread_failure{amqp_errc::cancelled, "basic.cancel: the broker ended the consumer", true};
      case AMQP_CHANNEL_CLOSE_METHOD: {
        const auto* m = static_cast<const amqp_channel_close_t*>(method.decoded);
        throw thread_failure{amqp_errc::closed_by_broker,
                             "channel closed: " + std::to_string(m->reply_code) + " " +
                                 loggable(string_of(m->reply_text), max_broker_text),
                             true};
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        const auto* m = static_cast<const amqp_connection_close_t*>(method.decoded);
        throw thread_failure{amqp_errc::closed_by_broker,
                             "connection closed: " + std::to_string(m->reply_code) + " " +
                                 loggable(string_of(m->reply_text), max_broker_text),
                             true};
      }
      default:
        return; // connection.blocked and the like: nothing to do
    }
  }

  void settle_confirms(std::uint64_t tag, bool multiple, bool acked) {
    while (!unconfirmed_publishes.empty()) {
      auto& u = unconfirmed_publishes.front();
      if (u.seq > tag) break;
      if (multiple || u.seq == tag) {
        if (!acked) {
          // A channel that got a nack was seen to nack everything after (a
          // quorum queue whose leader died): the connection is given up.
          fail(u.waiter, thread_failure{amqp_errc::nacked, "message " + u.message_id, true});
        } else if (u.returned) {
          fail(u.waiter, thread_failure{amqp_errc::returned, u.return_text, false});
        } else {
          complete(u.waiter, none{});
        }
        unconfirmed_publishes.pop_front();
        if (!multiple) return;
      } else {
        unconfirmed_publishes.pop_front(); // older than an ack for one: cannot be
      }
    }
  }
};

namespace {

using state_ptr = std::shared_ptr<amqp_connection::state>;

// Runs `work(state, pending)` on the connection's thread and waits at most
// `limit` for it to complete the pending; a work that throws thread_failure
// fails it. When the limit passes, the socket is shut down (that ends what
// the thread was blocked in) and the connection is broken.
template <class T>
using work_fn = std::function<void(amqp_connection::state&, const std::shared_ptr<pending<T>>&)>;

// (Callers pass `op` and `work` as named values: g++ 12 destroys some
// temporaries of a co_await expression twice.)
template <class T>
boost::asio::awaitable<T> call(state_ptr s, std::string op, std::chrono::milliseconds limit, work_fn<T> work) {
  if (!s || s->broken) {
    const std::string why = s && !s->broken_reason.empty() ? s->broken_reason : std::string();
    throw broker_error(op, make_error_code(amqp_errc::not_open), why);
  }
  auto p = std::make_shared<pending<T>>();
  s->submit([s, p, work]() mutable {
    try {
      work(*s, p);
    } catch (const thread_failure& f) {
      s->fail(p, f);
      if (f.fatal) s->teardown(f);
    }
  });
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  timer.expires_after(limit);
  p->waker = &timer;
  s->call_wakers.insert(&timer);
  if (!p->done && !s->broken) {
    boost::system::error_code ignored;
    co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ignored));
  }
  s->call_wakers.erase(&timer);
  p->waker = nullptr;
  // Broken or closed meanwhile (by another call's failure, or close()).
  if (!p->done && s->broken) throw broker_error(op, s->broken_code, s->broken_reason);
  if (!p->done) {
    s->abort_socket();
    const std::string detail = "no answer within " + std::to_string(limit.count()) + " ms";
    s->mark_broken(make_error_code(amqp_errc::timed_out), op + ": " + detail);
    throw broker_error(op, make_error_code(amqp_errc::timed_out), detail);
  }
  if (p->error) throw broker_error(op, p->error, p->detail);
  co_return std::move(p->value);
}

// A work that completes with what `f(state)` returns.
template <class T, class F>
work_fn<T> returning(F f) {
  return [f](amqp_connection::state& s, const std::shared_ptr<pending<T>>& p) { s.complete(p, f(s)); };
}

amqp_table_entry_t entry(const char* key) {
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes(key);
  return e;
}

} // namespace

// --- the loop's side ---------------------------------------------------------

amqp_connection::amqp_connection(boost::asio::any_io_executor loop, amqp_settings settings)
    : loop_(std::move(loop)), settings_(std::move(settings)) {}

amqp_connection::~amqp_connection() { close(); }

boost::asio::awaitable<void> amqp_connection::open() {
  close();
  if (settings_.uris.empty())
    throw broker_error("connection.open", make_error_code(amqp_errc::connection_failed), "no URI");
  auto s = std::make_shared<state>(loop_, settings_);
  if (::pipe(s->wake) != 0)
    throw broker_error("connection.open", std::error_code(errno, std::generic_category()), "pipe");
  for (int fd : s->wake) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
  }
  // Detached: it holds the state, and close() never waits for it (see the
  // header); once stopping it posts nothing to the loop.
  std::thread(&state::run, s).detach();
  state_ = s;
  // Each node: connect, TLS, login, channel.open, confirm.select.
  const auto limit = settings_.operation_timeout * (5 * static_cast<long>(settings_.uris.size())) +
                     std::chrono::seconds{1};
  work_fn<std::string> work = returning<std::string>([](state& t) { return t.connect_all(); });
  std::string op = "connection.open";
  s->peer = co_await call<std::string>(s, std::move(op), limit, std::move(work));
  s->open = true;
  ++generation_;
}

void amqp_connection::close() noexcept {
  if (!state_) return;
  state_->stop();
  state_->open = false;
  state_->mark_broken(make_error_code(amqp_errc::not_open), "closed");
  state_.reset();
}

bool amqp_connection::is_open() const noexcept { return state_ && state_->open && !state_->broken; }

std::string amqp_connection::peer() const { return is_open() ? state_->peer : std::string(); }

namespace {

void declare(amqp_connection::state& t, const std::string& queue, amqp_table_t args) {
  t.require_connected("queue.declare");
  amqp_queue_declare(t.conn, channel, bytes_of(queue), 0, 1, 0, 0, args);
  check_reply(amqp_get_rpc_reply(t.conn), "queue.declare");
}

} // namespace

boost::asio::awaitable<void> amqp_connection::declare_job_queue(const std::string& queue) {
  std::string op = "queue.declare " + loggable(queue, max_queue_name);
  work_fn<none> work = returning<none>([queue](state& t) {
    amqp_table_entry_t args[2] = {entry("x-queue-type"), entry("x-single-active-consumer")};
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes("quorum");
    args[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    args[1].value.value.boolean = 1;
    declare(t, queue, amqp_table_t{2, args});
    return none{};
  });
  co_await call<none>(state_, std::move(op), settings_.operation_timeout, std::move(work));
}

boost::asio::awaitable<void> amqp_connection::declare_reply_queue(const std::string& queue) {
  std::string op = "queue.declare " + loggable(queue, max_queue_name);
  work_fn<none> work = returning<none>([queue](state& t) {
    amqp_table_entry_t args[2] = {entry("x-queue-type"), entry("x-expires")};
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes("quorum");
    args[1].value.kind = AMQP_FIELD_KIND_I32;
    args[1].value.value.i32 = reply_queue_expires_ms;
    declare(t, queue, amqp_table_t{2, args});
    return none{};
  });
  co_await call<none>(state_, std::move(op), settings_.operation_timeout, std::move(work));
}

boost::asio::awaitable<void> amqp_connection::delete_queue(const std::string& queue) {
  std::string op = "queue.delete " + loggable(queue, max_queue_name);
  work_fn<none> work = returning<none>([queue](state& t) {
    t.require_connected("queue.delete");
    amqp_queue_delete(t.conn, channel, bytes_of(queue), 0, 0);
    check_reply(amqp_get_rpc_reply(t.conn), "queue.delete");
    return none{};
  });
  co_await call<none>(state_, std::move(op), settings_.operation_timeout, std::move(work));
}

boost::asio::awaitable<void> amqp_connection::set_prefetch(std::uint16_t count) {
  std::string op = "basic.qos";
  work_fn<none> work = returning<none>([count](state& t) {
    t.require_connected("basic.qos");
    amqp_basic_qos(t.conn, channel, 0, count, 0);
    check_reply(amqp_get_rpc_reply(t.conn), "basic.qos");
    return none{};
  });
  co_await call<none>(state_, std::move(op), settings_.operation_timeout, std::move(work));
}

boost::asio::awaitable<std::string> amqp_connection::consume(const std::string& queue) {
  std::string op = "basic.consume " + loggable(queue, max_queue_name);
  work_fn<std::string> work = returning<std::string>([queue](state& t) {
    t.require_connected("basic.consume");
    const auto* ok = amqp_basic_consume(t.conn, channel, bytes_of(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    check_reply(amqp_get_rpc_reply(t.conn), "basic.consume");
    return ok ? string_of(ok->consumer_tag) : std::string();
  });
  std::string tag = co_await call<std::string>(state_, std::move(op), settings_.operation_timeout, std::move(work));
  co_return tag;
}

boost::asio::awaitable<std::optional<amqp_delivery>> amqp_connection::next(std::chrono::milliseconds wait) {
  const state_ptr s = state_;
  if (!s || s->broken)
    throw broker_error("basic.deliver", s ? s->broken_code : make_error_code(amqp_errc::not_open),
                       s ? s->broken_reason : std::string());
  if (s->deliveries.empty() && wait.count() > 0) {
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    timer.expires_after(wait);
    s->arrival_waker = &timer;
    boost::system::error_code ignored;
    co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ignored));
    s->arrival_waker = nullptr;
  }
  if (s->broken) throw broker_error("basic.deliver", s->broken_code, s->broken_reason);
  if (s->deliveries.empty()) co_return std::nullopt;
  std::optional<amqp_delivery> d = std::move(s->deliveries.front());
  s->deliveries.pop_front();
  co_return d;
}

std::vector<amqp_delivery> amqp_connection::take_arrived(std::size_t n) {
  std::vector<amqp_delivery> result;
  if (!state_ || state_->broken) return result;
  while (result.size() < n && !state_->deliveries.empty()) {
    result.push_back(std::move(state_->deliveries.front()));
    state_->deliveries.pop_front();
  }
  return result;
}

std::size_t amqp_connection::arrived() const noexcept { return state_ ? state_->deliveries.size() : 0; }

boost::asio::awaitable<void> amqp_connection::ack(std::uint64_t delivery_tag) {
  std::string op = "basic.ack";
  work_fn<none> work = returning<none>([delivery_tag](state& t) {
    t.require_connected("basic.ack");
    const int status = amqp_basic_ack(t.conn, channel, delivery_tag, 0);
    if (status != AMQP_STATUS_OK) throw library_failure("basic.ack", status);
    return none{};
  });
  co_await call<none>(state_, std::move(op), settings_.operation_timeout, std::move(work));
}

boost::asio::awaitable<void> amqp_connection::nack(std::uint64_t delivery_tag, bool requeue) {
  std::string op = "basic.nack";
  work_fn<none> work = returning<none>([delivery_tag, requeue](state& t) {
    t.require_connected("basic.nack");
    const int status = amqp_basic_nack(t.conn, channel, delivery_tag, 0, requeue ? 1 : 0);
    if (status != AMQP_STATUS_OK) throw library_failure("basic.nack", status);
    return none{};
  });
  co_await call<none>(state_, std::move(op), settings_.operation_timeout, std::move(work));
}

boost::asio::awaitable<void> amqp_connection::publish(const std::string& queue, const std::string& body,
                                                      const std::string& message_id,
                                                      const std::string& correlation_id) {
  std::string op = "basic.publish to " + loggable(queue, max_queue_name);
  work_fn<none> work = [queue, body, message_id, correlation_id](state& t, const std::shared_ptr<pending<none>>& p) {
    t.require_connected("basic.publish");
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                   AMQP_BASIC_CORRELATION_ID_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.message_id = bytes_of(message_id);
    props.correlation_id = bytes_of(correlation_id);
    const int status =
        amqp_basic_publish(t.conn, channel, amqp_empty_bytes, bytes_of(queue), 1, 0, &props, bytes_of(body));
    if (status != AMQP_STATUS_OK) throw library_failure("basic.publish", status);
    // Completed by the broker's basic.ack (or failed by its nack).
    t.unconfirmed_publishes.push_back({t.next_publish_seq++, message_id, false, {}, p});
  };
  co_await call<none>(state_, std::move(op), settings_.publish_timeout, std::move(work));
}

} // namespace bs_router
