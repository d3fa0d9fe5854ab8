#pragma once
// The router: takes jobs from the job source, records each in the journal,
// has the broker hold it, runs cbsd for it when the scheduler says so, and
// puts its reply through the outbox. It owns the parts and wires them:
//
//   job_source --take--> intake (router_intake.cpp) --journal--> hold
//     --> scheduler --> cbsd_runner --> journal(finished) --> outbox
//     --> reply_sink.put --> reply_sink.finish --> journal entry removed
//
// Recovery: entries of an earlier life whose reply is recorded go straight
// to the outbox; the others are settled with the job source before anything
// runs (recovery.hpp says what each becomes).
//
// Jobs taken in one go are recorded with one fdatasync and held together. A
// job that would wait behind its busy jname with max_waiting jobs waiting
// already is given back to the broker, when it can take it back by id
// (deferred_jobs.hpp), so that the jobs of the other jnames keep flowing.

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "bs_router/async_event.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/cbsd_runner.hpp"
#include "bs_router/config.hpp"
#include "bs_router/deferred_jobs.hpp"
#include "bs_router/job.hpp"
#include "bs_router/job_files.hpp"
#include "bs_router/job_policy.hpp"
#include "bs_router/journal.hpp"
#include "bs_router/metrics.hpp"
#include "bs_router/metrics_server.hpp"
#include "bs_router/outbox.hpp"
#include "bs_router/replay_guard.hpp"
#include "bs_router/scheduler.hpp"
#include "bs_router/signature.hpp"
#include "bs_router/spawn.hpp"
#include "bs_router/tracked_job.hpp"

namespace bs_router {

class router {
 public:
  // `statedir`: cfg.statedir, opened once at start (open_state_directory);
  // the journal's files are opened relative to it. The broker is the one
  // cfg names (make_broker).
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
  // Where the router is, as a whole.
  enum class phase { serving, stopping, stopped };
  struct intake;

  // router.cpp: life, running, answering; router_recovery.cpp: the journal at start
  void recover();
  boost::asio::awaitable<void> settle_jobs();
  boost::asio::awaitable<void> worker_loop();
  void move_to(const job_ptr& job, job_phase next);
  void place(const job_ptr& job);
  void admitted(const job_ptr& job, scheduler::placement where);
  void start_jobs(const std::vector<scheduler::key>& keys);
  boost::asio::awaitable<void> execute(job_ptr job);
  void answer(const job_ptr& job, reply r);
  void forget(const job_ptr& job);
  void keep_replied(const job_ptr& job);
  job_ptr find(const std::string& broker_id) const;
  bool is_current(const tracked_job& job) const;
  void save(const job_ptr& job);
  void record_not_started(const job_ptr& job);
  boost::asio::awaitable<void> make_durable(std::uint64_t sequence);
  void check_done();
  std::string render_metrics();
  failure_report log_failure() const;

  // router_intake.cpp: taking jobs
  boost::asio::awaitable<void> take_next();
  boost::asio::awaitable<void> accept(broker_job first);
  boost::asio::awaitable<bool> is_new(const broker_job& job);
  void take(broker_job job, intake& batch);
  std::optional<job_refusal> admit_signed(const opened_job& opened, const std::string& id, std::int64_t now);
  bool defer(const std::string& jname, const std::string& id, intake& batch);
  boost::asio::awaitable<void> send_back(const intake& batch);
  boost::asio::awaitable<void> hold_batch(intake& batch);
  boost::asio::awaitable<bool> adopt(broker_job job);
  bool can_take_more() const;

  boost::asio::io_context& io_;
  config cfg_;
  std::shared_ptr<spdlog::logger> log_;
  job_limits limits_;
  job_files files_;
  journal journal_;
  std::unique_ptr<replay_guard> replay_guard_; // signed jobs taken; only when job_keys has keys
  metrics metrics_;
  broker_roles broker_;
  job_source& source_;
  reply_sink& sink_;
  cbsd_runner cbsd_;
  scheduler scheduler_;
  deferred_jobs deferred_;
  outbox outbox_;

  std::map<std::uint64_t, job_ptr> jobs_;             // every job taken and not yet answered, by key
  std::map<std::string, std::uint64_t> by_broker_id_; // their keys by broker id
  std::vector<job_ptr> unconfirmed_;                  // to settle with the broker before taking more
  std::uint64_t next_key_ = 1;
  int running_ = 0; // jobs whose cbsd runs (execute)

  async_event capacity_changed_;
  boost::asio::steady_timer worker_sleep_;
  boost::asio::steady_timer shutdown_timer_;
  boost::asio::steady_timer prune_timer_;
  std::unique_ptr<metrics_server> metrics_server_;
  bool broker_connected_ = false;
  phase phase_ = phase::serving;
  bool worker_stopped_ = false;
  std::function<void()> on_done_;
};

} // namespace bs_router
