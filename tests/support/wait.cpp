#include "support/wait.hpp"

#include <thread>

namespace bs_router::testing {

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds limit,
                std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (cond()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(poll, deadline - now));
  }
}

} // namespace bs_router::testing
