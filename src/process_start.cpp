#include "bs_router/process_start.hpp"

#include <array>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <fcntl.h>
#include <spawn.h>
#include <system_error>
#include <unistd.h>

// CMakeLists.txt sets it for this file from what spawn.h offers; without it
// every child would silently be started by fork.
#ifndef BS_ROUTER_HAVE_SPAWN_NP
#error "BS_ROUTER_HAVE_SPAWN_NP is not defined (see CMakeLists.txt)"
#endif

namespace bs_router {

namespace {

// Without closefrom() the child closes descriptors one by one up to the
// descriptor limit; a huge limit (RLIMIT_NOFILE = 1M is common) would make
// every start slow, so the loop stops here.
constexpr long close_loop_cap = 65536;

// Signals whose disposition the child resets before exec: ignored ones would
// otherwise survive exec, and cbsd must be killable by the usual signals.
constexpr std::array reset_signals{SIGPIPE, SIGCHLD, SIGTERM, SIGINT, SIGHUP,
                                   SIGQUIT, SIGALRM, SIGUSR1, SIGUSR2};

// What the child writes to the report pipe when it cannot exec.
enum class start_stage : int { setpgid, redirect, chdir, exec };

struct start_failure_report {
  start_stage stage;
  int error;
};

// argv/envp as execve wants them, built before fork: the child may not allocate.
struct exec_strings {
  explicit exec_strings(const std::vector<std::string>& strings) {
    pointers.reserve(strings.size() + 1);
    for (const auto& s : strings) pointers.push_back(const_cast<char*>(s.c_str()));
    pointers.push_back(nullptr);
  }
  char* const* data() const { return pointers.data(); }
  std::vector<char*> pointers;
};

// Everything the child needs, as plain data prepared in the parent.
struct child_setup {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* cwd;   // nullptr: stay in the parent's directory
  int stdin_fd;      // /dev/null
  int stdout_fd;
  int stderr_fd;
  int report_fd;     // write end of the CLOEXEC report pipe
  long close_limit;  // for the close loop when closefrom() is missing
};

// Between fork and exec: async-signal-safe calls only.
[[noreturn]] void fail_in_child(int report_fd, start_stage stage, int error) {
  const start_failure_report report{stage, error};
  ssize_t written;
  do {
    written = ::write(report_fd, &report, sizeof report);
  } while (written < 0 && errno == EINTR);
  ::_exit(127);
}

// A source descriptor below 3 would be overwritten by the dup2 onto 0..2
// before its own turn; move it out of the way first.
int move_above_stdio(int fd) {
  if (fd >= 3) return fd;
  return ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

void close_descriptors_from(int first, long close_limit) {
#if defined(__FreeBSD__) || \
    (defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34)))
  (void)close_limit;
  ::closefrom(first);
#else
  for (long fd = first; fd < close_limit; ++fd) ::close(static_cast<int>(fd));
#endif
}

[[noreturn]] void exec_child(const child_setup& setup) {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  for (int signal_number : reset_signals) ::sigaction(signal_number, &default_action, nullptr);
  // The parent blocked everything around fork() so no inherited handler could
  // run here; now the dispositions are default, unblock all.
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  ::sigprocmask(SIG_SETMASK, &empty_mask, nullptr);

  int report_fd = move_above_stdio(setup.report_fd);
  if (report_fd < 0) ::_exit(127);

  if (::setpgid(0, 0) != 0) fail_in_child(report_fd, start_stage::setpgid, errno);

  const int sources[3] = {move_above_stdio(setup.stdin_fd), move_above_stdio(setup.stdout_fd),
                          move_above_stdio(setup.stderr_fd)};
  for (int target = 0; target < 3; ++target) {
    if (sources[target] < 0 || ::dup2(sources[target], target) < 0)
      fail_in_child(report_fd, start_stage::redirect, errno);
  }

  if (setup.cwd != nullptr && ::chdir(setup.cwd) != 0)
    fail_in_child(report_fd, start_stage::chdir, errno);

  // Keep only 0..2 and the report pipe, which sits at 3 and closes on exec.
  if (report_fd != 3) {
    if (::dup2(report_fd, 3) < 0) fail_in_child(report_fd, start_stage::redirect, errno);
    report_fd = 3;
  }
  if (::fcntl(report_fd, F_SETFD, FD_CLOEXEC) < 0)
    fail_in_child(report_fd, start_stage::redirect, errno);
  close_descriptors_from(4, setup.close_limit);

  ::execve(setup.path, setup.argv, setup.envp);
  fail_in_child(report_fd, start_stage::exec, errno);
}

#if BS_ROUTER_HAVE_SPAWN_NP
// The fast start: posix_spawn copies no page tables (glibc and FreeBSD start
// the child with a vfork-like call) and reports a failed chdir or exec as its
// return value, once the child has exec'd or died. Needs chdir and closefrom
// as file actions, which are extensions (_np) where they exist. The source
// descriptors must be above 2 (see start_child()). Returns 0 or the error;
// on error nothing ran.
int spawn_child(const child_setup& setup, pid_t* pid) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  if (int error = posix_spawn_file_actions_init(&actions)) return error;
  if (int error = posix_spawnattr_init(&attributes)) {
    posix_spawn_file_actions_destroy(&actions);
    return error;
  }
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int signal_number : reset_signals) sigaddset(&defaults, signal_number);
  sigset_t empty_mask;
  sigemptyset(&empty_mask);

  int error = posix_spawnattr_setflags(
      &attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  if (!error) error = posix_spawnattr_setpgroup(&attributes, 0);
  if (!error) error = posix_spawnattr_setsigdefault(&attributes, &defaults);
  if (!error) error = posix_spawnattr_setsigmask(&attributes, &empty_mask);
  if (!error) error = posix_spawn_file_actions_adddup2(&actions, setup.stdin_fd, 0);
  if (!error) error = posix_spawn_file_actions_adddup2(&actions, setup.stdout_fd, 1);
  if (!error) error = posix_spawn_file_actions_adddup2(&actions, setup.stderr_fd, 2);
  if (!error && setup.cwd != nullptr) error = posix_spawn_file_actions_addchdir_np(&actions, setup.cwd);
  if (!error) error = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (!error) error = ::posix_spawn(pid, setup.path, &actions, &attributes, setup.argv, setup.envp);

  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  return error;
}
#endif

