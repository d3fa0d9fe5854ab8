#pragma once
// The broker roles (broker.hpp) on beanstalkd, over three connections of
// beanstalk::connection: the worker watches the pool's tube and reserves (a
// pending reserve blocks its connection), the publisher puts replies and
// deletes answered jobs, and the inspector looks for jobs of the tube that
// a connection not the router's keeps reserved (beanstalk_stuck_jobs.hpp).
//
// Holding a job is burying it: a buried job has no TTR, so it never goes
// back to the ready queue while cbsd runs, however long that is. A job id
// alone proves nothing after a broker restart without its binlog (ids are
// handed out again): the same job is the same id, a body that matches, and
// an age that goes back to before the router took it.

#include <utility>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <set>

#include <spdlog/logger.h>

#include "bs_router/async_event.hpp"
#include "bs_router/beanstalk_connection.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/config.hpp"
#include "bs_router/metrics.hpp"
#include "bs_router/beanstalk_stuck_jobs.hpp"

namespace bs_router {

class beanstalk_broker final : public job_source {
 public:
  beanstalk_broker(boost::asio::any_io_executor executor, const config& cfg, metrics& counters,
                   std::shared_ptr<spdlog::logger> log);
  ~beanstalk_broker() override;

  std::string describe() const override;
  void stop() noexcept override;

  // job_source (the worker connection)
  boost::asio::awaitable<void> open() override;
  void close() noexcept override;
  boost::asio::awaitable<std::optional<broker_job>> next(std::chrono::milliseconds at_most) override;
  boost::asio::awaitable<void> ask_more(std::size_t n) override;
  boost::asio::awaitable<std::vector<broker_job>> collect_more() override;
  boost::asio::awaitable<std::vector<bool>> hold(const std::vector<const broker_job*>& jobs) override;
  bool can_give_back() const override { return reserves_by_id_; }
  boost::asio::awaitable<void> give_back(const std::string& id, std::chrono::seconds delay) override;
  boost::asio::awaitable<std::optional<broker_job>> take_back(const std::string& id) override;
  boost::asio::awaitable<broker_standing> settle(const journal_entry& entry) override;
  boost::asio::awaitable<bool> same_job(const journal_entry& entry, const broker_job& job) override;
  boost::asio::awaitable<bool> remove(const journal_entry& entry) override;
  void watch_for_strays(adopter adopt, std::function<bool(const std::string&)> known) override;
  boost::asio::awaitable<void> hold_again(const broker_job& job) override;
  boost::asio::awaitable<void> postpone(const broker_job& job) override;
  boost::asio::awaitable<void> discard(const broker_job& job) override;

  // The reply_sink role, on the publisher connection (its open and close
  // are its own: the two roles use two connections).
  reply_sink& sink() { return sink_; }
  job_source& source() { return *this; }

 private:
  class publisher_role final : public reply_sink {
   public:
    explicit publisher_role(beanstalk_broker& broker) : broker_(broker) {}
    std::string describe() const override { return "beanstalkd " + broker_.cfg_.uri; }
    boost::asio::awaitable<void> open() override;
    void close() noexcept override { broker_.publisher_.close(); }
    bool is_open() const noexcept override { return broker_.publisher_.is_open(); }
    std::size_t budget() const override { return broker_.reply_limit_; }
    std::uint64_t life() const override { return is_open() ? broker_.publisher_epoch_ : 0; }
    boost::asio::awaitable<bool> wanted(const journal_entry& entry, std::uint64_t life_when_taken) override;
    boost::asio::awaitable<void> put(const journal_entry& entry, const body_maker& body,
                                     const before_put& ready) override;
    boost::asio::awaitable<bool> finish(const journal_entry& entry) override;

   private:
    beanstalk_broker& broker_;
  };

  boost::asio::awaitable<void> connect(beanstalk::connection& conn);
  boost::asio::awaitable<bool> still_in_broker(beanstalk::connection& conn, const journal_entry& entry,
                                               const std::string* body);
  boost::asio::awaitable<void> watch_strays();
  boost::asio::awaitable<bool> take_over(const reserved_elsewhere& stuck);
  void look_for_strays();
  std::string reply_tube(const journal_entry& entry) const;

  const beanstalkd_config& cfg_;
  std::size_t max_reply_bytes_;
  metrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  beanstalk::connection worker_;
  beanstalk::connection publisher_;
  beanstalk::connection inspector_;
  // The largest reply to put: the broker's max-job-size less what its binlog
  // needs, within max_reply_bytes (see reply_limit). Read at each connect.
  std::size_t reply_limit_;
  std::uint64_t publisher_epoch_ = 1; // counts the publisher's connections
  bool reserves_by_id_ = false;       // beanstalkd 1.12 or later: reserve-job
  std::chrono::steady_clock::duration reserve_backoff_{}; // after reserves that returned nothing at once
  boost::asio::steady_timer worker_sleep_;

  // Jobs reserved for connections not the router's (beanstalk_stuck_jobs.hpp).
  adopter adopt_;
  std::function<bool(const std::string&)> known_;
  async_event strays_check_;
  bool look_for_strays_ = false;
  std::set<std::uint64_t> reported_strays_; // logged once each
  boost::asio::steady_timer inspector_sleep_;
  bool stopping_ = false;
  publisher_role sink_{*this};
};

} // namespace bs_router
