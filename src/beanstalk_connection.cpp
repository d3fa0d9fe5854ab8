#include "bs_router/beanstalk_connection.hpp"
