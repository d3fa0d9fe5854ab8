#include "bs_router/router.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <charconv>
#include <array>
#include <chrono>
#include <ctime>
#include <limits>
#include <set>
#include <system_error>
#include <unistd.h>

#include "bs_router/cbsd_database.hpp"
#include "bs_router/escape.hpp"
#include "bs_router/job_policy.hpp"
#include "bs_router/lookup.hpp"
#include "bs_router/reply.hpp"
#include "bs_router/spawn.hpp"
#include "bs_router/signature.hpp"

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;
using namespace std::chrono_literals;

// A look-up prints one short value; more than this is not a value anyway.
constexpr std::size_t lookup_capture_limit = 4096;
constexpr auto lookup_timeout = 60s;
constexpr auto prune_interval = 10min;
// Live output goes out at most this often per job (progress replies).
constexpr auto live_output_interval = 500ms;
// A progress reply carries what the router read; it never shows Progress 100.
constexpr int live_output_progress = 0;
// At most this many jobs are taken from the broker in one go (see accept).
constexpr std::size_t max_intake = 32;
// The broker's clock counts a job's age in whole seconds.
constexpr std::int64_t age_slack_seconds = 2;
// A job sent back to the broker until its jname has room (see defer) is
// released with this delay. It is reserved again by id as soon as its turn
// comes, so the delay only bounds how often it comes back by itself
// meanwhile (and is released again), and how long it waits after a crash.
constexpr std::uint32_t deferral_delay_seconds = 30;
// At most this many jobs are sent back at once (their ids are all the router
// keeps of them); beyond it the router takes no new job until some have had
// their turn.
constexpr std::size_t max_deferred = 4096;
// While jobs wait in the broker for their turn, a reserve waits no longer
// than this, so that the worker fetches them soon after their turn comes.
constexpr auto deferred_poll = 1s;
// A reserve that returns nothing in less than half its timeout (a broker
// that answers TIMED_OUT or DEADLINE_SOON at once) is followed by a pause:
// this long after the first, doubling after each further one, up to the
// most. It ends at the first reserve that gets a job or waits its time.
constexpr auto reserve_backoff_first = 100ms;
constexpr auto reserve_backoff_most = 1s;

// The jobs taken in one go, and what starting them will look like.
struct router::intake {
  std::vector<job_ptr> jobs;
  std::set<std::string> jnames; // of the jobs so far
  int starting = 0;             // jobs that start as soon as they are buried
  std::size_t held = 0;         // jobs that wait behind their jname
  bool queued = false;          // a job waits for a slot: the later ones too
  std::vector<std::pair<std::string, std::uint64_t>> deferred; // jname, id: to release (see defer)
  // False for a job taken over from another connection (take_over): the
  // router cannot release it, so it waits behind its jname even past max_waiting.
  bool may_send_back = true;
};

struct router::job_state {
  journal_entry entry;
  std::optional<job_request> request;
  std::string jname; // empty: no jname, runs without waiting for another job
  std::string live_output;  // output not yet sent as a progress reply
  bool live_queued = false; // in live_outbox_
  // Journaled, but whether the broker holds the job buried is not known: a
  // journal of an earlier life, or a bury whose answer was lost.
  bool unconfirmed = false;
  // The publisher connection that was open when the job was taken (0: none).
  // While that connection lasts the broker cannot have restarted, so the
  // job's id still names this job.
  std::uint64_t publisher_epoch = 0;
  // The journal append that recorded its latest state (see make_durable).
  std::uint64_t journal_sequence = 0;
  // The key of a signed job whose signature held: its replies are signed
  // with it. Empty: replies unsigned (an unsigned job, or a forged one).
  std::string reply_key_id;
};

namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// What went wrong, for the log: an error code's message, or the exception's
// text, which may quote what the broker sent.
std::string failure_text(const std::exception& ex) {
  if (auto* sys = dynamic_cast<const boost::system::system_error*>(&ex)) return sys->code().message();
  return loggable(ex.what());
}

// 1500 ms as "1.5", 2000 ms as "2": the exact value in the fewest digits.
std::string seconds_text(std::chrono::milliseconds ms) {
  return *render_number(std::to_string(ms.count()) + "e-3");
}

// The ErrCode and Message of a job refused for its signature (or for having
// none), before it is even parsed.
std::optional<job_refusal> signature_refusal(job_check check, const std::string& problem, bool require_signed) {
  switch (check) {
    case job_check::unsigned_job:
      if (!require_signed) return std::nullopt;
      return job_refusal{router_errcode::unsigned_job, "refused: this pool takes signed jobs only"};
    case job_check::good: return std::nullopt;
    case job_check::bad_signature: return job_refusal{router_errcode::bad_signature, "refused: bad signature: " + problem};
    case job_check::expired:
    case job_check::too_far: return job_refusal{router_errcode::expired, "refused: " + problem};
  }
  return std::nullopt;
}

// "job 7 jcreate jname=jail1", for the log (the command is a plain name).
std::string describe_job(std::uint64_t id, const std::optional<job_request>& req) {
  std::string s = "job " + std::to_string(id);
  if (req) {
    s += " " + req->command;
    if (req->jname) s += " jname=" + loggable(*req->jname);
  }
  return s;
}

} // namespace

std::vector<std::string> cbsd_environment(const config& cfg) {
  std::vector<std::string> env = {
      "PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin",
      "workdir=" + cfg.cbsdenv,
      "cbsd_workdir=" + cfg.cbsdenv,
      "NOINTER=1",
  };
  if (!cfg.cbsdcolor) env.push_back("NOCOLOR=1");
  return env;
}

router::router(asio::io_context& io, config cfg, std::shared_ptr<spdlog::logger> log, directory statedir)
    : io_(io),
      cfg_(std::move(cfg)),
      log_(std::move(log)),
      files_(cfg_.beanstalkd.logdir, cfg_.joblog_max_age_days, cfg_.joblog_max_files, cfg_.joblog_max_bytes),
      journal_(std::move(statedir)),
      runner_(io),
      worker_(io.get_executor()),
      publisher_(io.get_executor()),
      reply_limit_(reply_limit("", cfg_.max_reply_bytes)),
      inspector_(io.get_executor()),
      capacity_changed_(io.get_executor()),
      outbox_changed_(io.get_executor()),
      reserved_elsewhere_check_(io.get_executor()),
      worker_sleep_(io),
      publisher_sleep_(io),
      shutdown_timer_(io),
      prune_timer_(io),
      inspector_sleep_(io) {
  limits_.max_body_bytes = cfg_.max_body_bytes;
  // The replay memory lives beside the journal, in the statedir held open.
  if (!cfg_.job_keys.empty())
    replay_guard_ = std::make_unique<replay_guard>(journal_.state_directory().fd(),
                                                   static_cast<std::size_t>(cfg_.max_remembered_signatures), unix_now());
  choose_lookup_source();
}

