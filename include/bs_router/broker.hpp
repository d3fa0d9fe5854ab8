#pragma once
// The broker as the router sees it: two roles, each an interface, the way a
// beanstalk connection is both a set of tubes to take jobs from and a tube to
// put to. The router schedules, journals and runs; what a job is to the
// broker (a beanstalkd job id, an AMQP delivery tag) stays behind these.
//
//   job_source: where jobs come from. take -> (journal) -> hold; after a
//               restart, settle what the journal holds; tell the same job
//               from another one that reuses its id.
//   reply_sink: where replies go. put (progress and final), then finish the
//               job with the broker.
//
// Every call is bounded in time by the implementation and throws
// broker_error, naming the operation, when the connection fails; the
// caller closes, waits and opens again.

#include <utility>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <spdlog/logger.h>

#include "bs_router/journal.hpp"

namespace bs_router {

// A failed broker operation: `op` is the broker's own name for it
// ("reserve", "bury", "put", "basic.publish"), for the log.
class broker_error : public std::runtime_error {
 public:
  broker_error(std::string op, std::error_code code, const std::string& detail = {});
  const std::string& op() const noexcept { return op_; }
  std::error_code code() const noexcept { return code_; }

 private:
  std::string op_;
  std::error_code code_;
};

// A job as the broker hands it over.
struct broker_job {
  // The broker's name for the job, opaque to the router: the reply's JobID
  // and the journal's broker_id (beanstalkd: the job id in decimal; AMQP:
  // the message id).
  std::string id;
  bool numeric_id = true; // JobID is a JSON number (beanstalkd), else a string
  std::string body;
  std::string reply_to;   // where its replies go; empty: the broker's default for id
  // When the broker's connection first handed the job over (unix seconds).
  std::int64_t taken_at = 0;
  // The connection-local handle (beanstalkd: the job id; AMQP: the delivery tag).
  std::uint64_t handle = 0;
  // The broker can hand this job to the router and nobody else, but cannot
  // hold it or take it back (beanstalkd: a job taken over from a connection
  // that is not the router's).
  bool taken_over = false;
  // Not usable as a job (an AMQP message without a usable message_id): it is
  // answered where possible and never run.
  std::string problem;
};

// What the broker says of a journal entry's job after a restart (or after a
// hold whose outcome was lost).
enum class broker_standing {
  held,     // the broker holds it for the router: the journal's job
  not_held, // the hold never happened: the broker hands it out again, nothing ran
  gone,     // not in the broker, or its id names another job now
};

class job_source {
 public:
  virtual ~job_source() = default;

  // "beanstalkd 127.0.0.1:11300, watching tube cbsd_pool1", for the log.
  virtual std::string describe() const = 0;
  // The node connected to now, without password ("amqp://router@mq2:5672/cbsd"),
  // for the metrics; "" when not connected or not told.
  virtual std::string node() const { return {}; }
  virtual boost::asio::awaitable<void> open() = 0;
  virtual void close() noexcept = 0;

  // The next job, waiting at most `at_most` (and no longer than the
  // source's own wait, e.g. reserve_timeout); nullopt when none came.
  virtual boost::asio::awaitable<std::optional<broker_job>> next(std::chrono::milliseconds at_most) = 0;
  // Asks for up to `n` more jobs that are waiting already, without waiting
  // for any; collect_more() returns them. Split so that the journal's sync
  // can go on while the request travels.
  virtual boost::asio::awaitable<void> ask_more(std::size_t n) = 0;
  virtual boost::asio::awaitable<std::vector<broker_job>> collect_more() = 0;

  // The jobs are in the journal: the broker must not hand them to anyone
  // again while the router holds them (beanstalkd: bury; AMQP: ack). One
  // flag per job: false where the outcome is not known (settle tells).
  virtual boost::asio::awaitable<std::vector<bool>> hold(const std::vector<const broker_job*>& jobs) = 0;

