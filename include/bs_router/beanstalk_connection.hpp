#pragma once
// An asynchronous beanstalkd connection on Boost.Asio coroutines, a thin layer
// over the pure protocol functions.
//
//   closed --connect()--> open --command ok--> open
//     ^                     |
//     +---- close() <-------+-- error, server error word or deadline passed:
//                               the socket is closed and the call throws.
//
// Every operation has a deadline: a timer closes the socket when it passes,
// so a dead or silent broker is noticed instead of waited on for ever. The
// connection serves one coroutine at a time (beanstalkd answers in order).

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "bs_router/beanstalk_error.hpp"
#include "bs_router/beanstalk_protocol.hpp"

namespace bs_router::beanstalk {

struct job {
  std::uint64_t id = 0;
  std::string body;
};

using stats_map = std::map<std::string, std::string>;

class connection {
 public:
  using duration = std::chrono::steady_clock::duration;

  // max_body bounds what a response may carry (a reserved job, stats).
  explicit connection(boost::asio::any_io_executor executor,
                      std::size_t max_body = 16 * 1024 * 1024);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Resolves host and connects within `deadline`.
  boost::asio::awaitable<void> connect(std::string host, std::uint16_t port, duration deadline);
  void close() noexcept;
  bool is_open() const noexcept;

  // Deadline of every command but reserve (which gets its timeout plus this).
  void set_command_deadline(duration d) { command_deadline_ = d; }

  // Producer role.
  boost::asio::awaitable<void> use(std::string_view tube);
  boost::asio::awaitable<std::uint64_t> put(std::uint32_t priority, std::uint32_t delay,
                                            std::uint32_t ttr, std::string_view body);

  // Worker role. reserve_with_timeout returns nullopt on TIMED_OUT and on
  // DEADLINE_SOON.
  boost::asio::awaitable<std::uint64_t> watch(std::string_view tube);
  boost::asio::awaitable<std::uint64_t> ignore(std::string_view tube);
  boost::asio::awaitable<std::optional<job>> reserve_with_timeout(std::chrono::seconds timeout);
  boost::asio::awaitable<void> bury(std::uint64_t id, std::uint32_t priority);
  boost::asio::awaitable<void> release(std::uint64_t id, std::uint32_t priority, std::uint32_t delay);
  // false when the job no longer exists.
  boost::asio::awaitable<bool> remove(std::uint64_t id);
  boost::asio::awaitable<bool> touch(std::uint64_t id);

  // Inspection. nullopt on NOT_FOUND.
  boost::asio::awaitable<stats_map> stats();
  boost::asio::awaitable<std::optional<stats_map>> stats_job(std::uint64_t id);
  boost::asio::awaitable<std::optional<job>> peek(std::uint64_t id);

 private:
  // Writes one request and reads one response, within `deadline`. Throws
  // system_error for network errors, bad bytes and a passed deadline.
  boost::asio::awaitable<response> round_trip(std::string request, duration deadline);
  // Throws unless `r` is one of the expected kinds (server error words
  // become their errc).
  static void expect(const response& r, std::initializer_list<response_kind> kinds);
  [[noreturn]] void fail(boost::system::error_code ec);

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer deadline_timer_;
  std::uint64_t generation_ = 0; // which operation the deadline timer belongs to
  bool deadline_passed_ = false;
  std::string input_;
  std::size_t max_body_;
  duration command_deadline_ = std::chrono::seconds(5);
};

} // namespace bs_router::beanstalk
