#include "bs_router/safe_files.hpp"

#include "bs_router/posix_io.hpp"

#include <cerrno>
#include <cstdio>
#include <string_view>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bs_router {

namespace {

std::string without_trailing_slashes(std::string path) {
  // "dir/" would follow a link named dir: O_NOFOLLOW applies to the last
  // component only when nothing comes after it.
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// mkdir -p: creates each missing component with `mode`; existing ones are
// left as they are (their checks, where they matter, come after the open).
void make_directories(const std::string& path, mode_t mode) {
  std::string::size_type next = 0;
  while (next != std::string::npos) {
    next = path.find('/', next + 1);
    const std::string prefix = path.substr(0, next);
    if (prefix.empty() || prefix == "/") continue;
    if (::mkdir(prefix.c_str(), mode) == 0) continue;
    const int error = errno;
    struct stat status {};
    if (error == EEXIST && ::stat(prefix.c_str(), &status) == 0 && S_ISDIR(status.st_mode)) continue;
    throw_errno(error == EEXIST ? ENOTDIR : error, "cannot create directory " + prefix);
  }
}

std::string uid_text(uid_t uid) { return "uid " + std::to_string(static_cast<unsigned long long>(uid)); }

// The router's user, asked once: it does not change while the router runs.
uid_t own_uid() {
  static const uid_t uid = ::geteuid();
  return uid;
}

// What is wrong with a file the router would write or read as its own, or
// an empty string when nothing is.
std::string own_file_problem(const struct stat& status) {
  if (!S_ISREG(status.st_mode)) return file_type_name(status.st_mode) + ", not a regular file";
  if (status.st_uid != own_uid())
    return "owned by " + uid_text(status.st_uid) + ", not by the router's " + uid_text(own_uid());
  if (status.st_nlink != 1)
    return "has " + std::to_string(static_cast<unsigned long long>(status.st_nlink)) +
           " hard links; the router writes only a file with one";
  return {};
}

// After a failed open: a name that exists but is not a regular file (a
// link, which O_NOFOLLOW refuses with ELOOP, or EMLINK on FreeBSD; a FIFO
// without a reader, ENXIO; a directory) is reported as what it is.
[[noreturn]] void throw_open_failure(const directory& dir, const std::string& name, int error) {
  struct stat status {};
  if (::fstatat(dir.fd(), name.c_str(), &status, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(status.st_mode))
    throw unsafe_path_error(dir.path_of(name) + ": " + file_type_name(status.st_mode) +
                            ", not a regular file; the router opens no such file");
  throw_errno(error, "cannot open " + dir.path_of(name));
}

// Checks what was opened and trims its mode to `mode`: the umask only takes
// bits away, but an inherited ACL (ZFS with aclinherit=passthrough) may add
// some. Without `nonblocking` the descriptor is taken as opened without
// O_NONBLOCK and no fcntl is spent on it.
int checked(int fd, const directory& dir, const std::string& name, mode_t mode, bool nonblocking = true) {
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    const int error = errno;
    ::close(fd);
    throw_errno(error, "cannot stat " + dir.path_of(name));
  }
  if (std::string problem = own_file_problem(status); !problem.empty()) {
    ::close(fd);
    throw unsafe_path_error(dir.path_of(name) + ": " + problem);
  }
  // O_NONBLOCK was there so that a FIFO could not hold the open: taken off.
  if (nonblocking) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK) != 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  if ((status.st_mode & 07777 & ~mode) != 0 && ::fchmod(fd, status.st_mode & mode & 07777) != 0) {
    const int error = errno;
    ::close(fd);
    throw_errno(error, "cannot change the mode of " + dir.path_of(name));
  }
  return fd;
}

directory open_checked_directory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    struct stat status {};
    if (error != ENOENT && ::lstat(path.c_str(), &status) == 0 && S_ISLNK(status.st_mode))
      throw unsafe_path_error(path + ": a symbolic link, not a directory; the router follows no link there");
    throw_errno(error, "cannot open directory " + path);
  }
  directory dir(fd, path);
  struct stat status {};
  if (::fstat(fd, &status) != 0) throw_errno(errno, "cannot stat " + path);
  if (status.st_uid != own_uid())
    throw unsafe_path_error(path + ": owned by " + uid_text(status.st_uid) + ", not by the router's " +
                            uid_text(own_uid()) + "; the router keeps its files only in a directory of its own");
  if ((status.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
    throw unsafe_path_error(path + ": writable by " +
                            std::string((status.st_mode & S_IWOTH) ? "others" : "its group") + " (mode " + mode +
                            "); the router keeps its files only in a directory nobody else can write in");
  }
  return dir;
}

} // namespace

directory::~directory() {
  if (fd_ >= 0) ::close(fd_);
}

directory::directory(directory&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) { other.fd_ = -1; }

directory& directory::operator=(directory&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

std::string directory::path_of(const std::string& name) const {
  if (!path_.empty() && path_.back() == '/') return path_ + name;
  return path_ + "/" + name;
}

std::string file_type_name(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a file";
}

directory open_private_directory(const std::string& path, mode_t mode) {
  const std::string dir = without_trailing_slashes(path);
  make_directories(dir, mode);
  return open_checked_directory(dir);
}

directory open_existing_private_directory(const std::string& path) {
  const std::string dir = without_trailing_slashes(path);
  struct stat status {};
  if (::lstat(dir.c_str(), &status) != 0 && errno == ENOENT) return directory();
  return open_checked_directory(dir);
}

directory open_directory(const std::string& path, mode_t mode) {
  const std::string dir = without_trailing_slashes(path);
  make_directories(dir, mode);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, "cannot open directory " + dir);
  return directory(fd, dir);
}

int open_own_file(const directory& dir, const std::string& name, int flags, mode_t mode) {
  const int fd =
      ::openat(dir.fd(), name.c_str(), flags | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, mode);
  if (fd < 0) throw_open_failure(dir, name, errno);
  return checked(fd, dir, name, mode);
}

int create_new_file(const directory& dir, const std::string& name, int flags, mode_t mode) {
  const int create = (flags & ~O_NONBLOCK) | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC;
  int fd = ::openat(dir.fd(), name.c_str(), create, mode);
  if (fd < 0 && errno == EEXIST) {
    // A name left by an earlier life (or planted) is removed, not opened: an
    // unlinked link leaves its target as it was. (A directory cannot be
    // unlinked so; the second open reports it.) Tried only when the name is
    // taken, which saves a failing unlink on every new file.
    ::unlinkat(dir.fd(), name.c_str(), 0);
    fd = ::openat(dir.fd(), name.c_str(), create, mode);
  }
  if (fd < 0) throw_open_failure(dir, name, errno);
  // Opened without O_NONBLOCK (O_EXCL makes a new file: no FIFO can hold
  // the open), so one fstat is the whole check: each job creates three such
  // files, and the fcntl and geteuid beside it were 6 of its system calls.
  return checked(fd, dir, name, mode, false);
}

int open_own_file_for_reading(const directory& dir, const std::string& name) {
  const int fd = ::openat(dir.fd(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return -1;
    throw_open_failure(dir, name, errno);
  }
  return checked(fd, dir, name, 07777);
}

} // namespace bs_router