// Blocks every signal for the lifetime of the object (around fork()).
class all_signals_blocked {
 public:
  all_signals_blocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &previous_);
  }
  ~all_signals_blocked() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  all_signals_blocked(const all_signals_blocked&) = delete;
  all_signals_blocked& operator=(const all_signals_blocked&) = delete;

 private:
  sigset_t previous_;
};

// Reads the report pipe until EOF (exec succeeded) or a failure report.
std::optional<start_failure_report> read_start_report(int report_fd) {
  start_failure_report report{};
  auto* bytes = reinterpret_cast<char*>(&report);
  std::size_t received = 0;
  while (received < sizeof report) {
    const ssize_t n = ::read(report_fd, bytes + received, sizeof report - received);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    received += static_cast<std::size_t>(n);
  }
  if (received < sizeof report) return std::nullopt;
  return report;
}

long close_limit_for_child() {
  const long open_max = ::sysconf(_SC_OPEN_MAX);
  if (open_max <= 0 || open_max > close_loop_cap) return close_loop_cap;
  return open_max;
}

} // namespace

std::string errno_text(int error) {
  return std::generic_category().message(error);
}

std::optional<pipe_ends> make_cloexec_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::nullopt;
  return pipe_ends{unique_fd(fds[0]), unique_fd(fds[1])};
}

started_child start_child(const std::vector<std::string>& argv_strings, const std::vector<std::string>& env,
                          const std::string& cwd, const child_stdio& stdio) {
  started_child started;
  const exec_strings argv(argv_strings);
  const exec_strings envp(env);
  child_setup setup{
      argv_strings.front().c_str(),
      argv.data(),
      envp.data(),
      cwd.empty() ? nullptr : cwd.c_str(),
      stdio.stdin_fd,
      stdio.stdout_fd,
      stdio.stderr_fd,
      -1,
      0,
  };

  pid_t pid = -1;
  bool spawned = false;
#if BS_ROUTER_HAVE_SPAWN_NP
  // A source among 0..2 (a daemon started with stdio closed) could be
  // overwritten by another's dup2 before its own turn: the fork path below
  // moves such descriptors out of the way first.
  if (setup.stdin_fd > 2 && setup.stdout_fd > 2 && setup.stderr_fd > 2) {
    // On failure nothing ran; the fork path tries once more and, if it fails
    // too, names the step that failed.
    spawned = spawn_child(setup, &pid) == 0;
  }
#endif

  if (!spawned) {
    std::optional<pipe_ends> report_pipe = make_cloexec_pipe();
    if (!report_pipe) {
      started.error = "pipe: " + errno_text(errno);
      return started;
    }
    setup.report_fd = report_pipe->write.get();
    setup.close_limit = close_limit_for_child();
    int fork_error = 0;
    {
      const all_signals_blocked blocked;
      pid = ::fork();
      if (pid == 0) exec_child(setup);
      fork_error = errno;
    }
    if (pid < 0) {
      started.error = "fork: " + errno_text(fork_error);
      return started;
    }
    // Both sides set the group so kill(-pid) works whichever runs first; once
    // the child has exec'd this fails with EACCES, which is fine.
    ::setpgid(pid, pid);
    report_pipe->write.reset();
    started.start_report = std::move(report_pipe->read);
  }
  started.pid = pid;
  return started;
}

std::optional<std::string> read_start_failure(int report_fd, const std::string& path, const std::string& cwd) {
  const std::optional<start_failure_report> report = read_start_report(report_fd);
  if (!report) return std::nullopt;
  const std::string reason = errno_text(report->error);
  switch (report->stage) {
    case start_stage::setpgid: return "setpgid: " + reason;
    case start_stage::redirect: return "redirect stdin/stdout/stderr: " + reason;
    case start_stage::chdir: return "chdir " + cwd + ": " + reason;
    case start_stage::exec: return "exec " + path + ": " + reason;
  }
  return reason;
}

} // namespace bs_router
