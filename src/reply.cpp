#include "bs_router/reply.hpp"
