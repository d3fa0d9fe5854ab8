// The one place that knows which brokers there are.
#include "bs_router/beanstalk_broker.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/config.hpp"
#include "bs_router/rabbitmq_broker.hpp"

namespace bs_router {

broker_roles make_broker(boost::asio::any_io_executor executor, const config& cfg, metrics& counters,
                         std::shared_ptr<spdlog::logger> log) {
  if (cfg.uses_rabbitmq()) {
    // One AMQP connection per role: a reply waiting for its confirm never
    // holds up the deliveries, nor they the replies.
    struct rabbitmq_roles {
      rabbitmq_roles(boost::asio::any_io_executor executor, const config& cfg, std::shared_ptr<spdlog::logger> log)
          : source(executor, cfg, log), sink(executor, cfg, log) {}
      rabbitmq_job_source source;
      rabbitmq_reply_sink sink;
    };
    auto rabbitmq = std::make_shared<rabbitmq_roles>(std::move(executor), cfg, log);
    broker_roles roles;
    roles.source = &rabbitmq->source;
    roles.sink = &rabbitmq->sink;
    roles.owner = std::move(rabbitmq);
    return roles;
  }
  auto beanstalk = std::make_shared<beanstalk_broker>(std::move(executor), cfg, counters, std::move(log));
  broker_roles roles;
  roles.source = &beanstalk->source();
  roles.sink = &beanstalk->sink();
  roles.owner = std::move(beanstalk);
  return roles;
}

} // namespace bs_router
