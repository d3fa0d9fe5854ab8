#include "support/test_pool.hpp"

#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <poll.h>
#include <random>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

extern char** environ;

namespace bs_router::testing {

namespace {

constexpr const char* watching_marker = "watching tube ";
constexpr const char* rabbitmq_marker = "connected to rabbitmq ";
constexpr std::chrono::seconds router_stop_limit{60};
constexpr std::chrono::seconds client_run_limit{60};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path partial = path.string() + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + partial.string());
  }
  // Renamed into place so a fake cbsd running meanwhile never reads half a file.
  std::filesystem::rename(partial, path);
}

std::string random_suffix() {
  std::random_device entropy;
  std::ostringstream hex;
  hex << std::hex << entropy() << entropy();
  return hex.str();
}

std::vector<char*> c_strings(const std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (const auto& s : strings) pointers.push_back(const_cast<char*>(s.c_str()));
  pointers.push_back(nullptr);
  return pointers;
}

// Only async-signal-safe calls between fork and exec: the test may have
// threads. Failures are reported through `report_fd` as an errno value.
[[noreturn]] void exec_child(char* const* argv, char* const* envp, const char* cwd,
                             int stdout_fd, int stderr_fd, int report_fd, pid_t parent) {
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);
#else
  (void)parent;
#endif
  const int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    if (null_fd != STDIN_FILENO) close(null_fd);
  }
  const bool ready = (stdout_fd < 0 || dup2(stdout_fd, STDOUT_FILENO) >= 0) &&
                     (stderr_fd < 0 || dup2(stderr_fd, STDERR_FILENO) >= 0) &&
                     (cwd == nullptr || chdir(cwd) == 0);
  if (ready) {
    // A process group of its own, so signals meant for the test runner's
    // group (a terminal's ^C) reach the child only through us.
    setpgid(0, 0);
    execve(argv[0], argv, envp);
  }
  const int error = errno;
  (void)!write(report_fd, &error, sizeof error);
  _exit(127);
}

} // namespace

pid_t spawn_process(const std::vector<std::string>& argv, const spawn_options& options) {
  if (argv.empty()) throw std::invalid_argument("spawn_process: empty argv");
  std::vector<std::string> env_strings;
  if (options.env) env_strings = *options.env;
  const auto arg_pointers = c_strings(argv);
  const auto env_pointers = c_strings(env_strings);
  char* const* envp = options.env ? env_pointers.data() : environ;

  int output_fd = -1;
  if (!options.output_path.empty()) {
    output_fd = open(options.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (output_fd < 0)
      throw std::runtime_error("cannot open " + options.output_path + ": " + std::strerror(errno));
  }
  const int stdout_fd = output_fd >= 0 ? output_fd : options.stdout_fd;
  const int stderr_fd = output_fd >= 0 ? output_fd : options.stderr_fd;

  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    if (output_fd >= 0) close(output_fd);
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    close(report[0]);
    exec_child(arg_pointers.data(), envp, options.cwd.empty() ? nullptr : options.cwd.c_str(),
               stdout_fd, stderr_fd, report[1], parent);
  }
  const int fork_errno = errno;
  close(report[1]);
  if (output_fd >= 0) close(output_fd);
  if (pid < 0) {
    close(report[0]);
    throw std::runtime_error(std::string("fork: ") + std::strerror(fork_errno));
  }
  // The pipe closes on a successful exec (CLOEXEC); anything read is the
  // child's errno from a failed one.
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(report[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    int status = 0;
    waitpid(pid, &status, 0);
    throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(child_errno));
  }
  return pid;
}

std::optional<int> wait_for_exit(pid_t pid, std::chrono::milliseconds limit) {
  int status = 0;
  const bool ended = wait_until(
      [&] {
        const pid_t r = waitpid(pid, &status, WNOHANG);
        return r == pid || (r < 0 && errno == ECHILD);
      },
      limit);
  if (!ended) return std::nullopt;
  return status;
}

int exit_status_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

