#include "support/wait.hpp"
