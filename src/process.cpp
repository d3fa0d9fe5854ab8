#include "bs_router/process.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <fcntl.h>
#include <optional>
#include <spawn.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

namespace bs_router {

namespace asio = boost::asio;

namespace {

// A grandchild that inherited the captured stdout can hold the pipe open long
// after the child itself exited; we stop waiting for its EOF after this.
constexpr std::chrono::seconds stdout_drain_after_exit{2};

// Without closefrom() the child closes descriptors one by one up to the
// descriptor limit; a huge limit (RLIMIT_NOFILE = 1M is common) would make
// every start slow, so the loop stops here.
constexpr long close_loop_cap = 65536;

constexpr std::size_t stdout_read_chunk = 16 * 1024;

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

std::string errno_text(int error) {
  return std::generic_category().message(error);
}

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

std::optional<pipe_ends> make_cloexec_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::nullopt;
  return pipe_ends{unique_fd(fds[0]), unique_fd(fds[1])};
}

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
// descriptors must be above 2 (see run()). Returns 0 or the error; on error
// nothing ran.
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

std::string describe(const start_failure_report& report, const process_spec& spec) {
  const std::string reason = errno_text(report.error);
  switch (report.stage) {
    case start_stage::setpgid: return "setpgid: " + reason;
    case start_stage::redirect: return "redirect stdin/stdout/stderr: " + reason;
    case start_stage::chdir: return "chdir " + spec.cwd + ": " + reason;
    case start_stage::exec: return "exec " + spec.argv.front() + ": " + reason;
  }
  return reason;
}

long close_limit_for_child() {
  const long open_max = ::sysconf(_SC_OPEN_MAX);
  if (open_max <= 0 || open_max > close_loop_cap) return close_loop_cap;
  return open_max;
}

// One output pipe of a child: captured (the look-ups' stdout) or handed to a
// sink as it is read (cbsd's stdout and stderr).
struct output_pipe {
  std::optional<asio::posix::stream_descriptor> pipe;
  std::array<char, stdout_read_chunk> buffer{};
  std::function<void(std::string_view)> sink; // empty: kept in `captured`
  bool done = true; // run() no longer waits for it
};

// One started child, shared by run() (which waits on it), the reaper, and the
// timer and pipe handlers. None of them touches the runner through it, so
// run() can still finish after the runner is gone.
struct running_child {
  static constexpr std::size_t out = 0, err = 1;

  running_child(asio::io_context& context, pid_t child_pid, std::size_t limit)
      : io(context), pid(child_pid), wake(context), deadline(context), drain(context), capture_limit(limit) {
    wake.expires_at(asio::steady_timer::time_point::max());
  }

  bool finished() const { return abandoned || (exited && outputs[out].done && outputs[err].done); }

  // Resumes run() if it is waiting; it re-checks finished() itself, so a
  // notify with nobody waiting is harmless.
  void notify() { wake.cancel(); }

  void start_reading(const std::shared_ptr<running_child>& self, std::size_t which, int fd,
                     std::function<void(std::string_view)> sink) {
    output_pipe& o = outputs[which];
    o.pipe.emplace(io, fd);
    o.sink = std::move(sink);
    o.done = false;
    read_output(self, which);
  }

  void read_output(const std::shared_ptr<running_child>& self, std::size_t which) {
    output_pipe& o = outputs[which];
    o.pipe->async_read_some(
        asio::buffer(o.buffer),
        [self, which](const boost::system::error_code& ec, std::size_t n) {
          output_pipe& o = self->outputs[which];
          // Once run() stopped waiting, what still comes is dropped.
          if (n > 0 && !o.done) self->deliver(o, n);
          if (ec) {
            self->close_output(which);
            return;
          }
          self->read_output(self, which);
        });
  }

  void deliver(output_pipe& o, std::size_t n) {
    if (!o.sink) {
      const std::size_t room = capture_limit - std::min(capture_limit, captured.size());
      captured.append(o.buffer.data(), std::min(n, room));
      if (n > room) truncated = true;
      return;
    }
    try {
      o.sink(std::string_view(o.buffer.data(), n));
    } catch (...) {
      o.sink = [](std::string_view) {}; // broken: called no more
    }
  }

  void close_output(std::size_t which) {
    output_pipe& o = outputs[which];
    boost::system::error_code ignored;
    if (o.pipe) o.pipe->close(ignored);
    if (o.done) return;
    o.done = true;
    if (outputs[out].done && outputs[err].done) drain.cancel();
    notify();
  }

  // run() stops waiting for the pipes: a captured one is closed, a sink's
  // is left open and drained (see process_spec::stdout_sink).
  void stop_waiting_for_output() {
    for (std::size_t which : {out, err}) {
      output_pipe& o = outputs[which];
      if (o.done) continue;
      if (!o.sink) {
        close_output(which);
      } else {
        o.done = true;
        o.sink = nullptr;
      }
    }
    notify();
  }

