#pragma once
// Per-job files in logdir: <id>.cmd (the command line run), <id>.out (stdout),
// <id>.err (stderr), kept for a bounded time, count and size.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include "bs_router/safe_files.hpp"

namespace bs_router {

class job_files {
 public:
  // Creates logdir (and parents, mode 0750) if needed and holds it open;
  // throws std::system_error if it cannot, unsafe_path_error if it is not a
  // directory of the router's user that nobody else can write in. max_bytes
  // bounds the size of all jobs' files together (0: none).
  job_files(std::string logdir, int max_age_days, int max_files, std::uint64_t max_bytes = 0);

  std::string cmd_path(const std::string& job_id) const;
  std::string out_path(const std::string& job_id) const;
  std::string err_path(const std::string& job_id) const;

  // Writes <id>.cmd: the argv, one element per line with C-style escapes for
  // bytes that are not printable, so that the file shows exactly what ran.
  void write_command(const std::string& job_id, const std::vector<std::string>& argv) const;

  // Creates <id>.out and <id>.err anew (an existing file of that name is
  // unlinked first) for the child, for reading and writing; O_CLOEXEC fds
  // the caller closes. Throws std::system_error.
  int open_out(const std::string& job_id) const;
  int open_err(const std::string& job_id) const;

  // Reads up to max_bytes from the start of an open file (whatever the
  // descriptor's position); *total gets its size; `name` is for errors.
  static std::string read_head(int fd, const std::string& name, std::size_t max_bytes, std::uint64_t* total);

  // Lists logdir: removes files of jobs older than max_age_days and, past
  // max_files jobs or max_bytes bytes, the oldest jobs' (never the newest
  // job's). The jobs kept are remembered for add_job. Returns how many jobs'
  // files were removed.
  std::size_t prune(std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

  // A job's files are complete: counts them with the jobs remembered, and
  // removes the oldest jobs' files while more than max_files jobs or
  // max_bytes bytes are kept, never this job's own. Costs a few fstatat
  // calls, not a listing. Returns how many jobs' files were removed.
  std::size_t add_job(const std::string& job_id);

  // The jobs and bytes counted now (those of the last prune and add_jobs).
  std::size_t jobs_counted() const { return index_.size(); }
  std::uint64_t bytes_counted() const { return index_bytes_; }

  const std::string& dir() const { return logdir_; }

 private:
  struct kept_job {
    std::vector<std::string> files; // names in logdir
    std::chrono::system_clock::time_point newest{};
    std::uint64_t bytes = 0;
  };
  using age_key = std::pair<std::chrono::system_clock::time_point, std::string>;
  struct older {
    bool operator()(const age_key& a, const age_key& b) const;
  };

  void count(std::string id, kept_job job);
  void forget(std::map<std::string, kept_job>::iterator it);
  std::size_t remove_while_over_bounds(const std::string& keep);
  bool remove_files(const kept_job& job) const;
  std::optional<struct stat> regular_file(const std::string& name) const;

  std::string logdir_;
  directory dir_; // logdir, held open: every per-job file is created in it
  int max_age_days_;
  int max_files_;
  std::uint64_t max_bytes_;
  std::map<std::string, kept_job> index_; // by the id as written in the names
  std::set<age_key, older> by_age_;       // oldest first
  std::uint64_t index_bytes_ = 0;
};

// One output stream of a job (cbsd's stdout or stderr) written into its file
// as it comes. At most `cap` bytes are kept (0: all), then one marker line
// says where it was cut; the rest is only counted.
class capped_output {
 public:
  capped_output(int fd, std::string path, std::uint64_t cap);

  // Never throws: after a failed write nothing more is written, and error()
  // says why.
  void append(std::string_view data) noexcept;

  std::uint64_t received() const { return received_; }
  bool cut() const { return marked_; }
  const std::string& error() const { return error_; }

  // The line that ends a cut file.
  static std::string marker(std::uint64_t cap);

 private:
  int fd_;
  std::string path_;
  std::uint64_t cap_;
  std::uint64_t written_ = 0;
  std::uint64_t received_ = 0;
  bool marked_ = false;
  std::string error_;
};

// What a job's files are named after: beanstalkd's job id as it is; an AMQP
// message id (checked to be 1 to 128 of [A-Za-z0-9._:-] where it is taken)
// behind "msg-", so that prune knows the files as the router's.
inline constexpr std::string_view message_file_prefix = "msg-";
std::string job_file_id(const std::string& broker_id, bool numeric_id);

} // namespace bs_router
