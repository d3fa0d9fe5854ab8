#include "bs_router/journal.hpp"
