#include "bs_router/beanstalk_connection.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>

namespace bs_router::beanstalk {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using boost::system::error_code;

namespace {

// beanstalkd would answer BAD_FORMAT to a name it does not allow: fail before
// anything is sent, so the connection stays open and in step.
void check_tube_name(std::string_view tube, const char* command) {
  if (!valid_tube_name(tube)) throw boost::system::system_error(make_error_code(errc::bad_tube_name), command);
}

} // namespace

connection::connection(asio::any_io_executor executor, std::size_t max_body)
    : socket_(executor), deadline_timer_(executor), max_body_(max_body) {}

connection::~connection() { close(); }

void connection::close() noexcept {
  error_code ignored;
  if (socket_.is_open()) {
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }
  deadline_timer_.cancel();
  ++generation_;
  input_.clear();
  unanswered_ = 0;
}

bool connection::is_open() const noexcept { return socket_.is_open(); }

void connection::fail(error_code ec) {
  // A deadline closes the socket, which surfaces as operation_aborted or
  // bad_descriptor: report what really happened.
  if (deadline_passed_) ec = make_error_code(errc::timed_out);
  close();
  throw boost::system::system_error(ec);
}

awaitable<void> connection::connect(std::string host, std::uint16_t port, duration deadline) {
  close();
  deadline_passed_ = false;
  const std::uint64_t generation = ++generation_;
  asio::ip::tcp::resolver resolver(socket_.get_executor());
  deadline_timer_.expires_after(deadline);
  deadline_timer_.async_wait([this, generation, &resolver](error_code ec) {
    if (ec || generation != generation_) return;
    deadline_passed_ = true;
    resolver.cancel();
    error_code ignored;
    socket_.close(ignored);
  });
  error_code ec;
  // A numeric address needs no look-up, and so no resolver thread (which
  // every later process start would pay for: see docs/PERFORMANCE.md).
  error_code not_numeric;
  const asio::ip::address address = asio::ip::make_address(host, not_numeric);
  if (!not_numeric) {
    co_await socket_.async_connect(asio::ip::tcp::endpoint(address, port), asio::redirect_error(use_awaitable, ec));
  } else {
    auto endpoints = co_await resolver.async_resolve(host, std::to_string(port),
                                                     asio::redirect_error(use_awaitable, ec));
    if (!ec) co_await asio::async_connect(socket_, endpoints, asio::redirect_error(use_awaitable, ec));
  }
  deadline_timer_.cancel();
  ++generation_;
  if (ec) fail(ec);
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  asio::socket_base::keep_alive keep_alive(true);
  socket_.set_option(keep_alive, ec);
}

void connection::arm_deadline(duration deadline) {
  deadline_passed_ = false;
  const std::uint64_t generation = ++generation_;
  deadline_timer_.expires_after(deadline);
  deadline_timer_.async_wait([this, generation](error_code ec) {
    if (ec || generation != generation_) return;
    deadline_passed_ = true;
    error_code ignored;
    socket_.close(ignored);
  });
}

void connection::disarm_deadline() {
  deadline_timer_.cancel();
  ++generation_;
}

awaitable<void> connection::write_requests(std::string requests, std::size_t count) {
  if (!socket_.is_open()) fail(asio::error::not_connected);
  if (unanswered_ != 0) fail(make_error_code(errc::unexpected_response)); // answers not collected: out of step
  // Everything asked so far was answered: bytes already waiting were not asked for.
  error_code ec;
  if (socket_.available(ec) > 0) fail(make_error_code(errc::unrequested_response));
  co_await asio::async_write(socket_, asio::buffer(requests), asio::redirect_error(use_awaitable, ec));
  if (ec) fail(ec);
  unanswered_ = count;
}

awaitable<response> connection::read_answer() {
  if (unanswered_ == 0) fail(make_error_code(errc::unexpected_response)); // nothing was asked
  std::array<char, 16 * 1024> chunk;
  for (;;) {
    parse_result parsed = parse_response(input_, max_body_);
    if (parsed.status == parse_status::complete) {
      input_.erase(0, parsed.consumed);
      if (--unanswered_ == 0 && !input_.empty()) fail(make_error_code(errc::unrequested_response));
      co_return std::move(parsed.value);
    }
    if (parsed.status == parse_status::bad) fail(make_error_code(errc::bad_response));
    error_code ec;
    std::size_t n = co_await socket_.async_read_some(asio::buffer(chunk), asio::redirect_error(use_awaitable, ec));
    if (ec) fail(ec);
    input_.append(chunk.data(), n);
  }
}

awaitable<void> connection::send(std::string requests, std::size_t count, duration deadline) {
  arm_deadline(deadline);
  co_await write_requests(std::move(requests), count);
  disarm_deadline();
}

awaitable<std::vector<response>> connection::collect(duration deadline) {
  if (!socket_.is_open()) fail(asio::error::not_connected);
  arm_deadline(deadline);
  std::vector<response> answers;
  answers.reserve(unanswered_);
  while (unanswered_ > 0) answers.push_back(co_await read_answer());
  disarm_deadline();
  co_return answers;
}

awaitable<response> connection::round_trip(std::string request, duration deadline) {
  arm_deadline(deadline);
  co_await write_requests(std::move(request), 1);
  response answer = co_await read_answer();
  disarm_deadline();
  co_return answer;
}

void connection::expect(const response& r, std::initializer_list<response_kind> kinds) {
  for (response_kind k : kinds)
    if (r.kind == k) return;
  error_code ec = to_error(r.kind);
  if (!ec) ec = make_error_code(errc::unexpected_response);
  // A server error word leaves the connection in step with the server; the
  // caller decides whether to go on (JOB_TOO_BIG) or reconnect.
  throw boost::system::system_error(ec);
}

awaitable<void> connection::use(std::string_view tube) {
  check_tube_name(tube, "use");
  response r = co_await round_trip(encode_use(tube), command_deadline_);
  expect(r, {response_kind::using_tube});
}

awaitable<std::uint64_t> connection::put(std::uint32_t priority, std::uint32_t delay,
                                         std::uint32_t ttr, std::string_view body) {
  response r = co_await round_trip(encode_put(priority, delay, ttr, body), command_deadline_);
  expect(r, {response_kind::inserted});
  co_return r.value;
}

awaitable<std::uint64_t> connection::watch(std::string_view tube) {
  check_tube_name(tube, "watch");
  response r = co_await round_trip(encode_watch(tube), command_deadline_);
  expect(r, {response_kind::watching});
  co_return r.value;
}

awaitable<std::uint64_t> connection::ignore(std::string_view tube) {
  check_tube_name(tube, "ignore");
  response r = co_await round_trip(encode_ignore(tube), command_deadline_);
  expect(r, {response_kind::watching});
  co_return r.value;
}

awaitable<std::optional<job>> connection::reserve_with_timeout(std::chrono::seconds timeout) {
  const auto seconds = static_cast<std::uint32_t>(timeout.count() < 0 ? 0 : timeout.count());
  response r = co_await round_trip(encode_reserve_with_timeout(seconds), timeout + command_deadline_);
  expect(r, {response_kind::reserved, response_kind::timed_out, response_kind::deadline_soon});
  if (r.kind != response_kind::reserved) co_return std::nullopt;
  co_return job{r.value, std::move(r.body)};
}

awaitable<std::optional<job>> connection::reserve_job(std::uint64_t id) {
  response r = co_await round_trip(encode_reserve_job(id), command_deadline_);
  expect(r, {response_kind::reserved, response_kind::not_found});
  if (r.kind != response_kind::reserved) co_return std::nullopt;
  co_return job{r.value, std::move(r.body)};
}

awaitable<void> connection::bury(std::uint64_t id, std::uint32_t priority) {
  response r = co_await round_trip(encode_bury(id, priority), command_deadline_);
  expect(r, {response_kind::buried});
}

awaitable<void> connection::request_ready(std::size_t n) {
  std::string requests;
  for (std::size_t i = 0; i < n; ++i) requests += encode_reserve_with_timeout(0);
  co_await send(std::move(requests), n, command_deadline_);
}

awaitable<std::vector<job>> connection::collect_ready() {
  std::vector<job> jobs;
  // A waiting job may arrive between two of the requests: each answer counts.
  for (response& r : co_await collect(command_deadline_)) {
    expect(r, {response_kind::reserved, response_kind::timed_out, response_kind::deadline_soon});
    if (r.kind == response_kind::reserved) jobs.push_back(job{r.value, std::move(r.body)});
  }
  co_return jobs;
}

awaitable<std::vector<bool>> connection::bury_each(const std::vector<std::uint64_t>& ids, std::uint32_t priority) {
  std::string requests;
  for (std::uint64_t id : ids) requests += encode_bury(id, priority);
  co_await send(std::move(requests), ids.size(), command_deadline_);
  std::vector<bool> buried;
  for (const response& r : co_await collect(command_deadline_)) {
    expect(r, {response_kind::buried, response_kind::not_found});
    buried.push_back(r.kind == response_kind::buried);
  }
  co_return buried;
}

awaitable<void> connection::release(std::uint64_t id, std::uint32_t priority, std::uint32_t delay) {
  response r = co_await round_trip(encode_release(id, priority, delay), command_deadline_);
  expect(r, {response_kind::released, response_kind::buried});
}

awaitable<bool> connection::remove(std::uint64_t id) {
  response r = co_await round_trip(encode_delete(id), command_deadline_);
  expect(r, {response_kind::deleted, response_kind::not_found});
  co_return r.kind == response_kind::deleted;
}

awaitable<bool> connection::touch(std::uint64_t id) {
  response r = co_await round_trip(encode_touch(id), command_deadline_);
  expect(r, {response_kind::touched, response_kind::not_found});
  co_return r.kind == response_kind::touched;
}

awaitable<stats_map> connection::stats() {
  response r = co_await round_trip(encode_stats(), command_deadline_);
  expect(r, {response_kind::ok});
  co_return parse_yaml_map(r.body);
}

awaitable<std::optional<stats_map>> connection::stats_job(std::uint64_t id) {
  response r = co_await round_trip(encode_stats_job(id), command_deadline_);
  expect(r, {response_kind::ok, response_kind::not_found});
  if (r.kind == response_kind::not_found) co_return std::nullopt;
  co_return parse_yaml_map(r.body);
}

awaitable<std::optional<job>> connection::peek(std::uint64_t id) {
  response r = co_await round_trip(encode_peek(id), command_deadline_);
  expect(r, {response_kind::found, response_kind::not_found});
  if (r.kind == response_kind::not_found) co_return std::nullopt;
  co_return job{r.value, std::move(r.body)};
}

awaitable<std::optional<stats_map>> connection::stats_tube(std::string_view tube) {
  check_tube_name(tube, "stats-tube");
  response r = co_await round_trip(encode_stats_tube(tube), command_deadline_);
  expect(r, {response_kind::ok, response_kind::not_found});
  if (r.kind == response_kind::not_found) co_return std::nullopt;
  co_return parse_yaml_map(r.body);
}

awaitable<std::vector<std::optional<stats_map>>> connection::stats_jobs(const std::vector<std::uint64_t>& ids) {
  std::string requests;
  for (std::uint64_t id : ids) requests += encode_stats_job(id);
  co_await send(std::move(requests), ids.size(), command_deadline_);
  std::vector<std::optional<stats_map>> stats;
  for (response& r : co_await collect(command_deadline_)) {
    expect(r, {response_kind::ok, response_kind::not_found});
    if (r.kind == response_kind::ok) {
      stats.push_back(parse_yaml_map(r.body));
    } else {
      stats.push_back(std::nullopt);
    }
  }
  co_return stats;
}

} // namespace bs_router::beanstalk
