#pragma once
// Per-job files in logdir: <id>.cmd (the command line run), <id>.out (stdout),
// <id>.err (stderr), kept for a bounded time and count.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bs_router/safe_files.hpp"

namespace bs_router {

class job_files {
 public:
  // Creates logdir (and parents, mode 0750) if needed and holds it open;
  // throws std::system_error if it cannot, unsafe_path_error if it is not a
  // directory of the router's user that nobody else can write in.
  job_files(std::string logdir, int max_age_days, int max_files);

  std::string cmd_path(std::uint64_t job_id) const;
  std::string out_path(std::uint64_t job_id) const;
  std::string err_path(std::uint64_t job_id) const;

  // Writes <id>.cmd: the argv, one element per line with C-style escapes for
  // bytes that are not printable, so that the file shows exactly what ran.
  void write_command(std::uint64_t job_id, const std::vector<std::string>& argv) const;

  // Creates <id>.out and <id>.err anew (an existing file of that name is
  // unlinked first) for the child, for reading and writing; O_CLOEXEC fds
  // the caller closes. Throws std::system_error.
  int open_out(std::uint64_t job_id) const;
  int open_err(std::uint64_t job_id) const;

  // Reads up to max_bytes from the start of an open file (whatever the
  // descriptor's position); *total gets its size; `name` is for errors.
  static std::string read_head(int fd, const std::string& name, std::size_t max_bytes, std::uint64_t* total);

  // Removes files of jobs older than max_age_days and, past max_files jobs,
  // the oldest. Returns how many jobs' files were removed.
  std::size_t prune(std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;

  const std::string& dir() const { return logdir_; }

 private:
  std::string logdir_;
  directory dir_; // logdir, held open: every per-job file is created in it
  int max_age_days_;
  int max_files_;
};

// Shell-like display of an argv for logs and .cmd files (never executed).
std::string describe_argv(const std::vector<std::string>& argv);

} // namespace bs_router
