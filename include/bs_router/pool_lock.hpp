#pragma once
// One router per pool: an advisory lock on <statedir>/lock, held for the
// life of the process. The kernel drops it when the process dies, however it
// dies, so a crash leaves no stale lock behind (unlike a pid file).

#include <string>

namespace bs_router {

class pool_lock {
 public:
  // Takes the lock or throws std::runtime_error naming the process that holds
  // it ("... is served by another bs_router, pid 1234 (lock /pool1/.bs_router/lock)").
  // Creates dir if needed.
  explicit pool_lock(const std::string& dir);
  ~pool_lock();
  pool_lock(const pool_lock&) = delete;
  pool_lock& operator=(const pool_lock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

} // namespace bs_router
