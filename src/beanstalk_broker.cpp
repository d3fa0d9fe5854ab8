#include "bs_router/beanstalk_broker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/system/system_error.hpp>

#include <charconv>

#include "bs_router/escape.hpp"
#include "bs_router/unix_time.hpp"
#include "bs_router/reply.hpp"
#include "bs_router/spawn.hpp"

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;
using namespace std::chrono_literals;

namespace {

// The broker's clock counts a job's age in whole seconds.
constexpr std::int64_t age_slack_seconds = 2;
// A reserve that returns nothing in less than half its timeout (a broker
// that answers TIMED_OUT or DEADLINE_SOON at once) is followed by a pause:
// this long after the first, doubling after each further one, up to the
// most. It ends at the first reserve that gets a job or waits its time.
constexpr auto reserve_backoff_first = 100ms;
constexpr auto reserve_backoff_most = 1s;
// How long a connection may take to open.
constexpr auto connect_deadline = 10s;
// How long beanstalkd may take to answer a command (a reserve: its timeout
// and this) before the connection counts as dead: a broker busy with its
// binlog answers in milliseconds; one silent this long is gone.
constexpr auto answer_deadline = 10s;
// A job whose id is reused while the earlier job of that id is still served
// comes back after this long (by then the earlier one may be done).
constexpr std::uint32_t reused_id_delay_seconds = 5;


// The broker's job id behind a broker id (decimal digits); 0 for anything else.
std::uint64_t job_id(const std::string& id) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), value);
  return ec == std::errc() && end == id.data() + id.size() ? value : 0;
}

broker_job as_broker_job(beanstalk::job&& job) {
  broker_job j;
  j.id = std::to_string(job.id);
  j.handle = job.id;
  j.body = std::move(job.body);
  j.taken_at = unix_now();
  return j;
}

// Runs one operation of the connection, naming it in what it throws.
template <typename T> awaitable<T> op(const char* name, awaitable<T> work) {
  try {
    co_return co_await std::move(work);
  } catch (const boost::system::system_error& ex) {
    throw broker_error(name, ex.code());
  }
}

awaitable<void> op(const char* name, awaitable<void> work) {
  try {
    co_await std::move(work);
  } catch (const boost::system::system_error& ex) {
    throw broker_error(name, ex.code());
  }
}

bool is_state(const std::optional<beanstalk::stats_map>& stats, const char* state) {
  return stats && stats->count("state") && stats->at("state") == state;
}

} // namespace

beanstalk_broker::beanstalk_broker(asio::any_io_executor executor, const config& cfg, metrics& counters,
                                   std::shared_ptr<spdlog::logger> log)
    : cfg_(cfg.beanstalkd),
      max_reply_bytes_(cfg.max_reply_bytes),
      metrics_(counters),
      log_(std::move(log)),
      worker_(executor),
      publisher_(executor),
      inspector_(executor),
      reply_limit_(reply_limit("", cfg.max_reply_bytes)),
      worker_sleep_(executor),
      strays_check_(executor),
      inspector_sleep_(executor) {}

beanstalk_broker::~beanstalk_broker() = default;

std::string beanstalk_broker::describe() const { return "beanstalkd " + cfg_.uri + ", watching tube " + cfg_.tube; }

void beanstalk_broker::stop() noexcept {
  stopping_ = true;
  worker_.close();
  worker_sleep_.cancel();
  inspector_sleep_.cancel();
  strays_check_.notify();
}

awaitable<void> beanstalk_broker::connect(beanstalk::connection& conn) {
  conn.set_command_deadline(answer_deadline);
  co_await op("connect", conn.connect(cfg_.host, cfg_.port, connect_deadline));
  beanstalk::stats_map stats = co_await op("stats", conn.stats());
  // Whatever the broker claims, the reply stays within our own bound.
  auto claimed = stats.find("max-job-size");
  reply_limit_ = reply_limit(claimed != stats.end() ? claimed->second : std::string(), max_reply_bytes_);
  // reserve-job came with beanstalkd 1.12: without it, jobs cannot be given
  // back and fetched in their turn.
  int major = 0, minor = 0;
  if (auto it = stats.find("version"); it != stats.end()) {
    const std::string& v = it->second;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), major);
    if (ec == std::errc() && end != v.data() + v.size() && *end == '.')
      std::from_chars(end + 1, v.data() + v.size(), minor);
  }
  reserves_by_id_ = major > 1 || (major == 1 && minor >= 12);
}

