#include "bs_router/process.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "bs_router/process_start.hpp"

#include <array>
#include <cerrno>
#include <csignal>
#include <functional>
#include <fcntl.h>
#include <optional>
#include <sys/wait.h>
#include <unistd.h>

namespace bs_router {

namespace asio = boost::asio;

namespace {

// A grandchild that inherited the captured stdout can hold the pipe open long
// after the child itself exited; we stop waiting for its EOF after this.
constexpr std::chrono::seconds stdout_drain_after_exit{2};

constexpr std::size_t stdout_read_chunk = 16 * 1024;

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

  const child_stdio stdio{
      dev_null,
      stdout_piped ? stdout_pipe->write.get() : spec.stdout_fd,
      stderr_piped ? stderr_pipe->write.get() : spec.stderr_fd >= 0 ? spec.stderr_fd : dev_null,
  };
  started_child launched = start_child(spec.argv, spec.env, spec.cwd, stdio);
  if (!launched.error.empty()) co_return start_failed(std::move(launched.error));
  const pid_t pid = launched.pid;

  if (stdout_pipe) stdout_pipe->write.reset();
  if (stderr_pipe) stderr_pipe->write.reset();

  auto child = std::make_shared<running_child>(impl_->io, pid, spec.capture_limit);
  // Registered before anything can resume the event loop, so its SIGCHLD
  // cannot be handled while the runner does not know it yet.
  impl_->add(child);

  std::optional<std::string> failure;
  if (launched.start_report.get() >= 0) {
    failure = read_start_failure(launched.start_report.get(), spec.argv.front(), spec.cwd);
    launched.start_report.reset();
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
    result.start_error = std::move(*failure);
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
