#include "bs_router/rabbitmq_broker.hpp"

#include "bs_router/escape.hpp"
#include "bs_router/unix_time.hpp"

#include <algorithm>
#include <chrono>

namespace bs_router {

namespace {

constexpr std::size_t max_declared_remembered = 1024;
// The longest a wait for a delivery lasts before the router looks around.
constexpr std::chrono::milliseconds delivery_poll{5000};


// A queue a controller names in reply_to: any AMQP queue name of printable
// ASCII, the broker's own "amq.gen-..." of a server-named queue included.
bool usable_reply_to(const std::string& name) {
  return !name.empty() && name.size() <= max_queue_name &&
         std::all_of(name.begin(), name.end(), [](unsigned char c) { return c > ' ' && c < 0x7f; });
}

} // namespace

amqp_settings amqp_settings_for(const config& cfg) {
  const rabbitmq_config& r = cfg.rabbitmq;
  amqp_settings s;
  s.uris = r.uris;
  s.heartbeat = std::chrono::seconds(r.heartbeat);
  // As long as the beanstalk client's command deadline: a node that does
  // not answer a method within it is given up for the next one.
  s.operation_timeout = std::chrono::seconds(r.reconnect_timeout) + std::chrono::seconds(5);
  s.publish_timeout = std::chrono::seconds(r.publish_timeout);
  s.max_body_bytes = cfg.max_body_bytes;
  return s;
}

std::string delivery_problem(const amqp_delivery& d, std::size_t max_body_bytes) {
  if (!d.has_message_id || d.message_id.empty()) return "the message has no message_id: it is not run";
  if (!valid_message_id(d.message_id))
    return "message_id \"" + loggable(d.message_id, max_message_id_chars) + "\" is not 1 to " +
           std::to_string(max_message_id_chars) + " characters of A-Z a-z 0-9 . _ : -: it is not run";
  if (d.body_too_large)
    return "the body of " + std::to_string(d.body_size) + " bytes is larger than max_body_bytes (" +
           std::to_string(max_body_bytes) + ")";
  if (!d.reply_to.empty() && !usable_reply_to(d.reply_to))
    return "reply_to \"" + loggable(d.reply_to, max_queue_name) + "\" is not a queue name";
  return "";
}

// --- job source ----------------------------------------------------------------

rabbitmq_job_source::rabbitmq_job_source(boost::asio::any_io_executor loop, const config& cfg,
                                         std::shared_ptr<spdlog::logger> log)
    : cfg_(cfg),
      log_(std::move(log)),
      conn_(std::move(loop), amqp_settings_for(cfg)),
      prefetch_(static_cast<std::uint16_t>(std::clamp(cfg.max_jobs, 1, 65535))) {}

std::string rabbitmq_job_source::describe() const {
  const std::string peer = conn_.peer();
  return "rabbitmq " + (peer.empty() ? cfg_.rabbitmq.uris.front().redacted() : peer) + " queue " +
         loggable(cfg_.rabbitmq.queue, max_queue_name);
}

boost::asio::awaitable<void> rabbitmq_job_source::open() {
  co_await conn_.open();
  co_await conn_.declare_job_queue(cfg_.rabbitmq.queue);
  co_await conn_.set_prefetch(prefetch_);
  co_await conn_.consume(cfg_.rabbitmq.queue);
  asked_ = 0;
}

void rabbitmq_job_source::close() noexcept { conn_.close(); }

void rabbitmq_job_source::set_prefetch(std::size_t free_slots) {
  prefetch_ = static_cast<std::uint16_t>(std::clamp<std::size_t>(free_slots, 1, 65535));
}

broker_job rabbitmq_job_source::to_job(amqp_delivery d) {
  broker_job job;
  job.taken_at = unix_now();
  job.problem = delivery_problem(d, cfg_.max_body_bytes);
  // An unusable message id names nothing: not a reply queue, not a journal
  // entry. Such a message still needs a name of its own while its error
  // reply is on its way: one no message id can be ("?" is not among their
  // characters), so that two of them are never taken for the same job, nor
  // one for a job whose id it is. The time keeps it apart from the names of
  // an earlier life of the router still in its journal.
  if (valid_message_id(d.message_id))
    job.id = d.message_id;
  else
    job.id = "?" + std::to_string(job.taken_at) + "." + std::to_string(++unnamed_);
  job.numeric_id = false;
  job.body = std::move(d.body);
  // An unusable reply_to is dropped: the error reply goes to the default queue.
  if (usable_reply_to(d.reply_to)) job.reply_to = d.reply_to;
  job.handle = d.delivery_tag;
  return job;
}

void rabbitmq_job_source::remember_ack(const std::string& id) {
  if (!valid_message_id(id) || !acked_.insert(id).second) return;
  acked_order_.push_back(id);
  if (acked_order_.size() > max_remembered_acks) {
    acked_.erase(acked_order_.front());
    acked_order_.pop_front();
  }
}

boost::asio::awaitable<bool> rabbitmq_job_source::taken_before(const amqp_delivery& d) {
  if (!valid_message_id(d.message_id) || !acked_.count(d.message_id)) co_return false;
  if (log_)
    log_->warn("job {} came back after it was acknowledged (the ack was lost with its connection, or the message "
               "was published twice); acknowledged again, not run again",
               loggable(d.message_id, max_message_id_chars));
  co_await conn_.ack(d.delivery_tag);
  co_return true;
}

boost::asio::awaitable<std::optional<broker_job>> rabbitmq_job_source::next(std::chrono::milliseconds at_most) {
  // The broker pushes deliveries; the wait only bounds how long the router
  // goes without looking at anything else.
  const std::chrono::milliseconds wait = std::min<std::chrono::milliseconds>(at_most, delivery_poll);
  auto d = co_await conn_.next(wait);
  if (!d || co_await taken_before(*d)) co_return std::nullopt;
  std::optional<broker_job> job = to_job(std::move(*d));
  co_return job;
}

boost::asio::awaitable<void> rabbitmq_job_source::ask_more(std::size_t n) {
  // The broker pushes deliveries (up to the prefetch): nothing to send.
  asked_ = n;
  co_return;
}

boost::asio::awaitable<std::vector<broker_job>> rabbitmq_job_source::collect_more() {
  std::vector<broker_job> jobs;
  std::vector<amqp_delivery> arrived = conn_.take_arrived(asked_);
  for (amqp_delivery& d : arrived)
    if (!co_await taken_before(d)) jobs.push_back(to_job(std::move(d)));
  asked_ = 0;
  co_return jobs;
}

boost::asio::awaitable<std::vector<bool>> rabbitmq_job_source::hold(const std::vector<const broker_job*>& jobs) {
  std::vector<bool> held(jobs.size(), false);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    try {
      co_await conn_.ack(jobs[i]->handle);
      held[i] = true;
      remember_ack(jobs[i]->id);
    } catch (const broker_error&) {
      // The connection failed: this ack and the rest are not known to have
      // reached the broker; settle() tells once the messages come again.
      break;
    }
  }
  co_return held;
}

