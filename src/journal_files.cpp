#include "bs_router/journal_files.hpp"

#include <cstdio>
#include <fcntl.h>
#include <unistd.h>

namespace bs_router {

namespace {

class posix_files final : public journal_files {
 public:
  ssize_t pwrite(int fd, const void* data, std::size_t size, off_t offset) override {
    return ::pwrite(fd, data, size, offset);
  }
  int fdatasync(int fd) override { return ::fdatasync(fd); }
  int fsync(int fd) override { return ::fsync(fd); }
  int renameat(int from_dir, const char* from, int to_dir, const char* to) override {
    return ::renameat(from_dir, from, to_dir, to);
  }
  int create_new_file(const directory& dir, const std::string& name, int flags, mode_t mode) override {
    return bs_router::create_new_file(dir, name, flags, mode);
  }
};

} // namespace

journal_files& posix_journal_files() {
  static posix_files files;
  return files;
}

} // namespace bs_router
