#include "bs_router/job.hpp"
