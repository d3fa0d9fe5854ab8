#pragma once
// The broker roles of broker.hpp over AMQP 0-9-1 (RabbitMQ), one
// amqp_connection each: the job source consumes the pool's queue, the
// reply sink publishes replies.
//
//   job id       the message's message_id (1..128 of [A-Za-z0-9._:-]); a
//                message without a usable one is handed over with `problem`
//                set and a name no message id can be ("?<time>.<n>"), to be
//                answered on its reply_to when it has one and never run
//   hold         basic.ack once the journal has the job: the broker forgets
//                it, so no broker timeout (consumer_timeout) can hand it out
//                again while it runs. An ack is never confirmed: one lost
//                with the connection brings the message back, and the router
//                knows it by its message id (settle says held).
//   postpone     basic.nack with requeue
//   discard      basic.ack
//   reply        to reply_to when the job names one, else to
//                <reply_queue_prefix><message_id> (declared a durable
//                quorum queue, deleted by the broker after a day unused,
//                so that it outlives the loss of any one node); persistent,
//                correlation_id = message id, mandatory, confirmed. A reply
//                that reply_to's queue does not take (returned: no such
//                queue, or its node is down) goes to the default queue
//                instead, rather than hold up the replies behind it
//
// Prefetch: RabbitMQ 3.10 applies basic.qos to the consumers started after
// it (and quorum queues refuse the channel-wide kind), so set_prefetch()
// takes effect at the next open(); meanwhile the source hands out no more
// than asked for, the rest waiting unacknowledged in its connection.

#include "bs_router/amqp_connection.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/config.hpp"

#include <cstdint>
#include <deque>
#include <set>
#include <string>

namespace bs_router {

// The connection settings of a config's "rabbitmq" section.
amqp_settings amqp_settings_for(const config& cfg);

// Why `d` cannot be run as a job, or "" when it can.
std::string delivery_problem(const amqp_delivery& d, std::size_t max_body_bytes);

class rabbitmq_job_source : public job_source {
 public:
  // `log`, when given, tells of messages acknowledged again and not handed over.
  rabbitmq_job_source(boost::asio::any_io_executor loop, const config& cfg,
                      std::shared_ptr<spdlog::logger> log = nullptr);

  std::string describe() const override;
  std::string node() const override { return conn_.peer(); }
  boost::asio::awaitable<void> open() override;
  void close() noexcept override;

  boost::asio::awaitable<std::optional<broker_job>> next(std::chrono::milliseconds at_most) override;
  boost::asio::awaitable<void> ask_more(std::size_t n) override;
  boost::asio::awaitable<std::vector<broker_job>> collect_more() override;
  boost::asio::awaitable<std::vector<bool>> hold(const std::vector<const broker_job*>& jobs) override;

  bool can_give_back() const override { return false; }
  boost::asio::awaitable<void> give_back(const std::string& id, std::chrono::seconds delay) override;
  boost::asio::awaitable<std::optional<broker_job>> take_back(const std::string& id) override;

  boost::asio::awaitable<broker_standing> settle(const journal_entry& entry) override;
  boost::asio::awaitable<bool> same_job(const journal_entry& entry, const broker_job& job) override;
  boost::asio::awaitable<void> hold_again(const broker_job& job) override;
  boost::asio::awaitable<void> postpone(const broker_job& job) override;
  boost::asio::awaitable<void> discard(const broker_job& job) override;
  // Acknowledged when it was held: nothing of it is left in the broker.
  boost::asio::awaitable<bool> remove(const journal_entry&) override { co_return true; }

  // The router's free slots: how many messages the broker may hand over
  // before the router has taken (and acknowledged) earlier ones. 1..65535;
  // applied at the next open() (see above).
  void set_prefetch(std::size_t free_slots);
  std::uint16_t prefetch() const noexcept { return prefetch_; }
  // Deliveries arrived and not handed over yet.
  std::size_t waiting() const noexcept { return conn_.arrived(); }

  // At most this many message ids acknowledged are remembered (see acked_).
  static constexpr std::size_t max_remembered_acks = 65536;

 private:
  broker_job to_job(amqp_delivery d);
  // Whether `d` is a message this source acknowledged already: then it is
  // acknowledged again, and not handed over.
  boost::asio::awaitable<bool> taken_before(const amqp_delivery& d);
  void remember_ack(const std::string& id);

  const config& cfg_;
  std::shared_ptr<spdlog::logger> log_;
  amqp_connection conn_;
  std::uint16_t prefetch_;
  std::size_t asked_ = 0;
  std::uint64_t unnamed_ = 0; // messages without a usable message_id so far
  // Message ids acknowledged, the newest last. An ack is never confirmed:
  // one lost with its connection (a node killed) brings the message back,
  // maybe after its job was answered and its journal entry gone, when
  // nothing else would know it. Memory only: a router that restarts forgets.
  std::deque<std::string> acked_order_;
  std::set<std::string> acked_;
};

class rabbitmq_reply_sink : public reply_sink {
 public:
  // `log`, when given, tells of replies put elsewhere than asked (put).
  rabbitmq_reply_sink(boost::asio::any_io_executor loop, const config& cfg,
                      std::shared_ptr<spdlog::logger> log = nullptr);

  std::string describe() const override;
  boost::asio::awaitable<void> open() override;
  void close() noexcept override;
  bool is_open() const noexcept override { return conn_.is_open(); }

  std::size_t budget() const override { return cfg_.max_reply_bytes; }
  std::uint64_t life() const override { return 0; }
  boost::asio::awaitable<bool> wanted(const journal_entry& entry, std::uint64_t life_when_taken) override;
  boost::asio::awaitable<void> put(const journal_entry& entry, const body_maker& body,
                                   const before_put& ready) override;
  boost::asio::awaitable<bool> finish(const journal_entry& entry) override;

  // The queue the replies of `entry` go to.
  std::string reply_queue_for(const journal_entry& entry) const;

 private:
  boost::asio::awaitable<void> declare_once(const std::string& queue);
  boost::asio::awaitable<void> publish_to_own(const std::string& queue, const std::string& text, const std::string& id);

  const config& cfg_;
  amqp_connection conn_;
  std::shared_ptr<spdlog::logger> log_;
  // Reply queues declared on this connection, so that progress replies do
  // not declare again; bounded, the oldest forgotten first.
  std::deque<std::string> declared_order_;
  std::set<std::string> declared_;
  std::uint64_t declared_generation_ = 0;
};

} // namespace bs_router