// Runs on database_thread_ and hands the outcome back on the event loop
// (where the coroutine that waits for it resumes). Nothing but the read runs
// on that thread.
awaitable<database_read> router::read_database(std::string jname, bool want_vnc) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(database_read)>(
      [this, jname = std::move(jname), want_vnc](auto handler) mutable {
        asio::post(*database_thread_, [this, jname = std::move(jname), want_vnc, handler = std::move(handler)]() mutable {
          database_read read = database_->read(jname, want_vnc);
          asio::post(io_, [handler = std::move(handler), read = std::move(read)]() mutable {
            std::move(handler)(std::move(read));
          });
        });
      },
      asio::use_awaitable);
}

void router::choose_lookup_source() {
  if (cfg_.lookups == lookup_source::cbsd) {
    log_->info("Guid, DskGuid and Vnc: asked of cbsd (lookups \"cbsd\")");
    return;
  }
  auto database = std::make_unique<cbsd_database>(cfg_.cbsdenv);
  const std::optional<std::string> problem = database->check_inventory();
  if (!problem) {
    log_->info("Guid, DskGuid and Vnc: read from CBSD's databases ({})", loggable(database->inventory_path()));
    database_ = std::move(database);
  } else if (cfg_.lookups == lookup_source::database) {
    // Kept: each job reads again, and falls back to cbsd while it fails.
    log_->warn("Guid, DskGuid and Vnc: lookups \"database\", but {}; jobs ask cbsd while it is so",
               loggable(*problem));
    database_ = std::move(database);
  } else {
    log_->info("Guid, DskGuid and Vnc: asked of cbsd ({})", loggable(*problem));
  }
  if (database_) database_thread_ = std::make_unique<asio::thread_pool>(1);
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
  asio::co_spawn(io_, publisher_loop(), report("publisher"));
  asio::co_spawn(io_, watch_reserved_elsewhere(), report("inspector"));
  // The function object itself is spawned (co_spawn keeps it alive): the
  // coroutine of a lambda called in place would outlive its captures.
  asio::co_spawn(
      io_,
      [this]() -> awaitable<void> {
        while (!stopping_) {
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

// Jobs of an earlier life of the router. Recorded replies go out; the rest
// are checked against the broker before anything runs (confirm_jobs).
void router::recover() {
  std::vector<std::string> problems;
  std::vector<journal_entry> entries = journal_.load(&problems);
  for (const std::string& p : problems) log_->error("journal: {}", loggable(p));
  for (journal_entry& entry : entries) {
    auto job = std::make_shared<job_state>();
    job->entry = std::move(entry);
    // Taken before, so not refused now whatever its Expires says; its
    // replies are signed when its signature still holds.
    const opened_job opened = open_job(job->entry.body, cfg_.job_keys, 0, std::numeric_limits<std::int64_t>::max());
    if (opened.check == job_check::good) job->reply_key_id = opened.key_id;
    decode_result decoded = decode_job(peel_job(job->entry.body).job, limits_);
    job->request = decoded.job;
    if (job->request && job->request->jname) job->jname = *job->request->jname;
    in_flight_[job->entry.job_id] = job;
    if (job->entry.state == journal_state::finished && !job->entry.replied) {
      outbox_.push_back(job);
    } else {
      job->unconfirmed = true;
      unconfirmed_.push_back(job);
    }
  }
  if (!entries.empty()) log_->info("journal: {} jobs recovered from {}", entries.size(), journal_.dir());
}

// Settles each unconfirmed job with the broker. Buried and the same job: it
// is ours; a run that was going on has an unknown outcome, a job that had
// not started runs now. Not buried: the bury never happened, so cbsd never
// ran, and the job is simply reserved again. Gone: nothing to answer.
awaitable<void> router::confirm_jobs() {
  while (!unconfirmed_.empty()) {
    job_ptr job = unconfirmed_.front();
    const std::uint64_t id = job->entry.job_id;
    auto current = in_flight_.find(id);
    if (current == in_flight_.end() || current->second != job || !job->unconfirmed) {
      unconfirmed_.pop_front();
      continue;
    }
    std::optional<beanstalk::stats_map> stats = co_await worker_.stats_job(id);
    const bool buried = stats && stats->count("state") && stats->at("state") == "buried";
    // A job taken over is the journal's whatever the broker's state of it.
    const bool ours = (buried || job->entry.taken_over) && co_await still_in_broker(worker_, job->entry, nullptr);
    unconfirmed_.pop_front();
    job->unconfirmed = false;
    const std::string what = describe_job(id, job->request);
    if (!ours) {
      log_->info("{}: not buried in the broker as taken (never started, gone, or another job with its id); "
                 "the journal entry is dropped", what);
      forget(job);
      continue;
    }
    switch (job->entry.state) {
      case journal_state::running: {
        log_->warn("{}: was running when the router stopped; its outcome is unknown", what);
        reply r;
        r.job_id = id;
        r.err_code = router_errcode::interrupted;
        r.message = "bs_router: the router stopped while this job ran; its outcome is unknown";
        answer(job, std::move(r));
        break;
      }
      case journal_state::accepted:
        log_->info("{}: taken earlier and not started; it runs now", what);
        schedule(job);
        break;
      case journal_state::finished:
        if (job->entry.replied) {
          // Answered already: deleted once the connection holding it lets go.
          if (co_await worker_.remove(id)) forget(job);
          break;
        }
        outbox_.push_back(job);
        outbox_changed_.notify();
        break;
    }
  }
  start_ready_jobs();
}

// After each (re)connect of the worker: a connection the router gave up on
// may still hold a job reserved in the broker's eyes.
void router::look_for_reserved_elsewhere() {
  look_for_reserved_elsewhere_ = true;
  reserved_elsewhere_check_.notify();
  inspector_sleep_.cancel();
}

// Looks for jobs of the pool that the broker keeps reserved for a connection
// that is not the router's (see stuck_jobs.hpp), and takes over each one the
// broker keeps past its TTR. While some are still within their TTR it looks
// again once that has passed. Its own connection, closed when there is
// nothing to watch, so that the worker goes on reserving meanwhile.
awaitable<void> router::watch_reserved_elsewhere() {
  while (!stopping_) {
    if (!look_for_reserved_elsewhere_) {
      inspector_.close();
      co_await reserved_elsewhere_check_.wait();
      continue;
    }
    look_for_reserved_elsewhere_ = false;
    std::chrono::seconds look_again{0};
    try {
      if (!inspector_.is_open()) co_await connect(inspector_);
      const std::vector<reserved_elsewhere> found = co_await find_reserved_elsewhere(
          inspector_, cfg_.beanstalkd.tube, [this](std::uint64_t id) { return in_flight_.count(id) != 0; });
      metrics_.set_jobs_reserved_elsewhere(found.size());
      for (const reserved_elsewhere& job : found) {
        if (kept_past_ttr(job)) {
          if (!co_await take_over(job)) look_again = std::chrono::seconds(cfg_.beanstalkd.reconnect_timeout);
          continue;
        }
        if (reported_reserved_elsewhere_.insert(job.id).second)
          log_->warn("job {} of tube {} is reserved by a connection that is not the router's ({} s of its TTR of {} s "
                     "left); the router takes it over if the broker keeps it past its TTR",
                     job.id, cfg_.beanstalkd.tube, job.time_left, job.ttr);
        // time-left is in whole seconds: a second more, and it is clearly past.
        const std::chrono::seconds wait{job.time_left + 2};
        if (look_again.count() == 0 || wait < look_again) look_again = wait;
      }
    } catch (const std::exception& ex) {
      inspector_.close();
      log_->warn("looking for jobs of tube {} reserved elsewhere: {}; again in {} s", cfg_.beanstalkd.tube,
                 failure_text(ex), cfg_.beanstalkd.reconnect_timeout);
      look_again = std::chrono::seconds(cfg_.beanstalkd.reconnect_timeout);
    }
    if (look_again.count() > 0 && !stopping_) {
      inspector_.close();
      co_await sleep_on(inspector_sleep_, look_again);
      look_for_reserved_elsewhere_ = true;
    }
  }
  inspector_.close();
}

// Serves a job that the broker keeps reserved past its TTR for a connection
// that is not the router's, from its body, with the journal as its owner:
// beanstalkd itself should have given it out again at its TTR. That
// connection alone may bury or delete the broker's job, so the broker keeps
// it until it lets go; then the worker recognises it by id, age and body
// (is_new) and buries it, or deletes it once its reply is put. Its entry
// lasts until then, so it runs at most once. False when it could not be
// recorded (it is tried again later).
awaitable<bool> router::take_over(const reserved_elsewhere& stuck) {
  std::optional<beanstalk::job> peeked = co_await inspector_.peek(stuck.id);
  std::optional<beanstalk::stats_map> stats = co_await inspector_.stats_job(stuck.id);
  const bool still_kept = stats && stats->count("state") && stats->at("state") == "reserved" &&
                          stats->count("time-left") && stats->at("time-left").starts_with('-');
  // Gone, given back, or taken by the worker meanwhile: nothing to take over.
  if (!peeked || !still_kept || stopping_ || in_flight_.count(stuck.id)) co_return true;
  log_->warn("job {} of tube {} is reserved by a connection that is not the router's, and the broker keeps it "
             "{} s past its TTR of {} s; taken over from its body (reply to {}{})",
             stuck.id, cfg_.beanstalkd.tube, -stuck.time_left, stuck.ttr, cfg_.beanstalkd.reply_tube_prefix, stuck.id);
  intake batch;
  batch.may_send_back = false;
  try {
    take(std::move(*peeked), batch);
    batch.jobs.front()->entry.taken_over = true;
    save(batch.jobs.front());
    co_await make_durable(batch.jobs.front()->journal_sequence);
  } catch (const std::exception& ex) {
    log_->error("job {}: journal: {}; taken over later", stuck.id, loggable(ex.what()));
    for (const job_ptr& job : batch.jobs) forget(job);
    co_return false;
  }
  const job_ptr job = batch.jobs.front();
  reported_reserved_elsewhere_.erase(stuck.id);
  metrics_.job_taken_over();
  place(job);
  start_ready_jobs();
  for (const job_ptr& waiting : ready_) record_not_started(waiting);
  co_return true;
}

// After the reply of a job is put: whether the router is done with the
// broker's job (deleted, or gone). The broker may still keep a job taken
// over reserved for the other connection: then its entry stays, marked
// replied, and the worker deletes the job when it comes back (is_new).
awaitable<bool> router::done_with_broker_job(const job_ptr& job) {
  if (!job->entry.taken_over) co_return true;
  const std::uint64_t id = job->entry.job_id;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::optional<beanstalk::stats_map> stats = co_await publisher_.stats_job(id);
    if (!stats) co_return true; // deleted (by publish), or gone
    if (!stats->count("state") || stats->at("state") != "reserved") {
      if (co_await publisher_.remove(id)) co_return true; // given back, or buried by the worker: deletable
      continue;
    }
    if (!job->entry.taken_over) continue; // buried by the worker meanwhile: deletable now
    break;
  }
  // No co_await from the check above to here: the worker sees both or neither.
  job->entry.replied = true;
  try {
    save(job);
  } catch (const std::exception& ex) {
    log_->error("job {}: journal: {}", id, loggable(ex.what()));
  }
  log_->info("job {}: reply put; the broker keeps the job reserved for another connection, and it is deleted "
             "when it comes back", id);
  co_return false;
}

awaitable<void> router::connect(beanstalk::connection& conn) {
  conn.set_command_deadline(std::chrono::seconds(cfg_.beanstalkd.reconnect_timeout) + 5s);
  co_await conn.connect(cfg_.beanstalkd.host, cfg_.beanstalkd.port, 10s);
  beanstalk::stats_map stats = co_await conn.stats();
  // Whatever the broker claims, the reply stays within our own bound.
  auto claimed = stats.find("max-job-size");
  reply_limit_ = reply_limit(claimed != stats.end() ? claimed->second : std::string(), cfg_.max_reply_bytes);
  // reserve-job came with beanstalkd 1.12: without it, jobs over max_waiting
  // are not sent back (they could not be fetched in their turn).
  int major = 0, minor = 0;
  if (auto it = stats.find("version"); it != stats.end()) {
    const std::string& v = it->second;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), major);
    if (ec == std::errc() && end != v.data() + v.size() && *end == '.')
      std::from_chars(end + 1, v.data() + v.size(), minor);
  }
  broker_reserves_by_id_ = major > 1 || (major == 1 && minor >= 12);
  if (!broker_reserves_by_id_ && deferred_count_ > 0) {
    log_->warn("the broker has no reserve-job (beanstalkd before 1.12): the {} jobs sent back until their turn "
               "are taken as they come", deferred_count_);
    deferred_.clear();
    deferred_count_ = 0;
  }
}

bool router::can_take_more() const {
  if (stopping_ || running_ + ready_.size() >= static_cast<std::size_t>(cfg_.max_jobs)) return false;
  // Jobs over max_waiting go back to the broker (defer); without reserve-job
  // the router stops taking jobs instead.
  if (broker_reserves_by_id_) return deferred_count_ < max_deferred;
  return waiting_for_jname() <= static_cast<std::size_t>(cfg_.max_waiting);
}

// Whether a job of `jname` taken now would run or wait behind its jname
// without passing max_waiting (the jobs sent back keep to that too).
bool router::has_room(const std::string& jname) const {
  if (busy_jnames_.count(jname)) return waiting_for_jname() < static_cast<std::size_t>(cfg_.max_waiting);
  return running_ + ready_.size() < static_cast<std::size_t>(cfg_.max_jobs);
}

// The jname whose first job sent back has its turn now, if any. The jnames
// take turns: the search starts after the one served last.
const std::string* router::next_deferred() const {
  if (stopping_ || !broker_reserves_by_id_) return nullptr;
  auto start = deferred_.upper_bound(last_deferred_turn_);
  for (auto it = start; it != deferred_.end(); ++it)
    if (has_room(it->first)) return &it->first;
  for (auto it = deferred_.begin(); it != start; ++it)
    if (has_room(it->first)) return &it->first;
  return nullptr;
}

std::size_t router::waiting_for_jname() const {
  std::size_t n = 0;
  for (const auto& [jname, queue] : busy_jnames_) n += queue.size();
  return n;
}

awaitable<void> router::worker_loop() {
  int failures = 0;
  while (!stopping_) {
    bool failed = false;
    try {
      co_await connect(worker_);
      co_await worker_.watch(cfg_.beanstalkd.tube);
      co_await worker_.ignore("default");
      log_->info("connected to {}; watching tube {}", cfg_.beanstalkd.uri, cfg_.beanstalkd.tube);
      broker_connected_ = true;
      failures = 0;
      co_await confirm_jobs();
      look_for_reserved_elsewhere();
      while (!stopping_) co_await take_next();
    } catch (const std::exception& ex) {
      // One failure path: broker errors, and the journal failing to record a
      // job (the job was not buried, so the broker gives it back).
      worker_.close();
      broker_connected_ = false;
      if (stopping_) break;
      ++failures;
      metrics_.reconnect();
      log_->warn("serving {}: {}; reconnecting in {} s (attempt {})", cfg_.beanstalkd.uri,
                 failure_text(ex), cfg_.beanstalkd.reconnect_timeout, failures);
      failed = true;
    }
    if (failed) co_await sleep_on(worker_sleep_, std::chrono::seconds(cfg_.beanstalkd.reconnect_timeout));
  }
  worker_.close();
  broker_connected_ = false;
  worker_stopped_ = true;
  check_done();
}

// One step of the worker: a job sent back whose turn has come, or the next
// job of the tube when there is room for it, or a wait for room.
awaitable<void> router::take_next() {
  if (const std::string* jname = next_deferred()) {
    const std::string name = *jname;
    last_deferred_turn_ = name;
    const std::uint64_t id = deferred_.at(name).front().id;
    if (std::optional<beanstalk::job> job = co_await worker_.reserve_job(id)) co_await accept(std::move(*job));
    // Still first: the broker no longer has it for us (deleted, taken by
    // another consumer), or its id now names a job of another jname.
    auto queue = deferred_.find(name);
    if (queue != deferred_.end() && queue->second.front().id == id) {
      log_->warn("job {}: sent back to the broker until its turn, and not found there in its turn; "
                 "no longer waited for", id);
      queue->second.pop_front();
      --deferred_count_;
      if (queue->second.empty()) deferred_.erase(queue);
    }
    co_return;
  }
  if (!can_take_more()) {
    co_await capacity_changed_.wait();
    co_return;
  }
  std::chrono::seconds timeout(cfg_.beanstalkd.reserve_timeout);
  if (deferred_count_ > 0) timeout = std::min<std::chrono::seconds>(timeout, deferred_poll);
  const auto asked = std::chrono::steady_clock::now();
  std::optional<beanstalk::job> job = co_await worker_.reserve_with_timeout(timeout);
  if (job || 2 * (std::chrono::steady_clock::now() - asked) >= timeout) {
    reserve_backoff_ = {};
    if (job) co_await accept(std::move(*job));
    co_return;
  }
  // Nothing, at once: a broker answering like that must not make a busy loop.
  reserve_backoff_ = reserve_backoff_ == decltype(reserve_backoff_){}
                         ? std::chrono::steady_clock::duration(reserve_backoff_first)
                         : std::min<std::chrono::steady_clock::duration>(2 * reserve_backoff_, reserve_backoff_most);
  co_await sleep_on(worker_sleep_, reserve_backoff_);
}

// Whether the broker's job `entry.job_id` is the job the entry was made for.
// A broker restarted without its binlog hands out the same ids again, so the
// id alone proves nothing: the body must match, and the job must have been
// put before the router took it. `body` is the job's body when the caller
// has it already (else it is peeked).
awaitable<bool> router::still_in_broker(beanstalk::connection& conn, const journal_entry& entry,
                                        const std::string* body) {
  std::optional<beanstalk::stats_map> stats = co_await conn.stats_job(entry.job_id);
  if (!stats) co_return false;
  std::int64_t age = 0;
  try {
    age = std::stoll(stats->at("age"));
  } catch (const std::exception&) {
    co_return false;
  }
  if (unix_now() - age > entry.reserved_at + age_slack_seconds) co_return false;
  if (body) co_return *body == entry.body;
  std::optional<beanstalk::job> peeked = co_await conn.peek(entry.job_id);
  co_return peeked && peeked->body == entry.body;
}

// Whether job `reserved` is new to the router. A job it holds already is
// dealt with here (buried again, or released for later).
awaitable<bool> router::is_new(const beanstalk::job& reserved) {
  const std::uint64_t id = reserved.id;
  if (auto old = in_flight_.find(id);
      old != in_flight_.end() && old->second->unconfirmed && !old->second->entry.taken_over) {
    forget(old->second); // its bury never happened: this is the same job, not yet run
  }
  auto old = in_flight_.find(id);
  if (old == in_flight_.end()) co_return true;
  // Either the same job back again (an operator kicked it) or a broker that
  // restarted without its binlog and reuses ids.
  const job_ptr held = old->second;
  if (co_await still_in_broker(worker_, held->entry, &reserved.body)) {
    if (!held->entry.replied) {
      log_->warn("job {} came back while the router holds it; buried again, not run twice", id);
      co_await worker_.bury(id, 0);
    }
    if (held->entry.replied) {
      // Taken over, and answered while another connection held it.
      log_->info("job {} came back after the router took it over and put its reply; deleted", id);
      co_await worker_.remove(id);
      forget(held);
    } else if (held->entry.taken_over) {
      held->entry.taken_over = false; // buried for the router now, as any job it holds
      try {
        save(held);
      } catch (const std::exception& ex) {
        log_->error("job {}: journal: {}", id, loggable(ex.what()));
      }
    }
    co_return false;
  }
  if (held->entry.state != journal_state::finished) {
    // The earlier job with this id is still being served: take the new one
    // once that is done.
    log_->warn("job id {} reused by the broker while the earlier job runs; released for later", id);
    co_await worker_.release(id, 0, static_cast<std::uint32_t>(cfg_.beanstalkd.reconnect_timeout));
    co_return false;
  }
  log_->warn("job id {} reused by the broker: the earlier job is gone, its reply is dropped", id);
  forget(held);
  co_return true;
}

// Records a reserved job in memory and appends it to the journal (not yet
// synced). A job that will start as soon as it is buried is recorded as
// running straight away: one journal write fewer on the common path.
void router::take(beanstalk::job reserved, intake& batch) {
  const std::uint64_t id = reserved.id;
  const std::int64_t now = unix_now();
  const opened_job opened = open_job(reserved.body, cfg_.job_keys, now, cfg_.max_signed_job_lifetime);
  job_check check = opened.check;
  // A job sent back until its jname had room (defer) had not expired when it
  // came first: the wait since is the router's doing.
  if (check == job_check::expired &&
      std::any_of(deferred_.begin(), deferred_.end(), [id](const auto& queue) {
        return std::any_of(queue.second.begin(), queue.second.end(), [id](const deferred_job& d) { return d.id == id; });
      }))
    check = job_check::good;
  // The one place a job is refused: its signature (or the lack of one), bad
  // input, not allowed on this pool, or a replay.
  std::optional<job_refusal> refusal = signature_refusal(check, opened.problem, cfg_.require_signed_jobs);
  decode_result decoded = refusal ? decode_result{} : decode_job(opened.job, limits_);
  if (!refusal && !decoded.job) refusal = job_refusal{router_errcode::bad_input, std::move(decoded.error)};
  if (!refusal) refusal = check_job(*decoded.job, cfg_.policy);
  if (refusal) decoded.job.reset();
  if (batch.may_send_back && decoded.job && decoded.job->jname && defer(*decoded.job->jname, id, batch)) return;
  // Remembered only once it is really taken (not sent back until its turn).
  if (decoded.job && check == job_check::good && (refusal = admit_signed(opened, id, now))) decoded.job.reset();
  auto job = std::make_shared<job_state>();
  if (check != job_check::bad_signature) job->reply_key_id = opened.key_id;
  job->entry.job_id = id;
  job->entry.body = std::move(reserved.body);
  job->entry.reserved_at = now;
  job->publisher_epoch = publisher_.is_open() ? publisher_epoch_ : 0;
  job->request = std::move(decoded.job);
  in_flight_[id] = job;
  batch.jobs.push_back(job);

  if (refusal) {
    log_->warn("job {}: refused: {}", id, loggable(refusal->reason));
    reply r;
    r.job_id = id;
    r.err_code = refusal->err_code;
    r.message = refusal->message();
    job->entry.state = journal_state::finished;
    job->entry.result = r;
  } else {
    if (job->request->jname) job->jname = *job->request->jname;
    // The same decision schedule() takes once the batch is buried, counting
    // the jobs before this one in the batch.
    const bool held = !job->jname.empty() && (busy_jnames_.count(job->jname) || batch.jnames.count(job->jname));
    const bool starts_now = !held && !batch.queued && ready_.empty() &&
                            running_ + batch.starting < cfg_.max_jobs;
    if (starts_now) ++batch.starting;
    if (held) ++batch.held;
    if (!held && !starts_now) batch.queued = true;
    if (!job->jname.empty()) batch.jnames.insert(job->jname);
    job->entry.state = starts_now ? journal_state::running : journal_state::accepted;
  }
  save(job);
}

// A signed job whose signature holds is taken once: the replay memory says
// whether this one was taken before (under another job id).
std::optional<job_refusal> router::admit_signed(const opened_job& opened, std::uint64_t id, std::int64_t now) {
  switch (replay_guard_->admit(opened.hmac, opened.expires, std::to_string(id), now)) {
    case replay_guard::verdict::fresh:
    case replay_guard::verdict::same_job: return std::nullopt;
    case replay_guard::verdict::replayed:
      return job_refusal{router_errcode::replayed, "refused: replayed: this signed job was taken already"};
    case replay_guard::verdict::full:
      return job_refusal{router_errcode::replay_memory_full,
                         "refused: " + std::to_string(replay_guard_->max_entries()) +
                             " signed jobs not yet expired are remembered (max_remembered_signatures); try again later"};
  }
  return std::nullopt;
}

// The key a job's replies are signed with; nullptr for an unsigned job.
const key_ring::value_type* router::reply_key(const job_state& job) const {
  auto key = job.reply_key_id.empty() ? cfg_.job_keys.end() : cfg_.job_keys.find(job.reply_key_id);
  return key == cfg_.job_keys.end() ? nullptr : &*key;
}

// What is left of `budget` for the reply's JSON once a signature header, if
// any, has its place.
std::size_t router::json_room(const job_state& job, std::size_t budget) const {
  if (!reply_key(job)) return budget;
  return budget > 2 * max_signed_header_bytes ? budget - max_signed_header_bytes : budget;
}

// The body of a reply: signed with the job's key when the job was signed.
std::string router::reply_body(const job_state& job, const reply& r, std::size_t budget) const {
  const key_ring::value_type* key = reply_key(job);
  if (!key) return encode_reply(r, budget);
  return sign_reply(key->first, key->second, std::to_string(r.job_id), encode_reply(r, json_room(job, budget)));
}

// Whether job `id` of `jname`, just reserved, goes back to the broker rather
// than being taken: it would wait behind its jname with max_waiting jobs
// waiting already, or jobs of its jname that came before it are back in the
// broker for that reason. Those are remembered by id, in the order the
// router first got them, and only the first of them is taken when there is
// room: so the order per jname holds however often a job comes back. The
// release itself is left to send_back, once the jobs taken are buried.
bool router::defer(const std::string& jname, std::uint64_t id, intake& batch) {
  if (!broker_reserves_by_id_) return false;
  const bool busy = busy_jnames_.count(jname) || batch.jnames.count(jname);
  const bool room = !busy || waiting_for_jname() + batch.held < static_cast<std::size_t>(cfg_.max_waiting);
  auto queue = deferred_.find(jname);
  if (queue == deferred_.end()) {
    if (room) return false;
    queue = deferred_.emplace(jname, std::deque<deferred_job>{}).first;
  } else if (queue->second.front().id == id && room) {
    queue->second.pop_front(); // its turn
    --deferred_count_;
    if (queue->second.empty()) deferred_.erase(queue);
    return false;
  }
  auto& waiting = queue->second;
  if (std::none_of(waiting.begin(), waiting.end(), [id](const deferred_job& d) { return d.id == id; })) {
    waiting.push_back(deferred_job{id, std::nullopt});
    ++deferred_count_;
    log_->info("job {}: {} jobs wait behind its jname; sent back to the broker until its turn ({} sent back)",
               id, cfg_.max_waiting, deferred_count_);
  }
  batch.deferred.emplace_back(jname, id);
  return true;
}

// Releases the jobs of `batch` that defer() sent back, with their own
// priority and a delay.
awaitable<void> router::send_back(const intake& batch) {
  for (const auto& [jname, id] : batch.deferred) {
    auto queue = deferred_.find(jname);
    if (queue == deferred_.end()) continue;
    auto it = std::find_if(queue->second.begin(), queue->second.end(),
                           [id = id](const deferred_job& d) { return d.id == id; });
    if (it == queue->second.end()) continue;
    if (!it->priority) {
      std::optional<beanstalk::stats_map> stats = co_await worker_.stats_job(id);
      std::uint32_t priority = 0;
      if (stats && stats->count("pri")) {
        const std::string& pri = stats->at("pri");
        std::from_chars(pri.data(), pri.data() + pri.size(), priority);
      }
      it->priority = priority;
    }
    try {
      co_await worker_.release(id, *it->priority, deferral_delay_seconds);
    } catch (const boost::system::system_error& ex) {
      // Its TTR ran out first: the broker has made it ready again already.
      if (ex.code() != beanstalk::errc::not_found) throw;
    }
  }
}

// Takes a reserved job, and with it the jobs already waiting in the tube for
// the other free slots: they are all recorded with one fdatasync and buried
// with one round trip. The request for the others goes out before the
// journal is synced, so that with nothing waiting it costs no time.
awaitable<void> router::accept(beanstalk::job reserved) {
  intake batch;
  // Every job taken needs either a free slot or a place among the jobs
  // waiting for their jname.
  const auto free_slots = static_cast<std::ptrdiff_t>(cfg_.max_jobs - running_) -
                          static_cast<std::ptrdiff_t>(ready_.size());
  // (Without reserve-job; with it, jobs over max_waiting go back: defer.)
  const auto waiting_places = broker_reserves_by_id_ ? static_cast<std::ptrdiff_t>(max_intake)
                                                     : static_cast<std::ptrdiff_t>(cfg_.max_waiting) + 1 -
                                                           static_cast<std::ptrdiff_t>(waiting_for_jname());
  const auto room = std::min({free_slots, waiting_places, static_cast<std::ptrdiff_t>(max_intake)});
  const std::size_t more = room > 1 ? static_cast<std::size_t>(room - 1) : 0;

  try {
    if (co_await is_new(reserved)) take(std::move(reserved), batch);
    if (more > 0) co_await worker_.request_ready(more);
    if (!batch.jobs.empty()) co_await make_durable(batch.jobs.back()->journal_sequence);
    if (more > 0) {
      const std::size_t recorded = batch.jobs.size();
      for (beanstalk::job& job : co_await worker_.collect_ready())
        if (co_await is_new(job)) take(std::move(job), batch);
      if (batch.jobs.size() > recorded) co_await make_durable(batch.jobs.back()->journal_sequence);
    }
    // Signed jobs taken are remembered on disk before they are buried (before
    // they can run): a replay is refused after a crash too.
    if (replay_guard_ && replay_guard_->unsynced()) replay_guard_->sync();
  } catch (...) {
    // Not recorded, not buried: the broker gives them back.
    for (const job_ptr& job : batch.jobs) forget(job);
    throw;
  }
  if (batch.jobs.empty()) {
    co_await send_back(batch);
    co_return;
  }

  std::vector<std::uint64_t> ids;
  for (const job_ptr& job : batch.jobs) ids.push_back(job->entry.job_id);
  std::vector<bool> buried;
  std::exception_ptr bury_failure;
  try {
    buried = co_await worker_.bury_each(ids, 0);
  } catch (...) {
    bury_failure = std::current_exception();
  }
  buried.resize(batch.jobs.size(), false);

  std::vector<job_ptr> unsure;
  for (std::size_t i = 0; i < batch.jobs.size(); ++i) {
    const job_ptr& job = batch.jobs[i];
    if (!buried[i]) {
      unsure.push_back(job);
    } else {
      place(job);
    }
  }
  start_ready_jobs();
  // A slot counted on above may have gone meanwhile to a job released from
  // behind its jname: a job still waiting has not started, and says so.
  for (const job_ptr& job : ready_) record_not_started(job);
  if (unsure.empty()) {
    co_await send_back(batch);
    co_return;
  }

  // The broker may or may not have buried these before the connection
  // failed, or gave them back (NOT_FOUND: their TTR ran out first): nothing
  // of theirs runs until the next connection finds out (confirm_jobs).
  for (const job_ptr& job : unsure) {
    job->unconfirmed = true;
    unconfirmed_.push_back(job);
    record_not_started(job);
  }
  try {
    journal_.sync();
  } catch (const std::exception& ex) {
    log_->error("journal: {}", loggable(ex.what()));
  }
  if (bury_failure) std::rethrow_exception(bury_failure);
  throw boost::system::system_error(make_error_code(beanstalk::errc::not_found), "bury");
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
    log_->error("job {}: journal: {}", job->entry.job_id, loggable(ex.what()));
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

// A job just taken, recorded and held: a refused one (bad input, not
// allowed, its signature) has its reply already and goes to the outbox; any
// other waits for its jname and a slot.
void router::place(const job_ptr& job) {
  if (job->entry.state == journal_state::finished) {
    metrics_.job_finished("bad_input", -1);
    outbox_.push_back(job);
    outbox_changed_.notify();
  } else {
    schedule(job);
  }
}

void router::schedule(const job_ptr& job) {
  if (!job->jname.empty()) {
    auto busy = busy_jnames_.find(job->jname);
    if (busy != busy_jnames_.end()) {
      busy->second.push_back(job); // in the order the jobs were put
      return;
    }
    busy_jnames_[job->jname]; // from now on, this jname is busy
  }
  ready_.push_back(job);
}

void router::start_ready_jobs() {
  while (!stopping_ && !ready_.empty() && running_ < cfg_.max_jobs) {
    job_ptr job = ready_.front();
    ready_.pop_front();
    ++running_;
    spawn_reported(io_.get_executor(), execute(job), log_failure(), describe_job(job->entry.job_id, job->request));
  }
}

awaitable<std::optional<std::string>> router::look_up(const std::vector<std::string>& args,
                                                      std::function<void(std::string_view)> stderr_sink) {
  process_spec spec;
  spec.argv.push_back(cfg_.cbsd_path);
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.env = cbsd_environment(cfg_);
  spec.cwd = cfg_.cbsdenv;
  spec.stderr_sink = std::move(stderr_sink);
  spec.capture_limit = lookup_capture_limit;
  spec.timeout = lookup_timeout;
  spec.kill_grace = std::chrono::seconds(cfg_.kill_grace);
  process_result result = co_await runner_.run(std::move(spec));
  if (result.start_failed || result.timed_out || result.stdout_truncated) co_return std::nullopt;
  co_return printed_value(result.exit_code, result.captured_stdout);
}

namespace {
// Closes a file descriptor when the run is over, however it ends.
struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

// Tells the live output watcher that the run is over, however it ends: the
// descriptor it reads is closed right after.
struct run_over_flag {
  std::shared_ptr<bool> over = std::make_shared<bool>(false);
  ~run_over_flag() { *over = true; }
};

// One output stream of a run as the router drains it from cbsd: written into
// the job's file (capped there), and its beginning kept for the reply. Only
// what was read is held, never more than the reply can carry.
struct run_output {
  run_output(int fd, std::string path, std::uint64_t cap, std::size_t head_limit)
      : file(fd, std::move(path), cap), head_limit(head_limit) {}

  void append(std::string_view data) noexcept {
    file.append(data);
    try {
      if (head.size() < head_limit) head.append(data.substr(0, head_limit - head.size()));
    } catch (const std::exception&) {
      head_limit = head.size(); // out of memory: the reply carries what it has
    }
  }
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view data) { append(data); };
  }

  capped_output file;
  std::string head;
  std::size_t head_limit;
};
} // namespace

