#include "bs_router/client.hpp"
