#pragma once
// Optional Prometheus metrics: the router's counters and gauges (`metrics`),
// rendered in the text exposition format 0.0.4. The HTTP listener that hands
// them to a scraper is metrics_server (metrics_server.hpp).

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

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
  // The broker kind ("beanstalkd", "rabbitmq") and the node the job source
  // is connected to, without password ("" while not connected, or when the
  // broker does not tell). Shown as bs_router_broker_info once set.
  void set_broker(std::string kind, std::string node) {
    broker_kind_ = std::move(kind);
    broker_node_ = std::move(node);
  }
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
  std::string broker_kind_;
  std::string broker_node_;
  std::uint64_t reconnects_ = 0;
  std::size_t jobs_reserved_elsewhere_ = 0;
  std::uint64_t jobs_taken_over_ = 0;
  std::uint64_t journal_syncs_ = 0;
  double journal_sync_seconds_ = 0;
};

} // namespace bs_router
