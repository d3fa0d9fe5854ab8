#pragma once
// Runs child processes, never through a shell, on the event loop: started by
// posix_spawn where the platform has chdir and closefrom file actions (glibc
// 2.34, FreeBSD 13.1), else by fork/exec (process_start.hpp); reaped
// through a SIGCHLD signal_set, never by a thread per child. Output the
// caller wants to see comes through pipes read on the same event loop.
// The runner and its io_context are used from one thread. Children are waited
// for by pid, so children that other code starts are left for it to reap.

#include <boost/asio/io_context.hpp>
#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/signal_set.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace bs_router {

struct process_spec {
  std::vector<std::string> argv; // argv[0] is the path executed (execv: no PATH search)
  std::vector<std::string> env;  // the whole environment, "NAME=value"
  std::string cwd;               // working directory of the child
  int stdout_fd = -1;            // >= 0: the child's stdout is this fd; else captured
  int stderr_fd = -1;            // >= 0: the child's stderr is this fd; else /dev/null
  std::size_t capture_limit = 64 * 1024; // captured stdout kept; the rest is read and dropped
  std::chrono::milliseconds timeout{0};   // 0 = none; then SIGTERM to the process group
  std::chrono::milliseconds kill_grace{10000}; // after SIGTERM, SIGKILL to the group
  // When set, the child's stdout (stderr) is a pipe that the runner drains on
  // the event loop, handing each chunk here as it is read; stdout_fd
  // (stderr_fd) is then not used. A sink must not throw (one that does is
  // called no more). It is not called once run() has completed: output that
  // comes later, from a process the child left behind holding the pipe, is
  // read and dropped until that process closes it, so that it neither blocks
  // on a full pipe nor dies of SIGPIPE.
  std::function<void(std::string_view)> stdout_sink;
  std::function<void(std::string_view)> stderr_sink;
};

struct process_result {
  int exit_code = -1;           // exit status, or 128 + signal number
  int term_signal = 0;          // the signal that ended it, 0 if it exited
  bool timed_out = false;
  bool start_failed = false;    // fork, pipe, chdir or exec failed: nothing ran
  std::string start_error;      // e.g. "exec /usr/local/bin/cbsd: No such file or directory"
  std::string captured_stdout;  // when stdout_fd < 0
  bool stdout_truncated = false;
  std::chrono::steady_clock::duration elapsed{};
};

class process_runner {
 public:
  explicit process_runner(boost::asio::io_context& io);
  // Children still running are neither killed nor waited for; their run()
  // completes without waiting, with exit_code -1.
  ~process_runner();
  process_runner(const process_runner&) = delete;
  process_runner& operator=(const process_runner&) = delete;

  // Starts the child in a process group of its own and completes when it has
  // exited and (if captured) its stdout reached EOF.
  boost::asio::awaitable<process_result> run(process_spec spec);

  // SIGTERM to every running child's process group (shutdown).
  void terminate_all();
  std::size_t running() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace bs_router
