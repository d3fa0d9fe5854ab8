// The router's intake: taking jobs from the job source, recording them, and
// having the broker hold them; giving back the jobs over max_waiting.
#include "bs_router/router.hpp"

#include <algorithm>
#include <chrono>

#include "bs_router/escape.hpp"
#include "bs_router/unix_time.hpp"

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;
using namespace std::chrono_literals;

namespace {

// At most this many jobs are taken from the broker in one go (see accept).
constexpr std::size_t max_intake = 32;
// A job given back until its jname has room (see defer) comes back by
// itself after this long. It is taken again by id as soon as its turn comes,
// so the delay only bounds how often it comes back meanwhile (and is given
// back again), and how long it waits after a crash.
constexpr std::chrono::seconds deferral_delay{30};
// While jobs wait in the broker for their turn, the source waits no longer
// than this for a new job, so that those are fetched soon after their turn.
constexpr auto deferred_poll = 1s;


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

// What the job source needs to hold a job: its handle, not its body.
broker_job holding_handle(const broker_job& job) {
  broker_job handle;
  handle.id = job.id;
  handle.handle = job.handle;
  handle.taken_over = job.taken_over;
  return handle;
}

} // namespace

// The jobs taken in one go.
struct router::intake {
  std::vector<job_ptr> jobs;
  std::vector<broker_job> handles;  // jobs[i]'s, for hold
  std::vector<std::string> deferred; // broker ids: to give back (see defer)
  // False for a job adopted from outside next() (a beanstalkd job taken
  // over): the broker cannot take it back, so it waits behind its jname even
  // past max_waiting.
  bool may_send_back = true;
};

bool router::can_take_more() const {
  if (phase_ != phase::serving || scheduler_.free_slots() == 0) return false;
  // Jobs over max_waiting go back to the broker (defer); a broker that
  // cannot take them back makes the router stop taking jobs instead.
  if (source_.can_give_back()) return !deferred_.full();
  return scheduler_.waiting_for_jname() <= static_cast<std::size_t>(cfg_.max_waiting);
}

// One step of the worker: a job given back whose turn has come, or the next
// job of the source when there is room for it, or a wait for room.
awaitable<void> router::take_next() {
  const std::string* turn = phase_ == phase::serving && source_.can_give_back()
                                ? deferred_.next_turn([this](const std::string& jname) { return scheduler_.room(jname); })
                                : nullptr;
  if (turn) {
    const std::string jname = *turn;
    const std::string id = *deferred_.first(jname);
    if (std::optional<broker_job> job = co_await source_.take_back(id)) co_await accept(std::move(*job));
    // Still first: the broker no longer has it for us (deleted, taken by
    // another consumer), or its id now names a job of another jname.
    const std::string* first = deferred_.first(jname);
    if (first && *first == id) {
      log_->warn("job {}: sent back to the broker until its turn, and not found there in its turn; "
                 "no longer waited for", loggable(id));
      deferred_.pop_first(jname);
    }
    co_return;
  }
  if (!can_take_more()) {
    co_await capacity_changed_.wait();
    co_return;
  }
  const std::chrono::milliseconds wait = deferred_.size() > 0 ? deferred_poll : std::chrono::milliseconds::max();
  if (std::optional<broker_job> job = co_await source_.next(wait)) co_await accept(std::move(*job));
}

// Whether `job`, just handed over, is new to the router. A job it holds
// already is dealt with here (held again, or handed out later).
awaitable<bool> router::is_new(const broker_job& job) {
  if (job_ptr old = find(job.id); old && old->phase == job_phase::unconfirmed && !old->entry.taken_over)
    forget(old); // its hold never happened: this is the same job, not yet run
  const job_ptr held = find(job.id);
  if (!held) co_return true;
  // Either the same job back again (an operator let it go again) or a broker that
  // restarted without its binlog and reuses ids.
  if (co_await source_.same_job(held->entry, job)) {
    if (!held->entry.replied) {
      log_->warn("job {} came back while the router holds it; held again, not run twice", loggable(job.id));
      co_await source_.hold_again(job);
    }
    // Checked again after the hold: the reply of a job taken over may have
    // gone out meanwhile, while the broker still had the job for us
    // (reply_sink::finish then left the job to be removed here).
    if (held->entry.replied) {
      // Taken over, and answered while another connection held it.
      log_->info("job {} came back after the router took it over and put its reply; removed", loggable(job.id));
      co_await source_.discard(job);
      forget(held);
      co_return false;
    }
    if (held->entry.taken_over) {
      held->entry.taken_over = false; // held for the router now, as any job it holds
      try {
        save(held);
      } catch (const std::exception& ex) {
        log_->error("{}: journal: {}", describe_job(*held), loggable(ex.what()));
      }
    }
    co_return false;
  }
  if (held->entry.state != journal_state::finished) {
    // The earlier job with this id is still being served: take the new one
    // once that is done.
    log_->warn("job id {} reused by the broker while the earlier job runs; released for later", loggable(job.id));
    co_await source_.postpone(job);
    co_return false;
  }
  log_->warn("job id {} reused by the broker: the earlier job is gone, its reply is dropped", loggable(job.id));
  forget(held);
  co_return true;
}