awaitable<void> router::execute(job_ptr job) {
  const std::uint64_t id = job->entry.job_id;
  const std::string what = describe_job(id, job->request);
  reply r;
  r.job_id = id;
  try {
    r = co_await run_cbsd(job);
  } catch (const std::exception& ex) {
    // The router could not run the job (disk full, out of fds): say so
    // rather than leave the controller waiting.
    log_->error("{}: {}", what, loggable(ex.what()));
    r.err_code = router_errcode::start_failed;
    r.message = std::string("bs_router: the job could not be run: ") + ex.what();
  }
  log_->info("{}: finished, ErrCode {}, {:.3f} s", what, r.err_code, std::max(0.0, r.duration_seconds));
  finish_run(job);
  answer(job, std::move(r));
}

awaitable<reply> router::run_cbsd(const job_ptr& job) {
  const std::uint64_t id = job->entry.job_id;
  const job_request& request = *job->request;
  if (job->entry.state != journal_state::running) {
    job->entry.state = journal_state::running;
    save(job);
    co_await make_durable(job->journal_sequence);
  }

  std::vector<std::string> argv = request.argv(cfg_.cbsd_path);
  files_.write_command(id, argv);
  fd_closer out_fd{files_.open_out(id)};
  fd_closer err_fd{files_.open_err(id)};
  // cbsd writes into pipes the router drains into the files, so that what a
  // job keeps on disk is capped as it is written, and live output reads the
  // very descriptor written to. The reply's texts are kept as they come.
  run_output out(out_fd.fd, files_.out_path(id), cfg_.joblog_max_output_bytes, reply_limit_);
  run_output err(err_fd.fd, files_.err_path(id), cfg_.joblog_max_output_bytes, reply_limit_);

  const std::chrono::milliseconds timeout = time_limit(request, cfg_.job_timeout);

  process_spec spec;
  spec.argv = std::move(argv);
  spec.env = cbsd_environment(cfg_);
  spec.cwd = cfg_.cbsdenv;
  spec.stdout_sink = out.sink();
  spec.stderr_sink = err.sink();
  spec.timeout = timeout;
  spec.kill_grace = std::chrono::seconds(cfg_.kill_grace);

  const std::string what = describe_job(id, job->request);
  log_->info("{}: started", what);
  process_result result;
  {
    run_over_flag run_over;
    if (cfg_.progress)
      spawn_reported(io_.get_executor(), watch_output(job, out_fd.fd, run_over.over), log_failure(),
                     describe_job(id, job->request) + ": live output");
    result = co_await runner_.run(std::move(spec));
  }

  reply r;
  r.job_id = id;
  std::string note;
  if (result.start_failed) {
    r.err_code = router_errcode::start_failed;
    note = "bs_router: cbsd could not be started: " + result.start_error + "\n";
  } else if (result.timed_out) {
    r.err_code = router_errcode::timed_out;
    note = "bs_router: timed out after " + seconds_text(timeout) + " s; cbsd was killed\n";
  } else if (result.term_signal != 0) {
    r.err_code = router_errcode::killed;
    note = "bs_router: cbsd was killed by signal " + std::to_string(result.term_signal) + "\n";
  } else {
    r.err_code = result.exit_code;
  }

  const std::vector<lookup> lookups = result.start_failed ? std::vector<lookup>{} : lookups_for(request);
  std::optional<lookup_values> from_database;
  if (!lookups.empty() && database_) {
    // Read once the run has ended; no other job of this jname runs meanwhile.
    // On a thread of its own: opening a database costs file system work, and
    // a read may wait out the busy timeout; the event loop keeps serving.
    database_read read = co_await read_database(*request.jname, request.command == "bstart");
    if (read.values)
      from_database = std::move(read.values);
    else if (database_problems_logged_.insert(read.problem).second)
      log_->warn("{}: Guid, DskGuid and Vnc asked of cbsd: {} ({}); logged once for this cause", what,
                 to_string(read.problem), loggable(read.detail));
  }
  if (from_database) {
    r.guid = std::move(from_database->guid);
    r.dsk_guid = std::move(from_database->dsk_guid);
    r.vnc = std::move(from_database->vnc);
  } else if (!result.start_failed) {
    std::optional<std::string> guid, dsk_guid, vnc_bind, vnc_port;
    for (const lookup& l : lookups) {
      std::optional<std::string> value = co_await look_up(l.args, err.sink());
      switch (l.field) {
        case lookup_field::guid: guid = value; break;
        case lookup_field::dsk_guid: dsk_guid = value; break;
        case lookup_field::vnc_bind: vnc_bind = value; break;
        case lookup_field::vnc_port: vnc_port = value; break;
      }
    }
    if (guid) r.guid = *guid;
    if (dsk_guid) r.dsk_guid = *dsk_guid;
    r.vnc = vnc_address(vnc_bind, vnc_port);
  }

  // The reply carries the beginnings; the files keep up to their cap.
  r.message = note + out.head;
  r.message_bytes = note.size() + out.file.received();
  r.stderr_text = std::move(err.head);
  r.stderr_bytes = err.file.received();
  r.duration_seconds = std::chrono::duration<double>(result.elapsed).count();
  for (const run_output* o : {&out, &err})
    if (!o->file.error().empty()) log_->warn("{}: {}; the rest of its output is not kept", what, o->file.error());
  try {
    files_.add_job(id);
  } catch (const std::exception& ex) {
    log_->warn("counting the files of {}: {}", what, loggable(ex.what()));
  }
  co_return r;
}

