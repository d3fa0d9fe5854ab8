#pragma once
// Tests wait on conditions, never on the clock: a condition is polled until it
// holds, and the overall bound only turns a broken test into a failure
// instead of a hang.

#include <chrono>
#include <functional>

namespace bs_router::testing {

// True as soon as cond() is true; false if it is still false after `limit`
// (cond is always asked once more at the deadline).
bool wait_until(const std::function<bool()>& cond,
                std::chrono::milliseconds limit = std::chrono::seconds{30},
                std::chrono::milliseconds poll = std::chrono::milliseconds{10});

} // namespace bs_router::testing