int run_captured(const std::vector<std::string>& argv, const spawn_options& options,
                 std::string* out, std::string* err, std::chrono::milliseconds limit) {
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    throw std::runtime_error("pipe failed");
  }
  spawn_options with_pipes = options;
  with_pipes.output_path.clear();
  with_pipes.stdout_fd = out_pipe[1];
  with_pipes.stderr_fd = err_pipe[1];
  pid_t pid = -1;
  try {
    pid = spawn_process(argv, with_pipes);
  } catch (...) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    throw;
  }
  close(out_pipe[1]);
  close(err_pipe[1]);

  std::string captured[2];
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool killed = false;
  while (fds[0].fd >= 0 || fds[1].fd >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    const int ready = poll(fds, 2, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char chunk[65536];
      const ssize_t n = read(fds[i].fd, chunk, sizeof chunk);
      if (n > 0) {
        captured[i].append(chunk, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
  }
  for (const auto& p : fds)
    if (p.fd >= 0) close(p.fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (out) *out = std::move(captured[0]);
  if (err) {
    *err = std::move(captured[1]);
    if (killed) *err += "\n[killed: still running after " + std::to_string(limit.count()) + " ms]\n";
  }
  return exit_status_of(status);
}

int run_client(const std::vector<std::string>& args, std::string* out, std::string* err) {
  std::vector<std::string> argv{BS_ROUTER_CLIENT_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_captured(argv, {}, out, err, client_run_limit);
}

// Keep in step with stdout_pattern in tests/fake_cbsd.cpp.
std::string fake_stdout_bytes_text(std::size_t n) {
  static constexpr std::string_view pattern = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string text;
  if (n == 0) return text;
  text.reserve(n);
  for (std::size_t i = 0; i + 1 < n; ++i) text += pattern[i % pattern.size()];
  text += '\n';
  return text;
}

test_pool::test_pool(const beanstalkd_server& server, const nlohmann::json& extra)
    : server_(&server) {
  make_directory();
  write_config(extra);
}

test_pool::test_pool(const rabbitmq_target& target, const nlohmann::json& extra) : rabbitmq_(target) {
  make_directory();
  write_config(extra);
}

const beanstalkd_server& test_pool::beanstalk() const {
  if (!server_) throw std::logic_error("test_pool: a pool on RabbitMQ has no beanstalkd");
  return *server_;
}

void test_pool::make_directory() {
  std::string templ = (std::filesystem::temp_directory_path() / "bs_router_pool.XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr)
    throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
  dir_ = templ;
  // mkdtemp's letters and digits plus ours: a tube name beanstalkd accepts,
  // unique per pool so tests sharing a broker never see each other's jobs.
  tube_ = "cbsd_" + name().substr(name().find('.') + 1) + "_" + random_suffix();
  std::ofstream(dir_ / "nc.inventory") << "# initialised by test_pool\n";
  // Private whatever the umask: the router refuses directories that others
  // can write in.
  std::filesystem::create_directory(logdir());
  std::filesystem::permissions(logdir(), std::filesystem::perms(0750));
  std::filesystem::create_directory(statedir());
  std::filesystem::permissions(statedir(), std::filesystem::perms(0700));
}

test_pool::~test_pool() {
  if (router_running()) kill_router();
  client_.close();
  if (::testing::Test::HasFailure()) {
    std::cerr << "test_pool: test failed, keeping " << dir_.string() << "\n";
    return;
  }
  if (keep_directory_) return;
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string test_pool::reply_tube(std::uint64_t job_id) const {
  return reply_tube_prefix() + std::to_string(job_id);
}

void test_pool::write_config(const nlohmann::json& extra) {
  if (rabbitmq_) {
    nlohmann::json cfg = {
        {"cbsdenv", dir_.string()},
        {"cbsdcolor", false},
        {"broker", "rabbitmq"},
        {"logfile", log_path().string()},
        {"cbsd_path", FAKE_CBSD_PATH},
        {"statedir", statedir().string()},
        {"rabbitmq",
         {
             {"uris", rabbitmq_->uris},
             {"queue", tube_},
             {"reply_queue_prefix", reply_tube_prefix()},
             {"reconnect_timeout", 1},
             {"publish_timeout", 5},
             {"heartbeat", 10},
             {"logdir", logdir().string()},
         }},
    };
    cfg.merge_patch(extra);
    write_file(config_path(), cfg.dump(2) + "\n");
    config_ = std::move(cfg);
    return;
  }
  nlohmann::json cfg = {
      {"cbsdenv", dir_.string()},
      {"cbsdcolor", false},
      {"broker", "beanstalkd"},
      {"logfile", log_path().string()},
      {"cbsd_path", FAKE_CBSD_PATH},
      {"statedir", statedir().string()},
      {"beanstalkd",
       {
           {"uri", beanstalk().uri()},
           {"tube", tube_},
           {"reply_tube_prefix", reply_tube_prefix()},
           {"reconnect_timeout", 1},
           {"reserve_timeout", 1},
           {"publish_timeout", 5},
           {"logdir", logdir().string()},
       }},
  };
  cfg.merge_patch(extra);
  write_file(config_path(), cfg.dump(2) + "\n");
  config_ = std::move(cfg);
}

pid_t test_pool::spawn_router(const std::vector<std::string>& args) {
  if (router_running())
    throw std::logic_error("test_pool: a router is already running (pid " +
                           std::to_string(router_pid_) + ")");
  std::vector<std::string> argv{BS_ROUTER_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  spawn_options options;
  options.output_path = output_path().string();
  router_status_.reset();
  router_pid_ = spawn_process(argv, options);
  return router_pid_;
}

pid_t test_pool::start_router(const std::vector<std::string>& extra_args,
                              std::chrono::milliseconds limit) {
  // Only a line written by this start counts: an earlier router may have
  // logged the same words already.
  std::error_code no_log_yet;
  const auto log_offset = std::filesystem::file_size(log_path(), no_log_yet);
  const std::size_t offset = no_log_yet ? 0 : static_cast<std::size_t>(log_offset);
  std::vector<std::string> args{"-config", config_path().string()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  spawn_router(args);

  bool serving = false;
  wait_until(
      [&] {
        const std::string text = log_text();
        serving = serving_line(text, text.size() >= offset ? offset : 0);
        return serving || !router_running();
      },
      limit);
  if (serving) return router_pid_;
  std::string why;
  if (router_running()) {
    why = "did not log that it serves its " + std::string(rabbitmq_ ? "queue" : "tube") + " within " + std::to_string(limit.count()) + " ms";
    kill_router();
  } else {
    why = "exited with status " + std::to_string(exit_status_of(*router_status_));
  }
  throw std::runtime_error("bs_router " + why + "\nrouter.out:\n" + output_text() +
                           "\nrouter.log:\n" + log_text());
}

// The log line of a router that serves the pool's tube (or queue).
bool test_pool::serving_line(const std::string& text, std::size_t offset) const {
  if (!rabbitmq_) return text.find(watching_marker + tube_, offset) != std::string::npos;
  const std::string queue = " queue " + config_.at("rabbitmq").at("queue").get<std::string>();
  for (std::size_t at = text.find(rabbitmq_marker, offset); at != std::string::npos;
       at = text.find(rabbitmq_marker, at + 1)) {
    const std::size_t end = text.find('\n', at);
    const std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (line.size() >= queue.size() && line.compare(line.size() - queue.size(), queue.size(), queue) == 0)
      return true;
  }
  return false;
}

void test_pool::reap_router(int wait_status) {
  router_status_ = wait_status;
  router_pid_ = -1;
}

bool test_pool::router_running() {
  if (router_pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(router_pid_, &status, WNOHANG);
  if (r == router_pid_) {
    reap_router(status);
    return false;
  }
  if (r < 0 && errno == ECHILD) {
    router_pid_ = -1;
    return false;
  }
  return true;
}

std::optional<int> test_pool::wait_router_exit(std::chrono::milliseconds limit) {
  if (router_pid_ <= 0) return router_status_;
  const auto status = wait_for_exit(router_pid_, limit);
  if (status) reap_router(*status);
  return status;
}

int test_pool::stop_router() {
  if (!router_running()) {
    ADD_FAILURE() << "test_pool::stop_router: no router running";
    return router_status_ ? exit_status_of(*router_status_) : -1;
  }
  ::kill(router_pid_, SIGTERM);
  if (const auto status = wait_router_exit(router_stop_limit)) return exit_status_of(*status);
  ADD_FAILURE() << "bs_router (pid " << router_pid_ << ") still running "
                << router_stop_limit.count() << " s after SIGTERM; killing it";
  kill_router();
  return exit_status_of(*router_status_);
}

void test_pool::kill_router() {
  if (router_pid_ <= 0) return;
  ::kill(router_pid_, SIGKILL);
  int status = 0;
  while (waitpid(router_pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reap_router(status);
}

std::vector<nlohmann::json> test_pool::records() const {
  std::vector<nlohmann::json> result;
  std::ifstream in(records_path(), std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) result.push_back(nlohmann::json::parse(line));
  }
  return result;
}

std::vector<nlohmann::json> test_pool::runs_of(const std::string& command) const {
  std::vector<nlohmann::json> runs;
  for (auto& record : records()) {
    if (record.value("event", "") != "start") continue;
    const auto& argv = record["argv"];
    if (argv.size() > 1 && argv[1] == command) runs.push_back(std::move(record));
  }
  return runs;
}

void test_pool::write_rules(const nlohmann::json& rules) const {
  write_file(rules_path(), rules.dump(2) + "\n");
}

std::string test_pool::log_text() const { return read_file(log_path()); }

std::string test_pool::output_text() const { return read_file(output_path()); }

beanstalk_test_client& test_pool::client() {
  if (!client_.connected()) client_.connect(beanstalk().host(), beanstalk().port());
  return client_;
}

// Tests restart the broker under the pool, which leaves client_ holding a dead
// connection: one fresh connection is worth a second try.
template <typename Operation>
auto with_reconnect(beanstalk_test_client& client, const beanstalkd_server& server,
                    Operation operation) {
  try {
    if (!client.connected()) client.connect(server.host(), server.port());
    return operation(client);
  } catch (const connection_lost&) {
    client.close();
    client.connect(server.host(), server.port());
    return operation(client);
  }
}

std::uint64_t test_pool::put_job(const nlohmann::ordered_json& body, unsigned priority,
                                 unsigned delay_seconds, unsigned ttr_seconds) {
  return put_raw_job(body.dump(), priority, delay_seconds, ttr_seconds);
}

std::uint64_t test_pool::put_raw_job(std::string_view body, unsigned priority,
                                     unsigned delay_seconds, unsigned ttr_seconds) {
  return with_reconnect(client_, beanstalk(), [&](beanstalk_test_client& c) {
    return c.put(tube_, body, priority, delay_seconds, ttr_seconds);
  });
}

std::uint64_t test_pool::put_job(const char* body, unsigned priority, unsigned delay_seconds,
                                 unsigned ttr_seconds) {
  return put_raw_job(body, priority, delay_seconds, ttr_seconds);
}

std::optional<nlohmann::json> test_pool::wait_reply(std::uint64_t job_id,
                                                    std::chrono::seconds timeout) {
  return with_reconnect(client_, beanstalk(), [&](beanstalk_test_client& c) {
    return c.wait_reply(reply_tube(job_id), timeout);
  });
}

std::vector<nlohmann::json> test_pool::wait_final_reply(std::uint64_t job_id,
                                                        std::chrono::seconds timeout) {
  return with_reconnect(client_, beanstalk(), [&](beanstalk_test_client& c) {
    return c.wait_final_reply(reply_tube(job_id), timeout);
  });
}

} // namespace bs_router::testing
