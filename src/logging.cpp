#include "bs_router/logging.hpp"
