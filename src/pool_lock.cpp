#include "bs_router/pool_lock.hpp"


#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

#include <system_error>

namespace bs_router {

pool_lock::pool_lock(const directory& statedir) : path_(statedir.path_of("lock")) {
  // Opened, never created anew: two routers must lock the same file. So a
  // lock that is not a plain file of ours is refused rather than replaced
  // (unlinking it could let two routers each lock a file of their own).
  try {
    fd_ = open_own_file(statedir, "lock", O_RDWR, 0600);
  } catch (const std::system_error& ex) {
    throw std::runtime_error(ex.what());
  }

  // fcntl record locks are POSIX (flock is not) and belong to the process.
  struct flock whole {};
  whole.l_type = F_WRLCK;
  whole.l_whence = SEEK_SET;
  if (::fcntl(fd_, F_SETLK, &whole) == 0) {
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) == 0) {
      [[maybe_unused]] ssize_t n = ::pwrite(fd_, pid.data(), pid.size(), 0); // for the operator only
    }
    return;
  }
  const int saved = errno;
  struct flock holder {};
  holder.l_type = F_WRLCK;
  holder.l_whence = SEEK_SET;
  std::string who = "another process";
  if (::fcntl(fd_, F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK)
    who = "another bs_router, pid " + std::to_string(holder.l_pid);
  ::close(fd_);
  fd_ = -1;
  if (saved != EACCES && saved != EAGAIN) throw std::runtime_error(path_ + ": " + std::strerror(saved));
  throw std::runtime_error("this pool is served by " + who + " (lock " + path_ + ")");
}

pool_lock::~pool_lock() {
  if (fd_ >= 0) ::close(fd_);
}

} // namespace bs_router