void router::finish_run(const job_ptr& job) {
  --running_;
  if (!job->jname.empty()) {
    auto busy = busy_jnames_.find(job->jname);
    if (busy != busy_jnames_.end()) {
      if (busy->second.empty()) {
        busy_jnames_.erase(busy);
      } else {
        ready_.push_back(busy->second.front());
        busy->second.pop_front();
      }
    }
  }
  start_ready_jobs();
  capacity_changed_.notify();
}

namespace {
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

std::string router::render_metrics() {
  // Gauges are read off the router's state when asked, not kept in step.
  metrics_.set_jobs_running(static_cast<std::size_t>(running_));
  metrics_.set_jobs_waiting(ready_.size() + waiting_for_jname());
  metrics_.set_replies_waiting(outbox_.size());
  metrics_.set_broker_connected(broker_connected_);
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
    log_->error("job {}: journal: {}", job->entry.job_id, loggable(ex.what()));
  }
  outbox_.push_back(job);
  outbox_changed_.notify();
}

void router::forget(const job_ptr& job) {
  try {
    journal_.remove(job->entry.job_id);
  } catch (const std::exception& ex) {
    // Left in the journal: the next start finds its job gone and drops it.
    log_->error("job {}: journal: {}", job->entry.job_id, loggable(ex.what()));
  }
  auto it = in_flight_.find(job->entry.job_id);
  if (it != in_flight_.end() && it->second == job) in_flight_.erase(it);
}

