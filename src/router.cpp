#include "bs_router/router.hpp"