// Records a job just handed over in memory, admits it to the scheduler and
// appends it to the journal (not yet synced). A job that will start as soon
// as it is held is recorded as running straight away: one journal write
// fewer on the common path.
void router::take(broker_job taken, intake& batch) {
  const std::string id = taken.id;
  const std::int64_t now = unix_now();
  const opened_job opened = open_job(taken.body, cfg_.job_keys, now, cfg_.max_signed_job_lifetime);
  job_check check = opened.check;
  // A job given back until its jname had room (defer) had not expired when
  // it came first: the wait since is the router's doing.
  if (check == job_check::expired && deferred_.contains(id)) check = job_check::good;
  // The one place a job is refused: unusable as a job, its signature (or the
  // lack of one), bad input, not allowed on this pool, or a replay.
  std::optional<job_refusal> refusal;
  if (!taken.problem.empty()) refusal = job_refusal{router_errcode::bad_input, "refused: " + taken.problem};
  if (!refusal) refusal = signature_refusal(check, opened.problem, cfg_.require_signed_jobs);
  decode_result decoded = refusal ? decode_result{} : decode_job(opened.job, limits_);
  if (!refusal && !decoded.job) refusal = job_refusal{router_errcode::bad_input, std::move(decoded.error)};
  if (!refusal) refusal = check_job(*decoded.job, cfg_.policy);
  if (refusal) decoded.job.reset();
  if (batch.may_send_back && decoded.job && decoded.job->jname && defer(*decoded.job->jname, id, batch)) return;
  // Remembered only once it is really taken (not given back until its turn).
  if (decoded.job && check == job_check::good && (refusal = admit_signed(opened, id, now))) decoded.job.reset();

  auto job = std::make_shared<tracked_job>();
  if (check != job_check::bad_signature) job->reply_key_id = opened.key_id;
  job->entry.key = next_key_++;
  job->entry.broker_id = id;
  job->entry.numeric_id = taken.numeric_id;
  job->entry.reply_to = taken.reply_to;
  job->entry.body = std::move(taken.body);
  job->entry.taken_at = now;
  job->entry.taken_over = taken.taken_over;
  job->broker_life = sink_.life();
  job->request = std::move(decoded.job);
  move_to(job, job_phase::holding);
  jobs_[job->entry.key] = job;
  by_broker_id_[id] = job->entry.key;
  batch.jobs.push_back(job);
  batch.handles.push_back(holding_handle(taken));

  if (refusal) {
    log_->warn("job {}: refused: {}", loggable(id), loggable(refusal->reason));
    job->entry.state = journal_state::finished;
    job->entry.result = error_reply(id, taken.numeric_id, refusal->err_code, refusal->message());
  } else {
    if (job->request->jname) job->jname = *job->request->jname;
    const scheduler::placement where = scheduler_.admit(job->entry.key, job->jname);
    admitted(job, where);
    job->entry.state = where == scheduler::placement::runs ? journal_state::running : journal_state::accepted;
  }
  save(job);
}

