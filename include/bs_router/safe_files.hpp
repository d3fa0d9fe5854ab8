#pragma once
// Files the router writes as root, in directories that someone else may be
// able to write in too. Every one is opened relative to a directory held
// open, never through a symbolic link (O_NOFOLLOW), with O_CLOEXEC, and used
// only if it is a regular file owned by the router's user with one link:
// nothing planted there (a link to /etc/passwd, a FIFO, somebody's own file)
// is ever truncated or written through.

#include <stdexcept>
#include <string>
#include <utility>

#include <sys/types.h>

namespace bs_router {

// A directory held open by descriptor: names are looked up in it, so a path
// renamed or replaced after the open changes nothing for the router.
class directory {
 public:
  directory() = default;
  directory(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~directory();
  directory(directory&& other) noexcept;
  directory& operator=(directory&& other) noexcept;
  directory(const directory&) = delete;
  directory& operator=(const directory&) = delete;

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  // "<path>/<name>", for messages.
  std::string path_of(const std::string& name) const;

 private:
  int fd_ = -1;
  std::string path_;
};

// A path that is there but that the router must not use: a link, another
// user's file, a directory others can write in. The message names the path
// and what is wrong ("/pool1/.bs_router: owned by uid 1001, not by uid 0").
struct unsafe_path_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "a symbolic link", "a FIFO", "a directory", ... for messages.
std::string file_type_name(mode_t mode);

// Creates `path` and its missing parents (new ones get `mode`), then opens it
// with O_DIRECTORY | O_NOFOLLOW and checks, on the open descriptor, that it is
// owned by the effective user and writable by nobody else. Throws
// std::system_error when it cannot be created or opened, unsafe_path_error
// when it is not private.
directory open_private_directory(const std::string& path, mode_t mode);
// The same checks, but nothing is created: a missing directory gives one that
// is not open.
directory open_existing_private_directory(const std::string& path);
// Opens a directory to look names up in, with no check of its owner (the
// log file's directory, which may be /var/log); creates it and its missing
// parents with `mode` when missing.
directory open_directory(const std::string& path, mode_t mode);

// Opens `name` in `dir` with `flags` (O_WRONLY | O_APPEND, O_RDWR, ...),
// creating it with `mode` when missing. An existing file must be a regular
// file of ours with one link, else unsafe_path_error; permissions beyond
// `mode` are taken away. Never blocks (a FIFO is refused, not waited on).
// Throws std::system_error when it cannot be opened.
int open_own_file(const directory& dir, const std::string& name, int flags, mode_t mode);

// Creates `name` in `dir` anew (O_CREAT | O_EXCL) with `mode`: whatever has
// that name (a file of an earlier job, a planted link) is unlinked first,
// never opened. Throws std::system_error.
int create_new_file(const directory& dir, const std::string& name, int flags, mode_t mode);

// Opens `name` in `dir` for reading. Returns -1 (errno ENOENT) when it is
// missing; throws unsafe_path_error when it is not a regular file of ours
// with one link, std::system_error for other failures.
int open_own_file_for_reading(const directory& dir, const std::string& name);

} // namespace bs_router