  void start_timeout(const std::shared_ptr<running_child>& self, std::chrono::milliseconds timeout,
                     std::chrono::milliseconds kill_grace) {
    deadline.expires_after(timeout);
    deadline.async_wait([self, kill_grace](const boost::system::error_code& ec) {
      if (ec || self->exited || self->abandoned) return;
      ::kill(-self->pid, SIGTERM);
      self->timed_out = true;
      self->deadline.expires_after(kill_grace);
      self->deadline.async_wait([self](const boost::system::error_code& ec) {
        if (ec || self->exited || self->abandoned) return;
        ::kill(-self->pid, SIGKILL);
      });
    });
  }

  void complete_exit(const std::shared_ptr<running_child>& self, std::optional<int> status) {
    exited = true;
    wait_status = status;
    deadline.cancel();
    if (!outputs[out].done || !outputs[err].done) {
      drain.expires_after(stdout_drain_after_exit);
      drain.async_wait([self](const boost::system::error_code& ec) {
        if (!ec) self->stop_waiting_for_output();
      });
    }
    notify();
  }

  // The runner went away: stop every timer and pipe, resume run().
  void abandon() {
    abandoned = true;
    deadline.cancel();
    drain.cancel();
    boost::system::error_code ignored;
    for (output_pipe& o : outputs)
      if (o.pipe) o.pipe->close(ignored);
    notify();
  }

  asio::io_context& io;
  pid_t pid;
  asio::steady_timer wake;      // never expires on its own; cancelled as an event
  asio::steady_timer deadline;  // spec.timeout, then spec.kill_grace
  asio::steady_timer drain;     // bounds the wait for the pipes' EOF after exit
  std::array<output_pipe, 2> outputs;
  std::size_t capture_limit;
  std::string captured;
  bool truncated = false;
  bool exited = false;
  bool timed_out = false;
  bool abandoned = false;
  std::optional<int> wait_status; // empty when someone else reaped it
};

} // namespace

struct process_runner::impl {
  // The signal_set exists from here on, so a SIGCHLD that arrives while no
  // wait is pending is kept for the next one.
  explicit impl(asio::io_context& context) : io(context), sigchld(context, SIGCHLD) {}

  ~impl() {
    for (auto& [pid, child] : children) child->abandon();
  }

  void add(const std::shared_ptr<running_child>& child) {
    children.emplace(child->pid, child);
    if (!waiting_for_sigchld) wait_for_sigchld();
  }

  // Waits only while there are children, so an io_context with an idle
  // runner still runs out of work and returns from run().
  void wait_for_sigchld() {
    waiting_for_sigchld = true;
    sigchld.async_wait([this, alive = std::weak_ptr<int>(lifetime)](
                           const boost::system::error_code& ec, int) {
      if (ec || alive.expired()) return;
      waiting_for_sigchld = false;
      reap_exited_children();
      if (!children.empty()) wait_for_sigchld();
    });
  }

  // SIGCHLD coalesces, so one signal may stand for several exits: poll every
  // child we started. Waiting by pid, not waitpid(-1), leaves children that
  // other parts of the process started for them to reap.
  void reap_exited_children() {
    for (auto it = children.begin(); it != children.end();) {
      if (reap_if_exited(it->second)) {
        it = children.erase(it);
      } else {
        ++it;
      }
    }
  }

  bool reap_if_exited(const std::shared_ptr<running_child>& child) {
    int status = 0;
    pid_t result;
    do {
      result = ::waitpid(child->pid, &status, WNOHANG);
    } while (result < 0 && errno == EINTR);
    if (result == 0) return false;
    // result < 0 (ECHILD): someone else reaped it; we will never learn its
    // status, but run() must not wait for ever.
    child->complete_exit(child, result > 0 ? std::optional<int>(status) : std::nullopt);
    return true;
  }

  // stdin (and stderr when not given) of every child, opened once; moved
  // above 2 so that it never keeps a child from being started by posix_spawn.
  int null_device() {
    if (dev_null.get() < 0) {
      unique_fd opened(::open("/dev/null", O_RDWR | O_CLOEXEC));
      if (opened.get() >= 0 && opened.get() <= 2) opened.reset(::fcntl(opened.get(), F_DUPFD_CLOEXEC, 3));
      dev_null = std::move(opened);
    }
    return dev_null.get();
  }

  asio::io_context& io;
  asio::signal_set sigchld;
  unique_fd dev_null;
  std::map<pid_t, std::shared_ptr<running_child>> children;
  bool waiting_for_sigchld = false;
  std::shared_ptr<int> lifetime = std::make_shared<int>(0);
};

process_runner::process_runner(asio::io_context& io) : impl_(std::make_unique<impl>(io)) {}

