#include "bs_router/router.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <limits>

#include "bs_router/escape.hpp"
#include "bs_router/unix_time.hpp"

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;
using namespace std::chrono_literals;

namespace {

constexpr auto prune_interval = 10min;
// At most this many jobs are given back to the broker at once (their ids are
// all the router keeps of them); beyond it the router takes no new job until
// some have had their turn.
constexpr std::size_t max_deferred = 4096;


const char* outcome_name(long long err_code) {
  switch (err_code) {
    case 0: return "ok";
    case router_errcode::bad_input: return "bad_input";
    case router_errcode::start_failed: return "start_failed";
    case router_errcode::timed_out: return "timed_out";
    case router_errcode::interrupted: return "interrupted";
    case router_errcode::killed: return "killed";
    default: return "failed";
  }
}

} // namespace

router::router(asio::io_context& io, config cfg, std::shared_ptr<spdlog::logger> log, directory statedir)
    : io_(io),
      cfg_(std::move(cfg)),
      log_(std::move(log)),
      files_(cfg_.logdir(), cfg_.joblog_max_age_days, cfg_.joblog_max_files, cfg_.joblog_max_bytes),
      journal_(std::move(statedir)),
      broker_(make_broker(io.get_executor(), cfg_, metrics_, log_)),
      source_(*broker_.source),
      sink_(*broker_.sink),
      cbsd_(io, cfg_, files_, log_),
      scheduler_(static_cast<std::size_t>(cfg_.max_jobs), static_cast<std::size_t>(cfg_.max_waiting)),
      deferred_(max_deferred),
      outbox_(io, sink_, cfg_, log_,
              outbox::owner{
                  [this](const tracked_job& job) { return is_current(job); },
                  [this](const tracked_job& job) { return make_durable(job.journal_sequence); },
                  [this](const job_ptr& job) { forget(job); },
                  [this](const job_ptr& job) { keep_replied(job); },
                  [this] { return phase_ != phase::serving && running_ == 0; },
              }),
      capacity_changed_(io.get_executor()),
      worker_sleep_(io),
      shutdown_timer_(io),
      prune_timer_(io) {
  limits_.max_body_bytes = cfg_.max_body_bytes;
  // The replay memory lives beside the journal, in the statedir held open.
  if (!cfg_.job_keys.empty())
    replay_guard_ = std::make_unique<replay_guard>(journal_.state_directory().fd(),
                                                   static_cast<std::size_t>(cfg_.max_remembered_signatures), unix_now());
}

router::~router() = default;

void router::start(std::function<void()> on_done) {
  on_done_ = std::move(on_done);
  if (!cfg_.metrics_listen.empty()) {
    metrics_server_ = std::make_unique<metrics_server>(io_, cfg_.metrics_host, cfg_.metrics_port,
                                                       [this] { return render_metrics(); });
    metrics_server_->set_failure_report(log_failure());
    metrics_server_->start();
    log_->info("metrics on http://{}/metrics", cfg_.metrics_listen);
  }
  recover();
  auto report = [this](const char* what) {
    return [this, what](std::exception_ptr ep) {
      if (!ep) return;
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& ex) {
        log_->critical("{} stopped: {}", what, loggable(ex.what()));
      }
      // A loop that died cannot serve: stop rather than hang half-alive.
      request_stop();
    };
  };
  asio::co_spawn(io_, worker_loop(), report("worker"));
  asio::co_spawn(
      io_,
      [this]() -> awaitable<void> {
        co_await outbox_.run();
        check_done();
      },
      report("publisher"));
  source_.watch_for_strays([this](broker_job job) { return adopt(std::move(job)); },
                           [this](const std::string& id) { return find(id) != nullptr; });
  // The function object itself is spawned (co_spawn keeps it alive): the
  // coroutine of a lambda called in place would outlive its captures.
  asio::co_spawn(
      io_,
      [this]() -> awaitable<void> {
        while (phase_ == phase::serving) {
          try {
            if (std::size_t n = files_.prune()) log_->info("removed the files of {} old jobs from {}", n, files_.dir());
          } catch (const std::exception& ex) {
            log_->warn("pruning {}: {}", files_.dir(), loggable(ex.what()));
          }
          co_await sleep_on(prune_timer_, prune_interval);
        }
      },
      report_failure(log_failure(), "per-job file retention"));
}

// For coroutines that nothing waits for: a failure is logged, never silent.
failure_report router::log_failure() const {
  return [log = log_](const std::string& what, const std::string& why) { log->error("{} stopped: {}", what, why); };
}

