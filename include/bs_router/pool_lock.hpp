#pragma once
// One router per pool: an advisory lock on <statedir>/lock, held for the
// life of the process. The kernel drops it when the process dies, however it
// dies, so a crash leaves no stale lock behind (unlike a pid file).

#include <string>

#include "bs_router/safe_files.hpp"

namespace bs_router {

class pool_lock {
 public:
  // Takes the lock on "lock" in the statedir held open, or throws
  // std::runtime_error naming the process that holds it ("... is served by
  // another bs_router, pid 1234 (lock /pool1/.bs_router/lock)"), or what is
  // wrong with the lock file (a link, a file of another user: unsafe_path_error).
  explicit pool_lock(const directory& statedir);
  ~pool_lock();
  pool_lock(const pool_lock&) = delete;
  pool_lock& operator=(const pool_lock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

} // namespace bs_router