boost::asio::awaitable<void> rabbitmq_job_source::give_back(const std::string& id, std::chrono::seconds) {
  throw broker_error("give_back", std::make_error_code(std::errc::operation_not_supported),
                     "not with RabbitMQ (job " + loggable(id, max_message_id_chars) + ")");
  co_return;
}

boost::asio::awaitable<std::optional<broker_job>> rabbitmq_job_source::take_back(const std::string&) {
  co_return std::nullopt;
}

boost::asio::awaitable<broker_standing> rabbitmq_job_source::settle(const journal_entry&) {
  // The journal's record came before the ack: the router holds the job
  // whatever became of the ack, and a redelivery is known by its message id.
  co_return broker_standing::held;
}

boost::asio::awaitable<bool> rabbitmq_job_source::same_job(const journal_entry& entry, const broker_job& job) {
  co_return job.id == entry.broker_id && job.body == entry.body;
}

boost::asio::awaitable<void> rabbitmq_job_source::hold_again(const broker_job& job) {
  co_await conn_.ack(job.handle);
}

boost::asio::awaitable<void> rabbitmq_job_source::postpone(const broker_job& job) {
  co_await conn_.nack(job.handle, true);
}

boost::asio::awaitable<void> rabbitmq_job_source::discard(const broker_job& job) { co_await conn_.ack(job.handle); }

// --- reply sink ------------------------------------------------------------------

rabbitmq_reply_sink::rabbitmq_reply_sink(boost::asio::any_io_executor loop, const config& cfg,
                                         std::shared_ptr<spdlog::logger> log)
    : cfg_(cfg), conn_(std::move(loop), amqp_settings_for(cfg)), log_(std::move(log)) {}

