#pragma once
// Optional Prometheus metrics: the router's counters and gauges (`metrics`),
// rendered in the text exposition format 0.0.4, and the small HTTP listener
// that hands them to a scraper (`metrics_server`, enabled by metrics_listen).

#include <utility>
#include <boost/asio/io_context.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "bs_router/spawn.hpp"

namespace bs_router {

// What the router counts. Owned by the router and touched only from its event
// loop, so the counters are plain numbers.
class metrics {
 public:
  // Every value job_finished accepts, in the order render() lists them.
  //   ok           ErrCode 0
  //   failed       cbsd exited non-zero
  //   bad_input    the job was refused before anything ran
  //   start_failed cbsd could not be started
  //   timed_out    cbsd ran past its timeout and was killed
  //   killed       cbsd died from a signal the router did not send
  //   interrupted  the router shut down while the job ran
  static constexpr std::array<std::string_view, 7> outcomes{
      "ok", "failed", "bad_input", "start_failed", "timed_out", "killed", "interrupted"};

  // Upper bounds (seconds) of the duration histogram's finite buckets; +Inf
  // follows them. From quick look-ups to long bhyve installs.
  static constexpr std::array<double, 9> duration_buckets{
      0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600};

  // This build's version, started now.
  metrics();
  // Fixed version and start time (seconds since the Unix epoch), for tests.
  metrics(std::string version, double start_time_seconds);

  // Counts one finished job. `seconds` < 0 leaves it out of the duration
  // histogram (bad_input and interrupted jobs: their time says nothing about
  // cbsd). Throws std::invalid_argument for an outcome not in `outcomes`.
  void job_finished(std::string_view outcome, double seconds);

  void set_jobs_running(std::size_t n) { jobs_running_ = n; }
  // Jobs held in the router, waiting for their jname or a free slot.
  void set_jobs_waiting(std::size_t n) { jobs_waiting_ = n; }
  void set_replies_waiting(std::size_t n) { replies_waiting_ = n; }
  void set_broker_connected(bool connected) { broker_connected_ = connected; }
  void reconnect() { ++reconnects_; }
  // Jobs of the pool the broker keeps reserved for a connection that is not
  // the router's (last look), and those the router took over (see router).
  void set_jobs_reserved_elsewhere(std::size_t n) { jobs_reserved_elsewhere_ = n; }
  void job_taken_over() { ++jobs_taken_over_; }
  // The journal's own totals: syncs made (fdatasync or rewrite) and the time
  // they took, which is how long the disk held the router up.
  void set_journal_syncs(std::uint64_t syncs, double seconds) {
    journal_syncs_ = syncs;
    journal_sync_seconds_ = seconds;
  }

  // The text exposition format 0.0.4, with # HELP and # TYPE lines.
  std::string render() const;

 private:
  std::string version_;
  double start_time_seconds_;
  std::array<std::uint64_t, outcomes.size()> jobs_by_outcome_{};
  // Per bucket, not cumulative; the last one is +Inf.
  std::array<std::uint64_t, duration_buckets.size() + 1> duration_bucket_counts_{};
  double duration_sum_ = 0;
  std::uint64_t duration_count_ = 0;
  std::size_t jobs_running_ = 0;
  std::size_t jobs_waiting_ = 0;
  std::size_t replies_waiting_ = 0;
  bool broker_connected_ = false;
  std::uint64_t reconnects_ = 0;
  std::size_t jobs_reserved_elsewhere_ = 0;
  std::uint64_t jobs_taken_over_ = 0;
  std::uint64_t journal_syncs_ = 0;
  double journal_sync_seconds_ = 0;
};

// Serves `render()` on GET /metrics, one request per connection (HTTP/1.0
// style: Content-Length and Connection: close). Any other path is 404, any
// method but GET and HEAD is 405, a request head that does not parse or
// exceeds max_request_head is 400. What a client costs is bounded: every
// connection is closed after its deadline whatever the client does, and at
// most max_connections are open at once. When all are taken, a new
// connection takes the slot of the oldest one still waiting for its request
// (else of the oldest already answered; while every one is writing its
// answer, it waits for one to finish), so clients that connect and send
// nothing, or drip their request a byte at a time, push each other out
// instead of locking out a scraper, whose request comes with its connect.
class metrics_server {
 public:
  static constexpr std::size_t max_request_head = 8 * 1024;
  static constexpr std::size_t max_connections = 16;
  static constexpr std::chrono::steady_clock::duration default_connection_deadline =
      std::chrono::seconds(5);

  metrics_server(boost::asio::io_context& io, const std::string& host, std::uint16_t port,
                 std::function<std::string()> render);
  // Stops serving; connections still open are closed. Destroy it before the
  // io_context it was given.
  ~metrics_server();
  metrics_server(const metrics_server&) = delete;
  metrics_server& operator=(const metrics_server&) = delete;

  // Binds and starts the accept loop on the io_context. Throws
  // boost::system::system_error naming host:port when the address does not
  // resolve or cannot be bound.
  void start();
  // The bound port (the one chosen when constructed with port 0); 0 before
  // start().
  std::uint16_t port() const;
  // Closes the listener and every open connection; render is not called
  // again. Idempotent.
  void stop();

  // Time a connection may take from accept to close. Set before start().
  void set_connection_deadline(std::chrono::steady_clock::duration d);
  // Told when the listener's or a connection's coroutine dies of an
  // exception (it is never silent). Set before start().
  void set_failure_report(failure_report report);

 private:
  struct shared_state;
  boost::asio::io_context& io_;
  std::string host_;
  std::uint16_t requested_port_;
  // Shared with the running coroutines, which may outlive this object by a
  // turn of the loop after stop().
  std::shared_ptr<shared_state> state_;
};

} // namespace bs_router
