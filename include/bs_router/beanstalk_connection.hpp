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
// Bytes beyond the answers to the commands sent are an error
// (errc::unrequested_response): a peer that sends lines nobody asked for
// would otherwise answer the next commands before they are sent.
//
// A tube name beanstalkd does not allow (1 to 200 bytes of letters, digits
// and -+/;.$_(), not starting with '-') fails use, watch, ignore and
// stats_tube with errc::bad_tube_name before anything is sent; the
// connection stays open.
//
// A few operations are pipelined: several requests go out in one write and
// their answers are read back in order, one round trip for all of them.

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
#include <vector>

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
  // Reserves job `id` whether ready, delayed or buried (beanstalkd 1.12 and
  // later); nullopt on NOT_FOUND (gone, or reserved by someone).
  boost::asio::awaitable<std::optional<job>> reserve_job(std::uint64_t id);
  boost::asio::awaitable<void> bury(std::uint64_t id, std::uint32_t priority);
  // Pipelined: asks for up to `n` more jobs without blocking (n times
  // reserve-with-timeout 0, written at once) and returns; the caller may do
  // other work while the broker answers, then collects the jobs got, in
  // order, with collect_ready(). No other command may come in between.
  boost::asio::awaitable<void> request_ready(std::size_t n);
  boost::asio::awaitable<std::vector<job>> collect_ready();
  // Pipelined bury of several jobs: for each, true if buried, false on
  // NOT_FOUND (the job is not reserved by this connection any more).
  boost::asio::awaitable<std::vector<bool>> bury_each(const std::vector<std::uint64_t>& ids,
                                                      std::uint32_t priority);
  boost::asio::awaitable<void> release(std::uint64_t id, std::uint32_t priority, std::uint32_t delay);
  // false when the job no longer exists.
  boost::asio::awaitable<bool> remove(std::uint64_t id);
  boost::asio::awaitable<bool> touch(std::uint64_t id);

  // Inspection. nullopt on NOT_FOUND.
  boost::asio::awaitable<stats_map> stats();
  boost::asio::awaitable<std::optional<stats_map>> stats_job(std::uint64_t id);
  boost::asio::awaitable<std::optional<job>> peek(std::uint64_t id);
  boost::asio::awaitable<std::optional<stats_map>> stats_tube(std::string_view tube);
  // Pipelined stats-job of several jobs, in order (nullopt: NOT_FOUND).
  boost::asio::awaitable<std::vector<std::optional<stats_map>>> stats_jobs(const std::vector<std::uint64_t>& ids);

 private:
  // Writes one request and reads one response, within `deadline`. Throws
  // system_error for network errors, bad bytes and a passed deadline.
  boost::asio::awaitable<response> round_trip(std::string request, duration deadline);
  // The two halves of a round trip, for pipelining: `requests` holds `count`
  // commands, and collect() reads their answers. Each half has its own
  // deadline.
  boost::asio::awaitable<void> send(std::string requests, std::size_t count, duration deadline);
  boost::asio::awaitable<std::vector<response>> collect(duration deadline);
  // The same without deadlines of their own; collect() reads one answer at a
  // time with read_answer().
  boost::asio::awaitable<void> write_requests(std::string requests, std::size_t count);
  boost::asio::awaitable<response> read_answer();
  void arm_deadline(duration deadline);
  void disarm_deadline();
  // Throws unless `r` is one of the expected kinds (server error words
  // become their errc).
  static void expect(const response& r, std::initializer_list<response_kind> kinds);
  [[noreturn]] void fail(boost::system::error_code ec);

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer deadline_timer_;
  std::uint64_t generation_ = 0; // which operation the deadline timer belongs to
  bool deadline_passed_ = false;
  std::string input_;
  std::size_t unanswered_ = 0; // requests sent whose answers are not read yet
  std::size_t max_body_;
  duration command_deadline_ = std::chrono::seconds(5);
};

} // namespace bs_router::beanstalk