awaitable<void> beanstalk_broker::open() {
  co_await connect(worker_);
  co_await op("watch", worker_.watch(cfg_.tube));
  co_await op("ignore", worker_.ignore("default"));
  // A connection the router gave up on may still hold a job reserved in the
  // broker's eyes.
  look_for_strays();
}

void beanstalk_broker::close() noexcept { worker_.close(); }

awaitable<std::optional<broker_job>> beanstalk_broker::next(std::chrono::milliseconds at_most) {
  std::chrono::seconds timeout(cfg_.reserve_timeout);
  if (at_most < timeout) timeout = std::max(std::chrono::duration_cast<std::chrono::seconds>(at_most), 1s);
  const auto asked = std::chrono::steady_clock::now();
  std::optional<beanstalk::job> job = co_await op("reserve-with-timeout", worker_.reserve_with_timeout(timeout));
  if (job || 2 * (std::chrono::steady_clock::now() - asked) >= timeout) {
    reserve_backoff_ = {};
    if (job) co_return as_broker_job(std::move(*job));
    co_return std::nullopt;
  }
  // Nothing, at once: a broker answering like that must not make a busy loop.
  reserve_backoff_ = reserve_backoff_ == decltype(reserve_backoff_){}
                         ? std::chrono::steady_clock::duration(reserve_backoff_first)
                         : std::min<std::chrono::steady_clock::duration>(2 * reserve_backoff_, reserve_backoff_most);
  co_await sleep_on(worker_sleep_, reserve_backoff_);
  co_return std::nullopt;
}

awaitable<void> beanstalk_broker::ask_more(std::size_t n) { co_await op("reserve-with-timeout", worker_.request_ready(n)); }

awaitable<std::vector<broker_job>> beanstalk_broker::collect_more() {
  std::vector<broker_job> jobs;
  for (beanstalk::job& job : co_await op("reserve-with-timeout", worker_.collect_ready()))
    jobs.push_back(as_broker_job(std::move(job)));
  co_return jobs;
}

awaitable<std::vector<bool>> beanstalk_broker::hold(const std::vector<const broker_job*>& jobs) {
  std::vector<std::uint64_t> ids;
  std::vector<std::size_t> buried_index; // jobs[i] for each id
  std::vector<bool> held(jobs.size(), false);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    // A job taken over is not reserved by the worker: it cannot be buried
    // now, and comes back to the worker some day (see take_over).
    if (jobs[i]->taken_over) {
      held[i] = true;
      continue;
    }
    ids.push_back(jobs[i]->handle);
    buried_index.push_back(i);
  }
  if (ids.empty()) co_return held;
  std::vector<bool> buried = co_await op("bury", worker_.bury_each(ids, 0));
  for (std::size_t k = 0; k < buried.size() && k < buried_index.size(); ++k) held[buried_index[k]] = buried[k];
  co_return held;
}

awaitable<void> beanstalk_broker::give_back(const std::string& id, std::chrono::seconds delay) {
  const std::uint64_t number = job_id(id);
  std::optional<beanstalk::stats_map> stats = co_await op("stats-job", worker_.stats_job(number));
  std::uint32_t priority = 0;
  if (stats && stats->count("pri")) {
    const std::string& pri = stats->at("pri");
    std::from_chars(pri.data(), pri.data() + pri.size(), priority);
  }
  try {
    co_await worker_.release(number, priority, static_cast<std::uint32_t>(delay.count()));
  } catch (const boost::system::system_error& ex) {
    // Its TTR ran out first: the broker has made it ready again already.
    if (ex.code() != beanstalk::errc::not_found) throw broker_error("release", ex.code());
  }
}

awaitable<std::optional<broker_job>> beanstalk_broker::take_back(const std::string& id) {
  std::optional<beanstalk::job> job = co_await op("reserve-job", worker_.reserve_job(job_id(id)));
  if (!job) co_return std::nullopt;
  co_return as_broker_job(std::move(*job));
}

// Whether the broker's job `entry.broker_id` is the job the entry was made
// for. `body` is the job's body when the caller has it already (else it is
// peeked).
awaitable<bool> beanstalk_broker::still_in_broker(beanstalk::connection& conn, const journal_entry& entry,
                                                  const std::string* body) {
  const std::uint64_t id = job_id(entry.broker_id);
  std::optional<beanstalk::stats_map> stats = co_await op("stats-job", conn.stats_job(id));
  if (!stats) co_return false;
  std::int64_t age = 0;
  try {
    age = std::stoll(stats->at("age"));
  } catch (const std::exception&) {
    co_return false;
  }
  if (unix_now() - age > entry.taken_at + age_slack_seconds) co_return false;
  if (body) co_return *body == entry.body;
  std::optional<beanstalk::job> peeked = co_await op("peek", conn.peek(id));
  co_return peeked && peeked->body == entry.body;
}