awaitable<void> router::worker_loop() {
  int failures = 0;
  const auto retry_pause = std::chrono::seconds(cfg_.reconnect_seconds());
  while (phase_ == phase::serving) {
    bool failed = false;
    try {
      co_await source_.open();
      if (!source_.can_give_back() && deferred_.size() > 0) {
        log_->warn("the broker cannot give jobs back and hand them out by id (beanstalkd before 1.12): the {} jobs "
                   "sent back until their turn are taken as they come", deferred_.size());
        deferred_.clear();
      }
      log_->info("connected to {}", source_.describe());
      broker_connected_ = true;
      failures = 0;
      co_await settle_jobs();
      while (phase_ == phase::serving) co_await take_next();
    } catch (const std::exception& ex) {
      // One failure path: broker errors, and the journal failing to record a
      // job (the job was not held, so the broker gives it back).
      source_.close();
      broker_connected_ = false;
      if (phase_ != phase::serving) break;
      ++failures;
      metrics_.reconnect();
      log_->warn("serving {}: {}; reconnecting in {} s (attempt {})", source_.describe(), loggable(ex.what()),
                 cfg_.reconnect_seconds(), failures);
      failed = true;
    }
    if (failed) co_await sleep_on(worker_sleep_, retry_pause);
  }
  source_.close();
  broker_connected_ = false;
  worker_stopped_ = true;
  check_done();
}

// The one place a job's phase changes.
void router::move_to(const job_ptr& job, job_phase next) { job->phase = next; }

// A job the scheduler has placed: it starts when it has its slot and the
// broker holds it; otherwise it waits where the scheduler put it.
void router::admitted(const job_ptr& job, scheduler::placement where) {
  if (job->phase == job_phase::holding || job->phase == job_phase::unconfirmed) {
    job->slot_granted = where == scheduler::placement::runs;
    return;
  }
  if (where == scheduler::placement::runs) {
    job->slot_granted = false;
    move_to(job, job_phase::running);
    ++running_;
    spawn_reported(io_.get_executor(), execute(job), log_failure(), describe_job(*job));
    return;
  }
  move_to(job, where == scheduler::placement::waits_for_slot ? job_phase::waiting_for_slot
                                                             : job_phase::waiting_for_jname);
}

void router::start_jobs(const std::vector<scheduler::key>& keys) {
  for (scheduler::key key : keys) {
    auto it = jobs_.find(key);
    if (it != jobs_.end()) admitted(it->second, scheduler::placement::runs);
  }
}

// A job just taken and held: a refused one (bad input, not allowed, its
// signature) has its reply already and goes to the outbox; any other goes
// where the scheduler put it when it was taken.
void router::place(const job_ptr& job) {
  if (job->entry.state == journal_state::finished) {
    metrics_.job_finished("bad_input", -1);
    move_to(job, job_phase::replying);
    outbox_.push(job);
    return;
  }
  const bool slot = job->slot_granted;
  move_to(job, job_phase::waiting_for_slot);
  if (slot) {
    admitted(job, scheduler::placement::runs);
  } else if (std::optional<scheduler::placement> where = scheduler_.where(job->entry.key)) {
    admitted(job, *where);
  }
}

awaitable<void> router::execute(job_ptr job) {
  const std::string what = describe_job(*job);
  reply r;
  try {
    if (job->entry.state != journal_state::running) {
      job->entry.state = journal_state::running;
      save(job);
      co_await make_durable(job->journal_sequence);
    }
    cbsd_runner::output_watch watch;
    if (cfg_.progress)
      watch = [this, job, what](int fd, std::shared_ptr<bool> over) {
        spawn_reported(io_.get_executor(), outbox_.watch_output(job, fd, std::move(over)), log_failure(),
                       what + ": live output");
      };
    r = co_await cbsd_.run(*job->request, job_file_id(job->entry.broker_id, job->entry.numeric_id), what,
                           outbox_.budget(), watch);
  } catch (const std::exception& ex) {
    // The router could not run the job (disk full, out of fds): say so
    // rather than leave the controller waiting.
    log_->error("{}: {}", what, loggable(ex.what()));
    r = error_reply({}, true, router_errcode::start_failed,
                    std::string("bs_router: the job could not be run: ") + ex.what());
  }
  r.job_id = job->entry.broker_id;
  r.numeric_id = job->entry.numeric_id;
  log_->info("{}: finished, ErrCode {}, {:.3f} s", what, r.err_code, std::max(0.0, r.duration_seconds));
  --running_;
  start_jobs(scheduler_.finished(job->entry.key));
  capacity_changed_.notify();
  answer(job, std::move(r));
}

std::string router::render_metrics() {
  // Gauges are read off the router's state when asked, not kept in step.
  metrics_.set_jobs_running(static_cast<std::size_t>(running_));
  metrics_.set_jobs_waiting(scheduler_.waiting_for_slot() + scheduler_.waiting_for_jname());
  metrics_.set_replies_waiting(outbox_.size());
  metrics_.set_broker_connected(broker_connected_);
  metrics_.set_broker(cfg_.broker, broker_connected_ ? source_.node() : std::string());
  metrics_.set_journal_syncs(journal_.syncs(), journal_.sync_seconds());
  return metrics_.render();
}

