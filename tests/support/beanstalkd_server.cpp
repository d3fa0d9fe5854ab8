#include "support/beanstalkd_server.hpp"

#include "support/beanstalk_test_client.hpp"
#include "support/loopback.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace bs_router::testing {

namespace {

constexpr int start_attempts = 5;
constexpr std::chrono::seconds ready_limit{10};
constexpr std::chrono::seconds restart_limit{30};
constexpr std::chrono::seconds stop_limit{30};

// The server on `port` is ours only if its own stats say so: a stranger that
// grabbed the port between free_loopback_port() and our bind would also answer.
bool answers_as(std::uint16_t port, pid_t pid) {
  try {
    beanstalk_test_client client("127.0.0.1", port);
    client.set_read_timeout(std::chrono::seconds{5});
    return client.stats().at("pid") == std::to_string(pid);
  } catch (const std::exception&) {
    return false;
  }
}

} // namespace

bool beanstalkd_server::available() { return access(executable, X_OK) == 0; }

beanstalkd_server::beanstalkd_server() : beanstalkd_server(options{}) {}

beanstalkd_server::beanstalkd_server(options opts) : options_(std::move(opts)) {
  for (int attempt = 0; attempt < start_attempts; ++attempt) {
    if (try_start_on(free_loopback_port())) return;
  }
  throw std::runtime_error("beanstalkd_server: could not start " + std::string(executable) +
                           " on a free port after " + std::to_string(start_attempts) +
                           " attempts");
}

beanstalkd_server::~beanstalkd_server() { kill(); }

std::string beanstalkd_server::uri() const { return host() + ":" + std::to_string(port_); }

// Starts beanstalkd on `port` and waits until it answers; false (and nothing
// left running) when it exited, e.g. because the port was taken.
bool beanstalkd_server::try_start_on(std::uint16_t port) {
  std::vector<std::string> argv{executable, "-l", host(), "-p", std::to_string(port)};
  if (!options_.binlog_dir.empty()) {
    argv.push_back("-b");
    argv.push_back(options_.binlog_dir);
  }
  if (options_.max_job_size != 0) {
    argv.push_back("-z");
    argv.push_back(std::to_string(options_.max_job_size));
  }
  spawn_options spawn;
  if (options_.coarse_clock) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    env.emplace_back(std::string("LD_PRELOAD=") + COARSE_CLOCK_PATH);
    spawn.env = std::move(env);
  }
  const pid_t pid = spawn_process(argv, spawn);
  bool exited = false;
  const bool ready = wait_until(
      [&] {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          return true;
        }
        return answers_as(port, pid);
      },
      ready_limit);
  if (ready && !exited) {
    pid_ = pid;
    port_ = port;
    suspended_ = false;
    return true;
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  return false;
}

void beanstalkd_server::reap(int signal_number) {
  if (pid_ <= 0) return;
  ::kill(pid_, signal_number);
  // A stopped process acts on SIGTERM only once it runs again.
  if (suspended_) ::kill(pid_, SIGCONT);
  if (!wait_for_exit(pid_, stop_limit)) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
  suspended_ = false;
}

void beanstalkd_server::kill() { reap(SIGKILL); }

void beanstalkd_server::stop() { reap(SIGTERM); }

void beanstalkd_server::restart() {
  kill();
  // The old listening socket may linger for a moment after the kill; the
  // same port is the point of a restart, so keep trying it.
  const bool started = wait_until([&] { return try_start_on(port_); }, restart_limit,
                                  std::chrono::milliseconds{50});
  if (!started)
    throw std::runtime_error("beanstalkd_server: could not restart on port " +
                             std::to_string(port_));
}

void beanstalkd_server::suspend() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGSTOP);
  suspended_ = true;
}

void beanstalkd_server::resume() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGCONT);
  suspended_ = false;
}

} // namespace bs_router::testing