awaitable<broker_standing> beanstalk_broker::settle(const journal_entry& entry) {
  std::optional<beanstalk::stats_map> stats = co_await op("stats-job", worker_.stats_job(job_id(entry.broker_id)));
  // A job taken over is the journal's whatever the broker's state of it.
  const bool ours = (is_state(stats, "buried") || entry.taken_over) && co_await still_in_broker(worker_, entry, nullptr);
  if (ours) co_return broker_standing::held;
  co_return stats && !is_state(stats, "buried") ? broker_standing::not_held : broker_standing::gone;
}

awaitable<bool> beanstalk_broker::same_job(const journal_entry& entry, const broker_job& job) {
  co_return co_await still_in_broker(worker_, entry, &job.body);
}

awaitable<bool> beanstalk_broker::remove(const journal_entry& entry) {
  co_return co_await op("delete", worker_.remove(job_id(entry.broker_id)));
}

awaitable<void> beanstalk_broker::hold_again(const broker_job& job) { co_await op("bury", worker_.bury(job.handle, 0)); }

awaitable<void> beanstalk_broker::postpone(const broker_job& job) {
  co_await op("release", worker_.release(job.handle, 0, reused_id_delay_seconds));
}

awaitable<void> beanstalk_broker::discard(const broker_job& job) {
  co_await op("delete", worker_.remove(job.handle));
}

// --- jobs reserved for connections not the router's ---------------------------

void beanstalk_broker::watch_for_strays(adopter adopt, std::function<bool(const std::string&)> known) {
  adopt_ = std::move(adopt);
  known_ = std::move(known);
  spawn_reported(worker_sleep_.get_executor(), watch_strays(),
                 [log = log_](const std::string& what, const std::string& why) { log->critical("{} stopped: {}", what, why); },
                 "inspector");
}

void beanstalk_broker::look_for_strays() {
  look_for_strays_ = true;
  strays_check_.notify();
  inspector_sleep_.cancel();
}

// Looks for jobs of the pool that the broker keeps reserved for a connection
// that is not the router's (see beanstalk_stuck_jobs.hpp), and hands each one the
// broker keeps past its TTR to the router. While some are still within
// their TTR it looks again once that has passed. Its own connection, closed
// when there is nothing to watch, so that the worker goes on reserving.
awaitable<void> beanstalk_broker::watch_strays() {
  while (!stopping_) {
    if (!look_for_strays_) {
      inspector_.close();
      co_await strays_check_.wait();
      continue;
    }
    look_for_strays_ = false;
    std::chrono::seconds look_again{0};
    try {
      if (!inspector_.is_open()) co_await connect(inspector_);
      const std::function<bool(std::uint64_t)> ours = [this](std::uint64_t id) { return known_(std::to_string(id)); };
      const std::vector<reserved_elsewhere> found = co_await find_reserved_elsewhere(inspector_, cfg_.tube, ours);
      metrics_.set_jobs_reserved_elsewhere(found.size());
      for (const reserved_elsewhere& job : found) {
        if (kept_past_ttr(job)) {
          if (!co_await take_over(job)) look_again = std::chrono::seconds(cfg_.reconnect_timeout);
          continue;
        }
        if (reported_strays_.insert(job.id).second)
          log_->warn("job {} of tube {} is reserved by a connection that is not the router's ({} s of its TTR of {} s "
                     "left); the router takes it over if the broker keeps it past its TTR",
                     job.id, cfg_.tube, job.time_left, job.ttr);
        // time-left is in whole seconds: a second more, and it is clearly past.
        const std::chrono::seconds wait{job.time_left + 2};
        if (look_again.count() == 0 || wait < look_again) look_again = wait;
      }
    } catch (const std::exception& ex) {
      inspector_.close();
      log_->warn("looking for jobs of tube {} reserved elsewhere: {}; again in {} s", cfg_.tube, loggable(ex.what()),
                 cfg_.reconnect_timeout);
      look_again = std::chrono::seconds(cfg_.reconnect_timeout);
    }
    if (look_again.count() > 0 && !stopping_) {
      inspector_.close();
      co_await sleep_on(inspector_sleep_, look_again);
      look_for_strays_ = true;
    }
  }
  inspector_.close();
}

