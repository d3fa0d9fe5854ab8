#include "bs_router/process.hpp"