// Puts one reply. Returns false when the job was not answered here because it
// is gone from the broker. Throws on connection failures.
awaitable<bool> router::publish(const job_ptr& job) {
  const std::uint64_t id = job->entry.job_id;
  // The reply goes out only while the job it answers is still in the broker:
  // after a broker restart without binlog the id may name somebody else's job.
  // Asking costs two round trips, needless while the connection that was
  // open when the job was taken still is.
  const bool same_broker_life = job->publisher_epoch != 0 && job->publisher_epoch == publisher_epoch_;
  if (!same_broker_life && !co_await still_in_broker(publisher_, job->entry, nullptr)) {
    log_->warn("job {} is no longer in the broker; its reply is dropped (output kept in {})", id, files_.dir());
    co_return false;
  }
  co_await publisher_.use(cfg_.beanstalkd.reply_tube_prefix + std::to_string(id));
  // The reply must be on disk before it is put. Waiting only now lets the
  // next job, taken while `use` went to the broker, share the fdatasync.
  try {
    co_await make_durable(job->journal_sequence);
  } catch (const std::exception& ex) {
    // The reply still goes out from memory; only a crash before that loses it.
    log_->error("job {}: journal: {}", id, loggable(ex.what()));
  }
  std::size_t budget = reply_limit_;
  for (;;) {
    try {
      co_await publisher_.put(1, 0, static_cast<std::uint32_t>(cfg_.beanstalkd.publish_timeout),
                              reply_body(*job, *job->entry.result, budget));
      break;
    } catch (const boost::system::system_error& ex) {
      // The broker's limit may be lower than it said (or changed): shrink.
      if (ex.code() != beanstalk::errc::job_too_big || budget <= 1024) throw;
      budget /= 2;
    }
  }
  co_await publisher_.remove(id);
  co_return true;
}