// A job that the broker keeps reserved past its TTR for a connection that is
// not the router's is served from its body, with the journal as its owner:
// beanstalkd itself should have given it out again at its TTR. That
// connection alone may bury or delete the broker's job, so the broker keeps
// it until it lets go; then the worker recognises it (same_job) and buries
// it, or deletes it once its reply is put. False when it could not be
// recorded (it is tried again later).
awaitable<bool> beanstalk_broker::take_over(const reserved_elsewhere& stuck) {
  std::optional<beanstalk::job> peeked = co_await op("peek", inspector_.peek(stuck.id));
  std::optional<beanstalk::stats_map> stats = co_await op("stats-job", inspector_.stats_job(stuck.id));
  const bool still_kept = is_state(stats, "reserved") && stats->count("time-left") &&
                          stats->at("time-left").starts_with('-');
  // Gone, given back, or taken by the worker meanwhile: nothing to take over.
  if (!peeked || !still_kept || stopping_ || known_(std::to_string(stuck.id))) co_return true;
  log_->warn("job {} of tube {} is reserved by a connection that is not the router's, and the broker keeps it "
             "{} s past its TTR of {} s; taken over from its body (reply to {}{})",
             stuck.id, cfg_.tube, -stuck.time_left, stuck.ttr, cfg_.reply_tube_prefix, stuck.id);
  broker_job job = as_broker_job(std::move(*peeked));
  job.taken_over = true;
  if (!co_await adopt_(std::move(job))) co_return false;
  reported_strays_.erase(stuck.id);
  metrics_.job_taken_over();
  co_return true;
}

// --- the reply sink: the publisher connection ---------------------------------

// Each new publisher connection starts a new epoch: jobs taken before it may
// belong to an earlier life of the broker.
awaitable<void> beanstalk_broker::publisher_role::open() {
  if (broker_.publisher_.is_open()) co_return;
  co_await broker_.connect(broker_.publisher_);
  ++broker_.publisher_epoch_;
}

std::string beanstalk_broker::reply_tube(const journal_entry& entry) const {
  return cfg_.reply_tube_prefix + entry.broker_id;
}

// The reply goes out only while the job it answers is still in the broker:
// after a broker restart without binlog the id may name somebody else's job.
// Asking costs two round trips, needless while the connection that was open
// when the job was taken still is.
awaitable<bool> beanstalk_broker::publisher_role::wanted(const journal_entry& entry, std::uint64_t life_when_taken) {
  if (life_when_taken != 0 && life_when_taken == broker_.publisher_epoch_ && is_open()) co_return true;
  co_return co_await broker_.still_in_broker(broker_.publisher_, entry, nullptr);
}

awaitable<void> beanstalk_broker::publisher_role::put(const journal_entry& entry, const body_maker& body,
                                                      const before_put& ready) {
  beanstalk::connection& publisher = broker_.publisher_;
  co_await op("use", publisher.use(broker_.reply_tube(entry)));
  if (ready) co_await ready();
  std::size_t budget = broker_.reply_limit_;
  const auto ttr = static_cast<std::uint32_t>(broker_.cfg_.publish_timeout);
  for (;;) {
    try {
      co_await publisher.put(1, 0, ttr, body(budget));
      co_return;
    } catch (const boost::system::system_error& ex) {
      // The broker's limit may be lower than it said (or changed): shrink.
      if (ex.code() != beanstalk::errc::job_too_big || budget <= 1024) throw broker_error("put", ex.code());
      budget /= 2;
    }
  }
}

// The broker may still keep a job taken over reserved for the other
// connection: then the router keeps its entry, marked replied, and deletes
// the job when it comes back to the worker.
awaitable<bool> beanstalk_broker::publisher_role::finish(const journal_entry& entry) {
  beanstalk::connection& publisher = broker_.publisher_;
  const std::uint64_t id = job_id(entry.broker_id);
  co_await op("delete", publisher.remove(id));
  if (!entry.taken_over) co_return true;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::optional<beanstalk::stats_map> stats = co_await op("stats-job", publisher.stats_job(id));
    if (!stats) co_return true; // deleted, or gone
    if (!is_state(stats, "reserved")) {
      if (co_await op("delete", publisher.remove(id))) co_return true; // given back, or buried by the worker
      continue;
    }
    if (!entry.taken_over) continue; // buried by the worker meanwhile: deletable now
    break;
  }
  // The caller marks the entry replied before its next co_await: the worker
  // sees both or neither.
  co_return false;
}

} // namespace bs_router
