#include "bs_router/beanstalk_error.hpp"
