#pragma once
// The broker sections of the config: "beanstalkd" and "rabbitmq" (see
// rabbitmq_config.hpp for the parts of the latter that are not keys).

#include "bs_router/config.hpp"
#include "bs_router/config_object.hpp"

namespace bs_router::config_detail {

void read_beanstalkd(config_object& object, beanstalkd_config& out);
// The "rabbitmq" section (see rabbitmq_config.hpp).
void read_rabbitmq(config_object& object, rabbitmq_config& out);

} // namespace bs_router::config_detail
