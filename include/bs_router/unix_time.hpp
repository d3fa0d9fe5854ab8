#pragma once
// The wall clock in whole seconds, as the journal, signatures and beanstalkd
// count time.

#include <chrono>
#include <cstdint>

namespace bs_router {

inline std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

} // namespace bs_router
