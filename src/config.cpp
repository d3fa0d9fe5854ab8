#include "bs_router/config.hpp"
