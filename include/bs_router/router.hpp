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
//   reserve -> journal(accepted|running) -> bury -> [wait for jname and slot]
//     -> journal(running) -> cbsd -> look-ups -> journal(finished)
//     -> put reply -> delete job -> journal entry removed

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "bs_router/async_event.hpp"
#include "bs_router/beanstalk_connection.hpp"
#include "bs_router/config.hpp"
#include "bs_router/job.hpp"
#include "bs_router/job_files.hpp"
#include "bs_router/journal.hpp"
#include "bs_router/metrics.hpp"
#include "bs_router/process.hpp"
#include "bs_router/reply.hpp"
#include "bs_router/stuck_jobs.hpp"

namespace bs_router {

// The whole environment of a cbsd run (SPEC: nothing else is inherited).
std::vector<std::string> cbsd_environment(const config& cfg);

class router {
 public:
  router(boost::asio::io_context& io, config cfg, std::shared_ptr<spdlog::logger> log);
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
  boost::asio::awaitable<void> execute(job_ptr job);
  boost::asio::awaitable<reply> run_cbsd(const job_ptr& job);
  boost::asio::awaitable<std::optional<std::string>> look_up(const std::vector<std::string>& args, int stderr_fd);
  boost::asio::awaitable<bool> publish(const job_ptr& job);
  boost::asio::awaitable<void> publish_live_output(const job_ptr& job);
  boost::asio::awaitable<void> watch_output(job_ptr job, std::string path, std::shared_ptr<bool> run_over);
  boost::asio::awaitable<bool> still_in_broker(beanstalk::connection& conn, const journal_entry& entry,
                                               const std::string* body);

  void recover();
  boost::asio::awaitable<void> confirm_jobs();
  void look_for_reserved_elsewhere();
  boost::asio::awaitable<void> watch_reserved_elsewhere();
  boost::asio::awaitable<bool> take_over(const reserved_elsewhere& stuck);
  boost::asio::awaitable<bool> done_with_broker_job(const job_ptr& job);
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

  boost::asio::io_context& io_;
  config cfg_;
  std::shared_ptr<spdlog::logger> log_;
  job_limits limits_;
  job_files files_;
  journal journal_;
  process_runner runner_;
  beanstalk::connection worker_;
  beanstalk::connection publisher_;
  // Looks for jobs of the pool reserved for connections not the router's.
  beanstalk::connection inspector_;
  std::size_t max_job_size_ = beanstalk::default_max_job_size;
  std::uint64_t publisher_epoch_ = 1; // counts the publisher's connections

  std::map<std::uint64_t, job_ptr> in_flight_;           // every job taken and not yet answered
  std::map<std::string, std::deque<job_ptr>> busy_jnames_; // jname -> jobs waiting behind the running one
  std::deque<job_ptr> ready_;                             // runnable, waiting for a slot
  std::deque<job_ptr> outbox_;                            // finished, reply to put
  std::deque<job_ptr> live_outbox_;
  std::deque<job_ptr> unconfirmed_;                       // to settle with the broker before reserving                       // running, new output to send (progress)
  int running_ = 0;

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

  bool stopping_ = false;
  bool worker_stopped_ = false;
  bool publisher_failing_ = false;
  bool done_ = false;
  std::function<void()> on_done_;
};

} // namespace bs_router
