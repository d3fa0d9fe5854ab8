// The one place that knows which brokers there are.
#include "bs_router/beanstalk_broker.hpp"
#include "bs_router/broker.hpp"
#include "bs_router/config.hpp"

namespace bs_router {

broker_roles make_broker(boost::asio::any_io_executor executor, const config& cfg, metrics& counters,
                         std::shared_ptr<spdlog::logger> log) {
  auto beanstalk = std::make_shared<beanstalk_broker>(std::move(executor), cfg, counters, std::move(log));
  broker_roles roles;
  roles.source = &beanstalk->source();
  roles.sink = &beanstalk->sink();
  roles.owner = std::move(beanstalk);
  return roles;
}

} // namespace bs_router
