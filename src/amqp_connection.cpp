#include "amqp_connection_state.hpp"

#include "bs_router/amqp_connection.hpp"

namespace bs_router {

using namespace amqp_detail;

namespace {

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

} // namespace

const std::error_category& amqp_category() noexcept {
  static const amqp_category_impl category;
  return category;
}

std::error_code make_error_code(amqp_errc e) noexcept { return {static_cast<int>(e), amqp_category()}; }


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
