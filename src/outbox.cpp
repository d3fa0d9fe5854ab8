#include "bs_router/outbox.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <unistd.h>

#include "bs_router/escape.hpp"
#include "bs_router/signature.hpp"

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;
using namespace std::chrono_literals;

namespace {
// Live output goes out at most this often per job (progress replies).
constexpr auto live_output_interval = 500ms;
// A progress reply carries what the router read; it never shows Progress 100.
constexpr int live_output_progress = 0;
} // namespace

outbox::outbox(asio::io_context& io, reply_sink& sink, const config& cfg, std::shared_ptr<spdlog::logger> log,
               owner owner)
    : io_(io),
      sink_(sink),
      cfg_(cfg),
      log_(std::move(log)),
      owner_(std::move(owner)),
      changed_(io.get_executor()),
      sleep_(io) {}

void outbox::push(job_ptr job) {
  finals_.push_back(std::move(job));
  changed_.notify();
}

void outbox::stop() {
  changed_.notify();
  sleep_.cancel();
}

// The key a job's replies are signed with; nullptr for an unsigned job.
const key_ring::value_type* outbox::reply_key(const tracked_job& job) const {
  auto key = job.reply_key_id.empty() ? cfg_.job_keys.end() : cfg_.job_keys.find(job.reply_key_id);
  return key == cfg_.job_keys.end() ? nullptr : &*key;
}

// What is left of `budget` for the reply's JSON once a signature header, if
// any, has its place.
std::size_t outbox::json_room(const tracked_job& job, std::size_t budget) const {
  if (!reply_key(job)) return budget;
  return budget > 2 * max_signed_header_bytes ? budget - max_signed_header_bytes : budget;
}

std::string outbox::body(const tracked_job& job, const reply& r, std::size_t budget) const {
  const key_ring::value_type* key = reply_key(job);
  if (!key) return encode_reply(r, budget);
  return sign_reply(key->first, key->second, r.job_id, encode_reply(r, json_room(job, budget)));
}

// Returns once the job's latest state is on disk; a journal that fails is
// logged, and the reply still goes out from memory (only a crash before that
// loses it).
awaitable<void> outbox::durable(job_ptr job) {
  try {
    co_await owner_.durable(*job);
  } catch (const std::exception& ex) {
    log_->error("{}: journal: {}", describe_job(*job), loggable(ex.what()));
  }
}

// Puts one final reply. False when the job no longer wants it (gone from
// the broker). Throws on connection failures.
awaitable<bool> outbox::put_final(const job_ptr& job) {
  if (!co_await sink_.wanted(job->entry, job->broker_life)) {
    log_->warn("{} is no longer in the broker; its reply is dropped (output kept in {})", describe_job(*job),
               cfg_.logdir());
    co_return false;
  }
  // The reply must be on disk before it is put. Waiting only now lets the
  // next job, taken meanwhile, share the fdatasync. (Named objects, not
  // temporaries of the co_await expression: g++ 12 may destroy those twice.)
  const reply_sink::before_put ready = [this, job]() { return durable(job); };
  const reply_sink::body_maker make_body = [this, job](std::size_t budget) {
    return body(*job, *job->entry.result, budget);
  };
  co_await sink_.put(job->entry, make_body, ready);
  co_return true;
}

// Sends what cbsd writes while it runs, as replies with Progress below 100.
// Output that arrives faster than the broker takes it is joined into the next
// reply, so each job has at most one progress reply waiting at any time.
awaitable<void> outbox::watch_output(job_ptr job, int fd, std::shared_ptr<bool> over) {
  // Reads the descriptor the run's output is written to, never its path: the
  // file may have been replaced meanwhile (by a link to something else).
  asio::steady_timer tick(io_);
  std::uint64_t offset = 0;
  std::array<char, 16 * 1024> chunk;
  while (!*over) {
    co_await sleep_on(tick, live_output_interval);
    if (*over) break;
    // At most half a reply waits per job; what does not fit is read later.
    const std::size_t limit = sink_.budget() / 2;
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
      progress_.push_back(job);
      changed_.notify();
    }
  }
}

awaitable<void> outbox::put_progress(const job_ptr& job) {
  reply r;
  r.job_id = job->entry.broker_id;
  r.numeric_id = job->entry.numeric_id;
  r.progress = live_output_progress;
  r.duration_seconds = -1;
  // As much as fits whole; the rest goes in the next one, so nothing is cut.
  const std::size_t room = json_room(*job, sink_.budget());
  const std::size_t fixed = encode_reply(r, room).size();
  const std::size_t taken = fitting_prefix(job->live_output, room > fixed ? room - fixed : 0);
  r.message = job->live_output.substr(0, std::max<std::size_t>(taken, 1));
  const std::size_t budget = sink_.budget();
  const reply_sink::body_maker make_body = [this, job, &r, budget](std::size_t) { return body(*job, r, budget); };
  const reply_sink::before_put no_wait;
  co_await sink_.put(job->entry, make_body, no_wait);
  job->live_output.erase(0, r.message.size());
}

awaitable<void> outbox::run() {
  const auto retry_pause = std::chrono::seconds(cfg_.reconnect_seconds());
  for (;;) {
    if (!progress_.empty()) {
      // Progress first: a job's final reply is queued only after its last
      // progress reply, so the order on its reply queue holds.
      job_ptr job = progress_.front();
      bool failed = false;
      try {
        co_await sink_.open();
        co_await put_progress(job);
        progress_.pop_front();
        job->live_queued = false;
        if (!job->live_output.empty()) {
          job->live_queued = true;
          progress_.push_back(job);
        }
      } catch (const std::exception&) {
        sink_.close(); // the final reply's path logs the outage
        failed = true;
      }
      if (failed) co_await sleep_on(sleep_, retry_pause);
      continue;
    }
    if (finals_.empty()) {
      if (owner_.may_end()) break;
      co_await changed_.wait();
      continue;
    }
    job_ptr job = finals_.front();
    if (!owner_.current(*job)) {
      finals_.pop_front(); // replaced by a newer job with the same id
      continue;
    }
    bool failed = false;
    try {
      co_await sink_.open();
      const bool answered = co_await put_final(job);
      if (failing_) {
        log_->info("{} reachable again; putting {} waiting replies", sink_.describe(), finals_.size());
        failing_ = false;
      }
      if (!answered || co_await sink_.finish(job->entry))
        owner_.forget(job);
      else
        owner_.keep_replied(job);
      if (!finals_.empty() && finals_.front() == job) finals_.pop_front();
    } catch (const std::exception& ex) {
      sink_.close();
      if (!failing_) {
        // Once, not per attempt: the worker already logs each reconnect.
        log_->warn("cannot put the reply of {}: {}; {} replies wait in the journal until the broker is back",
                   describe_job(*job), loggable(ex.what()), finals_.size());
        failing_ = true;
      }
      failed = true;
    }
    if (failed) co_await sleep_on(sleep_, retry_pause);
  }
  sink_.close();
}

} // namespace bs_router
