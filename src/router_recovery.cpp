// The router's recovery: the jobs of its journal at start, and settling the
// unconfirmed ones with the job source (recovery.hpp says what each becomes).
#include "bs_router/router.hpp"

#include <algorithm>
#include <limits>

#include "bs_router/escape.hpp"
#include "bs_router/recovery.hpp"

namespace bs_router {

using boost::asio::awaitable;

// Jobs of an earlier life of the router. Recorded replies go out; the rest
// are settled with the broker before anything runs (settle_jobs).
void router::recover() {
  std::vector<std::string> problems;
  std::vector<journal_entry> entries = journal_.load(&problems);
  for (const std::string& p : problems) log_->error("journal: {}", loggable(p));
  for (journal_entry& entry : entries) {
    auto job = std::make_shared<tracked_job>();
    job->entry = std::move(entry);
    next_key_ = std::max(next_key_, job->entry.key + 1);
    // Taken before, so not refused now whatever its Expires says; its
    // replies are signed when its signature still holds.
    const opened_job opened = open_job(job->entry.body, cfg_.job_keys, 0, std::numeric_limits<std::int64_t>::max());
    if (opened.check == job_check::good) job->reply_key_id = opened.key_id;
    decode_result decoded = decode_job(peel_job(job->entry.body).job, limits_);
    job->request = decoded.job;
    if (job->request && job->request->jname) job->jname = *job->request->jname;
    jobs_[job->entry.key] = job;
    by_broker_id_[job->entry.broker_id] = job->entry.key;
    if (job->entry.state == journal_state::finished && !job->entry.replied) {
      move_to(job, job_phase::replying);
      outbox_.push(job);
    } else {
      move_to(job, job_phase::unconfirmed);
      unconfirmed_.push_back(job);
    }
  }
  if (!entries.empty()) log_->info("journal: {} jobs recovered from {}", entries.size(), journal_.dir());
}

// Settles each unconfirmed job with the broker, as recovery.hpp's table says.
awaitable<void> router::settle_jobs() {
  while (!unconfirmed_.empty()) {
    job_ptr job = unconfirmed_.front();
    if (!is_current(*job) || job->phase != job_phase::unconfirmed) {
      unconfirmed_.erase(unconfirmed_.begin());
      continue;
    }
    const broker_standing standing = co_await source_.settle(job->entry);
    unconfirmed_.erase(unconfirmed_.begin());
    const std::string what = describe_job(*job);
    switch (recovery_for(job->entry, standing)) {
      case recovery_step::drop:
        log_->info("{}: not held in the broker as taken (never started, gone, or another job with its id); "
                   "the journal entry is dropped", what);
        forget(job);
        break;
      case recovery_step::answer_interrupted:
        log_->warn("{}: was running when the router stopped; its outcome is unknown", what);
        answer(job, error_reply(job->entry.broker_id, job->entry.numeric_id, router_errcode::interrupted,
                                "bs_router: the router stopped while this job ran; its outcome is unknown"));
        break;
      case recovery_step::run:
        log_->info("{}: taken earlier and not started; it runs now", what);
        move_to(job, job_phase::waiting_for_slot);
        admitted(job, scheduler_.admit(job->entry.key, job->jname));
        break;
      case recovery_step::remove:
        // Answered already: removed once the connection holding it lets go.
        if (co_await source_.remove(job->entry)) forget(job);
        break;
      case recovery_step::put_reply:
        move_to(job, job_phase::replying);
        outbox_.push(job);
        break;
    }
  }
}

} // namespace bs_router
