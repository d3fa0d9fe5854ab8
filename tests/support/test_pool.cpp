#include "support/test_pool.hpp"
