#pragma once
// The router: takes jobs from the pool's tube, runs cbsd for each, and puts
// the replies on their reply tubes.
//
// Two broker connections, one per protocol role: the worker watches the
// pool's tube and reserves (a pending reserve blocks its connection), the
// publisher puts replies and deletes answered jobs. A reserved job is
// recorded in the journal and buried at once: a buried job has no TTR, so it
// never goes back to the ready queue while cbsd runs, however long that is.
//
// The jobs already waiting for the other free slots are taken with it, and
// recorded and buried together.
//
// A job that would wait behind its busy jname with max_waiting jobs waiting
// already is not taken: it is released to the broker with a delay, its id
// remembered in the order it came, and reserved again by id (reserve-job)
// when its turn comes, so that the jobs of the other jnames keep flowing.
//
//   reserve -> journal(accepted|running) -> bury -> [wait for jname and slot]
//     -> journal(running) -> cbsd -> look-ups -> journal(finished)
//     -> put reply -> delete job -> journal entry removed

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

#include "bs_router/async_event.hpp"
#include "bs_router/beanstalk_connection.hpp"
#include "bs_router/cbsd_database.hpp"
#include "bs_router/config.hpp"
#include "bs_router/job.hpp"
#include "bs_router/job_policy.hpp"
#include "bs_router/job_files.hpp"
#include "bs_router/journal.hpp"
#include "bs_router/metrics.hpp"
#include "bs_router/process.hpp"
#include "bs_router/replay_guard.hpp"
#include "bs_router/reply.hpp"
#include "bs_router/spawn.hpp"
#include "bs_router/stuck_jobs.hpp"

namespace bs_router {

// The whole environment of a cbsd run (SPEC: nothing else is inherited).
std::vector<std::string> cbsd_environment(const config& cfg);

class router {
 public:
  // `statedir`: cfg.statedir, opened once at start (open_state_directory);
  // the journal's files are opened relative to it.
  router(boost::asio::io_context& io, config cfg, std::shared_ptr<spdlog::logger> log, directory statedir);
  ~router();
  router(const router&) = delete;
  router& operator=(const router&) = delete;

  // Recovers the journal and starts serving. `on_done` runs once the router
  // has stopped (after request_stop, when drained or at shutdown_timeout).
  void start(std::function<void()> on_done);

  // SIGTERM/SIGINT: take no more jobs, let running ones finish and their
  // replies go out, within shutdown_timeout.
  void request_stop();

 private:
  struct job_state;
  using job_ptr = std::shared_ptr<job_state>;
  struct intake;

  boost::asio::awaitable<void> worker_loop();
  boost::asio::awaitable<void> publisher_loop();
  boost::asio::awaitable<void> open_publisher();
  boost::asio::awaitable<void> connect(beanstalk::connection& conn);
  boost::asio::awaitable<void> accept(beanstalk::job job);
  boost::asio::awaitable<bool> is_new(const beanstalk::job& job);
  void take(beanstalk::job job, intake& batch);
  std::optional<job_refusal> admit_signed(const opened_job& opened, std::uint64_t id, std::int64_t now);
  const key_ring::value_type* reply_key(const job_state& job) const;
  std::size_t json_room(const job_state& job, std::size_t budget) const;
  std::string reply_body(const job_state& job, const reply& r, std::size_t budget) const;
  bool defer(const std::string& jname, std::uint64_t id, intake& batch);
  boost::asio::awaitable<void> send_back(const intake& batch);
  boost::asio::awaitable<void> take_next();
  const std::string* next_deferred() const;
  bool has_room(const std::string& jname) const;
  boost::asio::awaitable<void> execute(job_ptr job);
  boost::asio::awaitable<reply> run_cbsd(const job_ptr& job);
  boost::asio::awaitable<std::optional<std::string>> look_up(const std::vector<std::string>& args,
                                                             std::function<void(std::string_view)> stderr_sink);
  boost::asio::awaitable<bool> publish(const job_ptr& job);
  boost::asio::awaitable<void> publish_live_output(const job_ptr& job);
  boost::asio::awaitable<void> watch_output(job_ptr job, int fd, std::shared_ptr<bool> run_over);
  boost::asio::awaitable<bool> still_in_broker(beanstalk::connection& conn, const journal_entry& entry,
                                               const std::string* body);

