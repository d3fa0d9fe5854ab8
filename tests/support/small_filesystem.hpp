#pragma once
// A tiny filesystem mounted on a directory for one test (a tmpfs of a few
// KiB on Linux, as root), to see what the router does when the disk is full.
// Unmounted when the object goes, whatever the test did.

#include <cstddef>
#include <filesystem>
#include <string>

namespace bs_router::testing {

class small_filesystem {
 public:
  // Mounts `bytes` of tmpfs, mode 0700, on `dir` (which must exist). Check
  // mounted(): where that cannot be done (not Linux, not root) the test
  // should skip, saying why().
  small_filesystem(const std::filesystem::path& dir, std::size_t bytes);
  ~small_filesystem();
  small_filesystem(const small_filesystem&) = delete;
  small_filesystem& operator=(const small_filesystem&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
  std::string why_;
};

} // namespace bs_router::testing
