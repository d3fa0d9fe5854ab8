#include "bs_router/command_line.hpp"