// Sends what cbsd writes while it runs, as replies with Progress below 100.
// Output that arrives faster than the broker takes it is joined into the next
// reply, so each job has at most one progress reply waiting at any time.
awaitable<void> router::watch_output(job_ptr job, int fd, std::shared_ptr<bool> run_over) {
  // Reads the descriptor the run's output is written to, never its path: the
  // file may have been replaced meanwhile (by a link to something else).
  asio::steady_timer tick(io_);
  std::uint64_t offset = 0;
  std::array<char, 16 * 1024> chunk;
  while (!*run_over) {
    co_await sleep_on(tick, live_output_interval);
    if (*run_over) break;
    // At most half a reply waits per job; what does not fit is read later.
    const std::size_t limit = reply_limit_ / 2;
    bool added = false;
    while (job->live_output.size() < limit) {
      const std::size_t room = std::min(chunk.size(), limit - job->live_output.size());
      const ssize_t n = ::pread(fd, chunk.data(), room, static_cast<off_t>(offset));
      if (n <= 0) break;
      // A character split by the read waits for its rest, read next time.
      const std::size_t whole = fitting_prefix(std::string_view(chunk.data(), static_cast<std::size_t>(n)),
                                               std::numeric_limits<std::size_t>::max());
      if (whole == 0) break;
      offset += whole;
      job->live_output.append(chunk.data(), whole);
      added = true;
    }
    if (added && !job->live_queued) {
      job->live_queued = true;
      live_outbox_.push_back(job);
      outbox_changed_.notify();
    }
  }
}