std::string rabbitmq_reply_sink::describe() const {
  const std::string peer = conn_.peer();
  return "rabbitmq " + (peer.empty() ? cfg_.rabbitmq.uris.front().redacted() : peer) + " replies to " +
         loggable(cfg_.rabbitmq.reply_queue_prefix, max_queue_name) + "<message id>";
}

boost::asio::awaitable<void> rabbitmq_reply_sink::open() {
  declared_.clear();
  declared_order_.clear();
  co_await conn_.open();
  declared_generation_ = conn_.generation();
}

void rabbitmq_reply_sink::close() noexcept { conn_.close(); }

boost::asio::awaitable<bool> rabbitmq_reply_sink::wanted(const journal_entry&, std::uint64_t) {
  // A message id is the controller's own name for the job, never reused
  // for another by the broker: its reply is always wanted.
  co_return true;
}

std::string rabbitmq_reply_sink::reply_queue_for(const journal_entry& entry) const {
  std::string reply_to = entry.reply_to;
  if (!reply_to.empty()) return reply_to;
  return cfg_.rabbitmq.reply_queue_prefix + entry.broker_id;
}

// Declares reply queue `queue` unless this connection has declared it already.
boost::asio::awaitable<void> rabbitmq_reply_sink::declare_once(const std::string& queue) {
  if (declared_generation_ != conn_.generation()) {
    declared_.clear();
    declared_order_.clear();
    declared_generation_ = conn_.generation();
  }
  if (declared_.count(queue)) co_return;
  co_await conn_.declare_reply_queue(queue);
  declared_.insert(queue);
  declared_order_.push_back(queue);
  if (declared_order_.size() > max_declared_remembered) {
    declared_.erase(declared_order_.front());
    declared_order_.pop_front();
  }
}

boost::asio::awaitable<void> rabbitmq_reply_sink::put(const journal_entry& entry, const body_maker& body,
                                                      const before_put& ready) {
  const std::string id = entry.broker_id;
  const bool own_queue = entry.reply_to.empty();
  // A message without a usable message id (rabbitmq_job_source::to_job)
  // has no queue of its own: without a reply_to, its error reply has
  // nowhere to go, and is dropped as sent.
  if (own_queue && !valid_message_id(id)) co_return;
  const std::string queue = reply_queue_for(entry);
  const std::string text = body(budget());
  if (ready) co_await ready();
  if (own_queue) {
    co_await publish_to_own(queue, text, id);
    co_return;
  }
  // A job's reply_to names a queue of the controller's: it must exist
  // (mandatory), or the publish fails as returned.
  bool returned = false;
  try {
    co_await conn_.publish(queue, text, id, id);
  } catch (const broker_error& e) {
    if (e.code() != make_error_code(amqp_errc::returned)) throw;
    returned = true;
  }
  if (!returned) co_return;
  // No queue took it: the controller's queue is gone, or on a node that is
  // down. Tried again, it would hold up every reply behind it for as long;
  // so it goes to the pool's own reply queue for its id instead, where the
  // controller finds it (and a message without a usable id has none).
  const std::string fallback = cfg_.rabbitmq.reply_queue_prefix + id;
  if (!valid_message_id(id)) {
    if (log_) log_->warn("the reply of {} was returned by the broker from reply_to {}; it has no message id, "
                         "so no queue of its own: dropped", loggable(id), loggable(queue, max_queue_name));
    co_return;
  }
  if (log_) log_->warn("the reply of job {} was returned by the broker from reply_to {} (no such queue, or its node "
                       "is down); put on {} instead", loggable(id), loggable(queue, max_queue_name),
                       loggable(fallback, max_queue_name));
  co_await publish_to_own(fallback, text, id);
}

// A queue of the pool's own, declared on this connection before, may be gone
// since (its controller deleted it after the final reply, or x-expires did):
// a reply it returns is put again once the queue is declared again, rather
// than retried for ever.
boost::asio::awaitable<void> rabbitmq_reply_sink::publish_to_own(const std::string& queue, const std::string& text,
                                                                 const std::string& id) {
  co_await declare_once(queue);
  try {
    co_await conn_.publish(queue, text, id, id);
    co_return;
  } catch (const broker_error& e) {
    if (e.code() != make_error_code(amqp_errc::returned)) throw;
  }
  declared_.erase(queue);
  co_await declare_once(queue);
  co_await conn_.publish(queue, text, id, id);
}

boost::asio::awaitable<bool> rabbitmq_reply_sink::finish(const journal_entry&) {
  // The job was acknowledged when it was held: nothing is left to remove.
  co_return true;
}

} // namespace bs_router