// A signed job whose signature holds is taken once: the replay memory says
// whether this one was taken before (under another job id).
std::optional<job_refusal> router::admit_signed(const opened_job& opened, const std::string& id, std::int64_t now) {
  switch (replay_guard_->admit(opened.hmac, opened.expires, id, now)) {
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

// Whether job `id` of `jname`, just handed over, goes back to the broker
// rather than being taken: it would wait behind its jname with max_waiting
// jobs waiting already, or jobs of its jname that came before it are back in
// the broker for that reason (deferred_jobs.hpp). The giving back itself is
// left to send_back, once the jobs taken are held.
bool router::defer(const std::string& jname, const std::string& id, intake& batch) {
  if (!source_.can_give_back()) return false;
  const bool room = scheduler_.may_wait(jname);
  const std::string* first = deferred_.first(jname);
  if (!first) {
    if (room) return false;
  } else if (*first == id && room) {
    deferred_.pop_first(jname); // its turn
    return false;
  }
  if (deferred_.remember(jname, id))
    log_->info("job {}: {} jobs wait behind its jname; sent back to the broker until its turn ({} sent back)",
               loggable(id), cfg_.max_waiting, deferred_.size());
  batch.deferred.push_back(id);
  return true;
}

// Gives back the jobs of `batch` that defer() sent back, with a delay.
awaitable<void> router::send_back(const intake& batch) {
  for (const std::string& id : batch.deferred)
    if (deferred_.contains(id)) co_await source_.give_back(id, deferral_delay);
}

// Takes a job, and with it the jobs already waiting in the source for the
// other free slots: they are all recorded with one fdatasync and held with
// one round trip. The request for the others goes out before the journal is
// synced, so that with nothing waiting it costs no time.
awaitable<void> router::accept(broker_job first) {
  intake batch;
  // Every job taken needs either a free slot or a place among the jobs
  // waiting for their jname (with a source that cannot take jobs back; with
  // one that can, jobs over max_waiting go back: defer).
  const auto free_slots = static_cast<std::ptrdiff_t>(scheduler_.free_slots());
  const auto waiting_places = source_.can_give_back()
                                  ? static_cast<std::ptrdiff_t>(max_intake)
                                  : static_cast<std::ptrdiff_t>(cfg_.max_waiting) + 1 -
                                        static_cast<std::ptrdiff_t>(scheduler_.waiting_for_jname());
  const auto room = std::min({free_slots, waiting_places, static_cast<std::ptrdiff_t>(max_intake)});
  const std::size_t more = room > 1 ? static_cast<std::size_t>(room - 1) : 0;

  try {
    if (co_await is_new(first)) take(std::move(first), batch);
    if (more > 0) co_await source_.ask_more(more);
    if (!batch.jobs.empty()) co_await make_durable(batch.jobs.back()->journal_sequence);
    if (more > 0) {
      const std::size_t recorded = batch.jobs.size();
      for (broker_job& job : co_await source_.collect_more())
        if (co_await is_new(job)) take(std::move(job), batch);
      if (batch.jobs.size() > recorded) co_await make_durable(batch.jobs.back()->journal_sequence);
    }
    // Signed jobs taken are remembered on disk before they are held (before
    // they can run): a replay is refused after a crash too.
    if (replay_guard_ && replay_guard_->unsynced()) replay_guard_->sync();
  } catch (...) {
    // Not recorded, not held: the broker gives them back.
    for (const job_ptr& job : batch.jobs) forget(job);
    throw;
  }
  if (!batch.jobs.empty()) co_await hold_batch(batch);
  co_await send_back(batch);
}

// Has the broker hold the jobs of `batch`, and places those it holds. The
// others may or may not be held (the connection failed, or the broker said
// it no longer had them for us): nothing of theirs runs until the broker
// says where they stand (settle_jobs), now or on the next connection.
awaitable<void> router::hold_batch(intake& batch) {
  std::vector<const broker_job*> handles;
  for (const broker_job& handle : batch.handles) handles.push_back(&handle);
  std::vector<bool> held;
  std::exception_ptr failure;
  try {
    held = co_await source_.hold(handles);
  } catch (...) {
    failure = std::current_exception();
  }
  held.resize(batch.jobs.size(), false);

  std::vector<job_ptr> unsure;
  for (std::size_t i = 0; i < batch.jobs.size(); ++i)
    if (!held[i]) {
      move_to(batch.jobs[i], job_phase::unconfirmed);
      unsure.push_back(batch.jobs[i]);
    }
  for (std::size_t i = 0; i < batch.jobs.size(); ++i)
    if (held[i]) place(batch.jobs[i]);
  if (unsure.empty()) co_return;
  for (const job_ptr& job : unsure) {
    job->slot_granted = false;
    start_jobs(scheduler_.withdraw(job->entry.key));
    unconfirmed_.push_back(job);
    record_not_started(job);
  }
  try {
    journal_.sync();
  } catch (const std::exception& ex) {
    log_->error("journal: {}", loggable(ex.what()));
  }
  if (failure) std::rethrow_exception(failure);
  // The broker answered, and does not have them for us (beanstalkd: their
  // TTR ran out first): settled on this connection, no reconnect needed.
  co_await settle_jobs();
}

// A job the source hands over outside next() (source_.watch_for_strays):
// recorded and placed like any other, but never given back.
awaitable<bool> router::adopt(broker_job job) {
  if (phase_ != phase::serving || find(job.id)) co_return true;
  const std::string id = job.id;
  intake batch;
  batch.may_send_back = false;
  try {
    take(std::move(job), batch);
    co_await make_durable(batch.jobs.front()->journal_sequence);
  } catch (const std::exception& ex) {
    log_->error("job {}: journal: {}; taken over later", loggable(id), loggable(ex.what()));
    for (const job_ptr& taken : batch.jobs) forget(taken);
    co_return false;
  }
  place(batch.jobs.front());
  co_return true;
}

} // namespace bs_router
