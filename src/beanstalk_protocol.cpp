#include "bs_router/beanstalk_protocol.hpp"
