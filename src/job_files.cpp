#include "bs_router/job_files.hpp"
