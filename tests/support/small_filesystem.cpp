#include "support/small_filesystem.hpp"

#include <cerrno>
#include <cstring>

#ifdef __linux__
#include <sys/mount.h>
#endif

namespace bs_router::testing {

small_filesystem::small_filesystem(const std::filesystem::path& dir, std::size_t bytes) : dir_(dir) {
#ifdef __linux__
  const std::string options = "size=" + std::to_string(bytes) + ",mode=0700";
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) == 0) {
    mounted_ = true;
  } else {
    why_ = "cannot mount a tmpfs on " + dir_.string() + ": " + std::strerror(errno);
  }
#else
  (void)bytes;
  why_ = "a small tmpfs is mounted on Linux only";
#endif
}

small_filesystem::~small_filesystem() {
#ifdef __linux__
  // Lazily if something still holds it open: never leave it mounted.
  if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
#endif
}

} // namespace bs_router::testing