void router::answer(const job_ptr& job, reply r) {
  metrics_.job_finished(outcome_name(r.err_code), r.duration_seconds);
  job->entry.state = journal_state::finished;
  job->entry.result = std::move(r);
  try {
    save(job);
  } catch (const std::exception& ex) {
    // The reply still goes out from memory; only a crash before that loses it.
    log_->error("{}: journal: {}", describe_job(*job), loggable(ex.what()));
  }
  move_to(job, job_phase::replying);
  outbox_.push(job);
}

job_ptr router::find(const std::string& broker_id) const {
  auto key = by_broker_id_.find(broker_id);
  if (key == by_broker_id_.end()) return nullptr;
  auto job = jobs_.find(key->second);
  return job == jobs_.end() ? nullptr : job->second;
}

bool router::is_current(const tracked_job& job) const {
  const job_ptr current = find(job.entry.broker_id);
  return current && current.get() == &job;
}

void router::forget(const job_ptr& job) {
  try {
    journal_.remove(job->entry.key);
  } catch (const std::exception& ex) {
    // Left in the journal: the next start finds its job gone and drops it.
    log_->error("{}: journal: {}", describe_job(*job), loggable(ex.what()));
  }
  jobs_.erase(job->entry.key);
  auto id = by_broker_id_.find(job->entry.broker_id);
  if (id != by_broker_id_.end() && id->second == job->entry.key) by_broker_id_.erase(id);
  // Wherever it waited, its place passes on.
  if (job->phase != job_phase::running) start_jobs(scheduler_.withdraw(job->entry.key));
}

// The final reply is out, but the broker keeps the job (reply_sink::finish):
// its entry stays, marked replied, until the job comes back.
void router::keep_replied(const job_ptr& job) {
  job->entry.replied = true;
  try {
    save(job);
  } catch (const std::exception& ex) {
    log_->error("{}: journal: {}", describe_job(*job), loggable(ex.what()));
  }
  log_->info("{}: reply put; the broker keeps the job for another connection, and it is removed when it comes "
             "back", describe_job(*job));
}

void router::save(const job_ptr& job) { job->journal_sequence = journal_.save(job->entry); }

// A job recorded as running that has not started is recorded as accepted
// again, so that a crash now does not pass it off as interrupted.
void router::record_not_started(const job_ptr& job) {
  if (job->entry.state != journal_state::running) return;
  job->entry.state = journal_state::accepted;
  try {
    save(job);
  } catch (const std::exception& ex) {
    log_->error("{}: journal: {}", describe_job(*job), loggable(ex.what()));
  }
}

// Returns once the journal append numbered `sequence` is on disk. The first
// waiter lets the rest of this turn of the loop run first, so the appends of
// every job that moved meanwhile go out with the same fdatasync.
awaitable<void> router::make_durable(std::uint64_t sequence) {
  if (journal_.synced(sequence)) co_return;
  co_await asio::post(io_, asio::use_awaitable);
  if (!journal_.synced(sequence)) journal_.sync();
}

void router::request_stop() {
  if (phase_ != phase::serving) return;
  phase_ = phase::stopping;
  log_->info("stopping: no more jobs taken; {} running, {} replies to put", running_, outbox_.size());
  source_.stop();
  worker_sleep_.cancel();
  prune_timer_.cancel();
  scheduler_.stop();
  // Jobs that never got a slot did not run: the next start runs them.
  for (const auto& [key, job] : jobs_)
    if (job->phase != job_phase::running) record_not_started(job);
  try {
    journal_.sync();
  } catch (const std::exception& ex) {
    log_->error("journal: {}", loggable(ex.what()));
  }
  capacity_changed_.notify();
  outbox_.wake();
  shutdown_timer_.expires_after(std::chrono::seconds(cfg_.shutdown_timeout));
  shutdown_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || phase_ == phase::stopped) return;
    log_->warn("shutdown_timeout passed: {} jobs still running and {} replies unsent stay in the journal",
               running_, outbox_.size());
    cbsd_.terminate_all();
    phase_ = phase::stopped;
    if (on_done_) on_done_();
  });
  check_done();
}

void router::check_done() {
  if (phase_ != phase::stopping || !worker_stopped_ || running_ != 0 || outbox_.size() != 0) return;
  phase_ = phase::stopped;
  shutdown_timer_.cancel();
  if (metrics_server_) metrics_server_->stop();
  outbox_.stop();
  log_->info("stopped");
  if (on_done_) on_done_();
}

} // namespace bs_router