  // Whether jobs can be given back for later and taken again by id (see
  // the router's deferred jobs); without it, jobs are kept as they come.
  virtual bool can_give_back() const = 0;
  virtual boost::asio::awaitable<void> give_back(const std::string& id, std::chrono::seconds delay) = 0;
  virtual boost::asio::awaitable<std::optional<broker_job>> take_back(const std::string& id) = 0;

  // Where the job of `entry` stands (after a restart, or an unsure hold).
  virtual boost::asio::awaitable<broker_standing> settle(const journal_entry& entry) = 0;
  // Whether `job`, just handed over with the id of `entry`, is the very job
  // the entry was made for, rather than another one reusing its id.
  virtual boost::asio::awaitable<bool> same_job(const journal_entry& entry, const broker_job& job) = 0;
  // The job of an entry that is answered already: remove it from the
  // broker. False when the broker still keeps it (it comes back later).
  virtual boost::asio::awaitable<bool> remove(const journal_entry& entry) = 0;
  // Jobs the broker hands over outside next() (beanstalkd: jobs that a
  // connection not the router's keeps reserved past their TTR). `adopt` is
  // called for each on the event loop and returns false when the job could
  // not be recorded (it is offered again later); `known` tells whether the
  // router holds a job of that broker id already. The default: none come.
  using adopter = std::function<boost::asio::awaitable<bool>(broker_job)>;
  virtual void watch_for_strays(adopter adopt, std::function<bool(const std::string&)> known) {
    (void)adopt;
    (void)known;
  }
  // The router is stopping: end every wait, close every connection.
  virtual void stop() noexcept { close(); }
  // The job came again though the router holds it: hold it again.
  virtual boost::asio::awaitable<void> hold_again(const broker_job& job) = 0;
  // Another job reuses the id of one still being served: hand it out later.
  virtual boost::asio::awaitable<void> postpone(const broker_job& job) = 0;
  // The job is answered already: remove it from the broker.
  virtual boost::asio::awaitable<void> discard(const broker_job& job) = 0;
};

class reply_sink {
 public:
  virtual ~reply_sink() = default;

  virtual std::string describe() const = 0;
  virtual boost::asio::awaitable<void> open() = 0;
  virtual void close() noexcept = 0;
  virtual bool is_open() const noexcept = 0;
  virtual void stop() noexcept { close(); }

  // The largest reply body the broker takes, within max_reply_bytes.
  virtual std::size_t budget() const = 0;
  // A token of the broker's life as this sink sees it now (0: not known);
  // kept with a job when it is taken, and given back to wanted().
  virtual std::uint64_t life() const = 0;
  // Whether the job of `entry` still wants its reply: after a broker
  // restart its id may name another job.
  virtual boost::asio::awaitable<bool> wanted(const journal_entry& entry, std::uint64_t life_when_taken) = 0;

  // Puts one reply to the job of `entry` and returns once the broker has
  // it. `body(budget)` makes the body within `budget` bytes; it is asked
  // again with less when the broker takes less than it said. `ready`, when
  // given, is awaited right before the reply goes out (the journal's sync:
  // whatever the sink sends first, e.g. the tube to use, overlaps it).
  using body_maker = std::function<std::string(std::size_t)>;
  using before_put = std::function<boost::asio::awaitable<void>()>;
  virtual boost::asio::awaitable<void> put(const journal_entry& entry, const body_maker& body,
                                           const before_put& ready) = 0;
  // After the final reply: the router is done with the broker's job
  // (beanstalkd: deleted). False: the broker cannot let it go yet, and the
  // entry stays, marked replied, until the job comes back (a job taken over
  // that the broker keeps reserved elsewhere). `entry` is the live entry:
  // the job source may change it meanwhile.
  virtual boost::asio::awaitable<bool> finish(const journal_entry& entry) = 0;
};

// The broker a config names, both roles: `owner` keeps them alive.
struct broker_roles {
  std::shared_ptr<void> owner;
  job_source* source = nullptr;
  reply_sink* sink = nullptr;
};

struct config;
class metrics;
broker_roles make_broker(boost::asio::any_io_executor executor, const config& cfg, metrics& counters,
                         std::shared_ptr<spdlog::logger> log);

} // namespace bs_router