  void choose_lookup_source();
  boost::asio::awaitable<database_read> read_database(std::string jname, bool want_vnc);
  void recover();
  boost::asio::awaitable<void> confirm_jobs();
  void look_for_reserved_elsewhere();
  boost::asio::awaitable<void> watch_reserved_elsewhere();
  boost::asio::awaitable<bool> take_over(const reserved_elsewhere& stuck);
  boost::asio::awaitable<bool> done_with_broker_job(const job_ptr& job);
  void place(const job_ptr& job);
  void schedule(const job_ptr& job);
  void start_ready_jobs();
  void finish_run(const job_ptr& job);
  void answer(const job_ptr& job, reply r);
  void forget(const job_ptr& job);
  bool can_take_more() const;
  std::size_t waiting_for_jname() const;
  void check_done();
  void save(const job_ptr& job);
  void record_not_started(const job_ptr& job);
  boost::asio::awaitable<void> make_durable(std::uint64_t sequence);
  std::string render_metrics();
  failure_report log_failure() const;

  boost::asio::io_context& io_;
  config cfg_;
  std::shared_ptr<spdlog::logger> log_;
  job_limits limits_;
  job_files files_;
  journal journal_;
  std::unique_ptr<replay_guard> replay_guard_; // signed jobs taken; only when job_keys has keys
  process_runner runner_;
  beanstalk::connection worker_;
  beanstalk::connection publisher_;
  // The largest reply to put: the broker's max-job-size less what its binlog
  // needs, within max_reply_bytes (see reply_limit). Read at each connect.
  std::size_t reply_limit_;
  // Looks for jobs of the pool reserved for connections not the router's.
  beanstalk::connection inspector_;
  std::uint64_t publisher_epoch_ = 1; // counts the publisher's connections

  std::map<std::uint64_t, job_ptr> in_flight_;           // every job taken and not yet answered
  std::map<std::string, std::deque<job_ptr>> busy_jnames_; // jname -> jobs waiting behind the running one
  std::deque<job_ptr> ready_;                             // runnable, waiting for a slot
  std::deque<job_ptr> outbox_;                            // finished, reply to put
  std::deque<job_ptr> live_outbox_;
  std::deque<job_ptr> unconfirmed_;                       // to settle with the broker before reserving                       // running, new output to send (progress)
  int running_ = 0;

  // Jobs released to the broker until their jname has room (see defer), in
  // the order the router first got them, per jname.
  struct deferred_job {
    std::uint64_t id = 0;
    std::optional<std::uint32_t> priority; // the job's own, once asked for
  };
  std::map<std::string, std::deque<deferred_job>> deferred_;
  std::size_t deferred_count_ = 0;
  std::string last_deferred_turn_; // the jname whose job sent back was fetched last
  bool broker_reserves_by_id_ = false; // beanstalkd 1.12 or later: deferring is possible
  std::chrono::steady_clock::duration reserve_backoff_{}; // after reserves that returned nothing at once

  async_event capacity_changed_;
  async_event outbox_changed_;
  async_event reserved_elsewhere_check_;
  bool look_for_reserved_elsewhere_ = false;
  std::set<std::uint64_t> reported_reserved_elsewhere_; // logged once each
  boost::asio::steady_timer worker_sleep_;
  boost::asio::steady_timer publisher_sleep_;
  boost::asio::steady_timer shutdown_timer_;
  boost::asio::steady_timer prune_timer_;
  boost::asio::steady_timer inspector_sleep_;

  metrics metrics_;
  std::unique_ptr<metrics_server> metrics_server_;
  bool broker_connected_ = false;

  // Where Guid, DskGuid and Vnc are read (lookups): null when cbsd is asked.
  std::unique_ptr<cbsd_database> database_;
  std::set<database_problem> database_problems_logged_; // each cause of falling back, once

  bool stopping_ = false;
  bool worker_stopped_ = false;
  bool publisher_failing_ = false;
  bool done_ = false;
  std::function<void()> on_done_;

  // Where the databases are read, made with database_ (cbsd_database::read
  // is safe on another thread). Last, so that it is joined before anything
  // it reads goes away.
  std::unique_ptr<boost::asio::thread_pool> database_thread_;
};

} // namespace bs_router