awaitable<void> router::publish_live_output(const job_ptr& job) {
  reply r;
  r.job_id = job->entry.job_id;
  r.progress = live_output_progress;
  r.duration_seconds = -1;
  // As much as fits whole; the rest goes in the next one, so nothing is cut.
  const std::size_t room = json_room(*job, reply_limit_);
  const std::size_t fixed = encode_reply(r, room).size();
  const std::size_t taken = fitting_prefix(job->live_output, room > fixed ? room - fixed : 0);
  r.message = job->live_output.substr(0, std::max<std::size_t>(taken, 1));
  co_await publisher_.use(cfg_.beanstalkd.reply_tube_prefix + std::to_string(r.job_id));
  co_await publisher_.put(1, 0, static_cast<std::uint32_t>(cfg_.beanstalkd.publish_timeout),
                          reply_body(*job, r, reply_limit_));
  job->live_output.erase(0, r.message.size());
}

// Each new publisher connection starts a new epoch: jobs taken before it may
// belong to an earlier life of the broker.
awaitable<void> router::open_publisher() {
  if (publisher_.is_open()) co_return;
  co_await connect(publisher_);
  ++publisher_epoch_;
}

awaitable<void> router::publisher_loop() {
  for (;;) {
    if (!live_outbox_.empty()) {
      // Progress first: a job's final reply is queued only after its last
      // progress reply, so the order on its reply tube holds.
      job_ptr job = live_outbox_.front();
      bool failed = false;
      try {
        co_await open_publisher();
        co_await publish_live_output(job);
        live_outbox_.pop_front();
        job->live_queued = false;
        if (!job->live_output.empty()) {
          job->live_queued = true;
          live_outbox_.push_back(job);
        }
      } catch (const std::exception&) {
        publisher_.close(); // the final reply's path logs the outage
        failed = true;
      }
      if (failed) co_await sleep_on(publisher_sleep_, std::chrono::seconds(cfg_.beanstalkd.reconnect_timeout));
      continue;
    }
    if (outbox_.empty()) {
      if (stopping_ && running_ == 0) break;
      co_await outbox_changed_.wait();
      continue;
    }
    job_ptr job = outbox_.front();
    auto current = in_flight_.find(job->entry.job_id);
    if (current == in_flight_.end() || current->second != job) {
      outbox_.pop_front(); // replaced by a newer job with the same id
      continue;
    }
    bool failed = false;
    try {
      co_await open_publisher();
      const bool answered = co_await publish(job);
      if (publisher_failing_) {
        log_->info("broker {} reachable again; putting {} waiting replies", cfg_.beanstalkd.uri, outbox_.size());
        publisher_failing_ = false;
      }
      if (!answered || co_await done_with_broker_job(job)) forget(job);
      if (!outbox_.empty() && outbox_.front() == job) outbox_.pop_front();
    } catch (const std::exception& ex) {
      publisher_.close();
      if (!publisher_failing_) {
        // Once, not per attempt: the worker already logs each reconnect.
        log_->warn("cannot put the reply of job {}: {}; {} replies wait in the journal until the broker is back",
                   job->entry.job_id, failure_text(ex), outbox_.size());
        publisher_failing_ = true;
      }
      failed = true;
    }
    if (failed) co_await sleep_on(publisher_sleep_, std::chrono::seconds(cfg_.beanstalkd.reconnect_timeout));
  }
  publisher_.close();
  check_done();
}

