#include "support/beanstalkd_server.hpp"
