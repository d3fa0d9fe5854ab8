#pragma once
// The file operations the journal makes on its own files, behind one small
// interface so that tests can make them fail as a disk does (a full disk, an
// I/O error, a failed fdatasync) and check what the journal promises then
// (docs/GUARANTEES.md, *Failure → outcome*). The journal uses the POSIX
// calls themselves unless it is given another set: the price on the hot
// path is one virtual call beside each system call it makes.
//
// Each operation behaves as the POSIX call of its name: -1 with errno set
// on failure; create_new_file as safe_files.hpp's (it throws).

#include <cstddef>
#include <string>
#include <sys/types.h>

#include "bs_router/safe_files.hpp"

namespace bs_router {

class journal_files {
 public:
  virtual ~journal_files() = default;
  virtual ssize_t pwrite(int fd, const void* data, std::size_t size, off_t offset) = 0;
  virtual int fdatasync(int fd) = 0;
  virtual int fsync(int fd) = 0;
  virtual int renameat(int from_dir, const char* from, int to_dir, const char* to) = 0;
  virtual int create_new_file(const directory& dir, const std::string& name, int flags, mode_t mode) = 0;
};

// The POSIX calls; shared by every journal that is given no other.
journal_files& posix_journal_files();

} // namespace bs_router