void router::request_stop() {
  if (stopping_) return;
  stopping_ = true;
  log_->info("stopping: no more jobs taken; {} running, {} replies to put", running_, outbox_.size());
  worker_.close();
  worker_sleep_.cancel();
  prune_timer_.cancel();
  inspector_sleep_.cancel();
  reserved_elsewhere_check_.notify();
  // Jobs that never got a slot did not run: the next start runs them.
  for (const job_ptr& job : ready_) record_not_started(job);
  try {
    journal_.sync();
  } catch (const std::exception& ex) {
    log_->error("journal: {}", loggable(ex.what()));
  }
  capacity_changed_.notify();
  outbox_changed_.notify();
  shutdown_timer_.expires_after(std::chrono::seconds(cfg_.shutdown_timeout));
  shutdown_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || done_) return;
    log_->warn("shutdown_timeout passed: {} jobs still running and {} replies unsent stay in the journal",
               running_, outbox_.size());
    runner_.terminate_all();
    done_ = true;
    if (on_done_) on_done_();
  });
  check_done();
}

void router::check_done() {
  if (done_ || !stopping_ || !worker_stopped_ || running_ != 0 || !outbox_.empty()) return;
  done_ = true;
  shutdown_timer_.cancel();
  if (metrics_server_) metrics_server_->stop();
  publisher_sleep_.cancel();
  log_->info("stopped");
  if (on_done_) on_done_();
}

} // namespace bs_router