process_runner::~process_runner() = default;

asio::awaitable<process_result> process_runner::run(process_spec spec) {
  process_result result;
  const auto started = std::chrono::steady_clock::now();
  const auto start_failed = [&](std::string what) {
    result.start_failed = true;
    result.start_error = std::move(what);
    result.elapsed = std::chrono::steady_clock::now() - started;
    return result;
  };

  if (spec.argv.empty()) co_return start_failed("exec: empty argv");

  const exec_strings argv(spec.argv);
  const exec_strings envp(spec.env);
  // A pipe for stdout unless it goes to a given descriptor; for stderr when
  // it goes to a sink.
  const bool stdout_piped = spec.stdout_sink || spec.stdout_fd < 0;
  const bool stderr_piped = static_cast<bool>(spec.stderr_sink);

  const int dev_null = impl_->null_device();
  if (dev_null < 0) co_return start_failed("open /dev/null: " + errno_text(errno));
  std::optional<pipe_ends> stdout_pipe, stderr_pipe;
  if (stdout_piped) {
    stdout_pipe = make_cloexec_pipe();
    if (!stdout_pipe) co_return start_failed("pipe: " + errno_text(errno));
  }
  if (stderr_piped) {
    stderr_pipe = make_cloexec_pipe();
    if (!stderr_pipe) co_return start_failed("pipe: " + errno_text(errno));
  }

  child_setup setup{
      spec.argv.front().c_str(),
      argv.data(),
      envp.data(),
      spec.cwd.empty() ? nullptr : spec.cwd.c_str(),
      dev_null,
      stdout_piped ? stdout_pipe->write.get() : spec.stdout_fd,
      stderr_piped ? stderr_pipe->write.get() : spec.stderr_fd >= 0 ? spec.stderr_fd : dev_null,
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

  std::optional<pipe_ends> report_pipe;
  if (!spawned) {
    report_pipe = make_cloexec_pipe();
    if (!report_pipe) co_return start_failed("pipe: " + errno_text(errno));
    setup.report_fd = report_pipe->write.get();
    setup.close_limit = close_limit_for_child();
    int fork_error = 0;
    {
      const all_signals_blocked blocked;
      pid = ::fork();
      if (pid == 0) exec_child(setup);
      fork_error = errno;
    }
    if (pid < 0) co_return start_failed("fork: " + errno_text(fork_error));
    // Both sides set the group so kill(-pid) works whichever runs first; once
    // the child has exec'd this fails with EACCES, which is fine.
    ::setpgid(pid, pid);
    report_pipe->write.reset();
  }

  if (stdout_pipe) stdout_pipe->write.reset();
  if (stderr_pipe) stderr_pipe->write.reset();

  auto child = std::make_shared<running_child>(impl_->io, pid, spec.capture_limit);
  // Registered before anything can resume the event loop, so its SIGCHLD
  // cannot be handled while the runner does not know it yet.
  impl_->add(child);

  std::optional<start_failure_report> failure;
  if (report_pipe) {
    failure = read_start_report(report_pipe->read.get());
    report_pipe.reset();
  }

  if (!failure && stdout_pipe)
    child->start_reading(child, running_child::out, stdout_pipe->read.release(), std::move(spec.stdout_sink));
  if (!failure && stderr_pipe)
    child->start_reading(child, running_child::err, stderr_pipe->read.release(), std::move(spec.stderr_sink));
  stdout_pipe.reset();
  stderr_pipe.reset();
  if (!failure && spec.timeout.count() > 0) child->start_timeout(child, spec.timeout, spec.kill_grace);

  // Normally the SIGCHLD handler does this; checking once here also covers a
  // child that is already gone (a failed exec exits at once).
  if (impl_->reap_if_exited(child)) impl_->children.erase(pid);

  // From here on only `child` is used: the runner may be destroyed meanwhile.
  while (!child->finished()) {
    boost::system::error_code ignored;
    co_await child->wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }

  // The sinks belong to the caller, who goes on once this returns.
  for (output_pipe& o : child->outputs) o.sink = nullptr;

  if (failure) {
    result.start_failed = true;
    result.start_error = describe(*failure, spec);
  }
  if (child->wait_status) {
    const int status = *child->wait_status;
    if (WIFEXITED(status)) {
      result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result.term_signal = WTERMSIG(status);
      result.exit_code = 128 + result.term_signal;
    }
  }
  result.timed_out = child->timed_out;
  result.captured_stdout = std::move(child->captured);
  result.stdout_truncated = child->truncated;
  result.elapsed = std::chrono::steady_clock::now() - started;
  co_return result;
}

void process_runner::terminate_all() {
  for (const auto& [pid, child] : impl_->children) ::kill(-pid, SIGTERM);
}

std::size_t process_runner::running() const { return impl_->children.size(); }

} // namespace bs_router
