#include "bs_router/lookup.hpp"
