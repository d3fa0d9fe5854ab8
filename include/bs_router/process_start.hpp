#pragma once
// Starting one child process, never through a shell, with the descriptors
// it is given as its stdin, stdout and stderr and nothing else open: by
// posix_spawn where the platform has chdir and closefrom file actions (glibc
// 2.34, FreeBSD 13.1), else by fork/exec. The child runs in a process group
// of its own, with the signals it must be killable by at their defaults.
// Waiting for it is process_runner's (process.hpp).

#include <optional>
#include <string>
#include <sys/types.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace bs_router {

// Owns one descriptor of the parent; closed when it goes out of scope.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~unique_fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct pipe_ends {
  unique_fd read;
  unique_fd write;
};

// A pipe whose two ends close on exec; empty (errno set) when pipe2 failed.
std::optional<pipe_ends> make_cloexec_pipe();

// The text of an errno value, e.g. "No such file or directory".
std::string errno_text(int error);

// The descriptors a child gets as 0, 1 and 2.
struct child_stdio {
  int stdin_fd;
  int stdout_fd;
  int stderr_fd;
};

struct started_child {
  pid_t pid = -1;
  // Started by fork: the read end of the pipe on which the child reports a
  // setpgid, redirect, chdir or exec that failed (read_start_failure). Not
  // open when posix_spawn started it, which reports those itself.
  unique_fd start_report;
  std::string error; // not empty: nothing ran, e.g. "fork: Resource temporarily unavailable"
};

// Starts argv.front() (execve: no PATH search) with argv and the whole
// environment env ("NAME=value"), in cwd (empty: the parent's directory).
// argv must not be empty.
started_child start_child(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          const std::string& cwd, const child_stdio& stdio);

// Reads the start report until EOF (the child exec'd: empty) or a failure,
// then says what failed, e.g. "exec /usr/local/bin/cbsd: No such file or
// directory". `path` and `cwd` are what start_child was given.
std::optional<std::string> read_start_failure(int report_fd, const std::string& path, const std::string& cwd);

} // namespace bs_router
