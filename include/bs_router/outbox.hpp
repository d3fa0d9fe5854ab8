#pragma once
// The replies waiting to go out, and the one coroutine that puts them
// through the reply sink: progress replies (live output, Progress below 100)
// first, then final replies in the order the jobs finished. One failure
// path: a reply that cannot be put stays (in the journal, and here), the
// sink is closed, and it is tried again after reconnect_timeout; the outage
// is logged once, not per attempt.

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <deque>
#include <functional>
#include <memory>

#include <spdlog/logger.h>

#include "bs_router/async_event.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/config.hpp"
#include "bs_router/reply.hpp"
#include "bs_router/tracked_job.hpp"

namespace bs_router {

class outbox {
 public:
  // What the outbox needs of the router.
  struct owner {
    // Whether the job is still the router's (not replaced by a newer job
    // with its broker id).
    std::function<bool(const tracked_job&)> current;
    // Returns once the job's latest journal state is on disk.
    std::function<boost::asio::awaitable<void>(const tracked_job&)> durable;
    // The final reply is out and the broker is done with the job (true), or
    // the job no longer wants it (false): the router forgets the job.
    std::function<void(const job_ptr&)> forget;
    // The final reply is out, and the broker keeps the job (reply_sink::finish).
    std::function<void(const job_ptr&)> keep_replied;
    // Whether the loop may end: the router is stopping and no job runs.
    std::function<bool()> may_end;
  };

  outbox(boost::asio::io_context& io, reply_sink& sink, const config& cfg, std::shared_ptr<spdlog::logger> log,
         owner owner);

  // A job's final reply (in job.entry.result) is to go out.
  void push(job_ptr job);
  // Reads what cbsd writes while it runs (through `fd`, until *over) and
  // sends it as progress replies.
  boost::asio::awaitable<void> watch_output(job_ptr job, int fd, std::shared_ptr<bool> over);
  // The loop; returns once owner.may_end() and no final reply waits.
  boost::asio::awaitable<void> run();
  // Something changed that may let run() end.
  void wake() { changed_.notify(); }
  void stop();

  std::size_t size() const { return finals_.size(); }
  // The largest reply body, for what a job keeps of its output.
  std::size_t budget() const { return sink_.budget(); }

  // How a reply's body is made: signed with the job's key when the job was
  // signed, within `budget` bytes.
  std::string body(const tracked_job& job, const reply& r, std::size_t budget) const;

 private:
  const key_ring::value_type* reply_key(const tracked_job& job) const;
  std::size_t json_room(const tracked_job& job, std::size_t budget) const;
  boost::asio::awaitable<void> durable(job_ptr job);
  boost::asio::awaitable<bool> put_final(const job_ptr& job);
  boost::asio::awaitable<void> put_progress(const job_ptr& job);

  boost::asio::io_context& io_;
  reply_sink& sink_;
  const config& cfg_;
  std::shared_ptr<spdlog::logger> log_;
  owner owner_;
  std::deque<job_ptr> finals_;
  std::deque<job_ptr> progress_;
  async_event changed_;
  boost::asio::steady_timer sleep_;
  bool failing_ = false;
};

} // namespace bs_router
