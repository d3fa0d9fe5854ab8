#include "bs_router/process.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace {

namespace asio = boost::asio;
using bs_router::process_result;
using bs_router::process_runner;
using bs_router::process_spec;
using namespace std::chrono_literals;

// Every wait in these tests is bounded by this, so a bug fails instead of hanging.
constexpr auto generous_bound = 60s;

const std::vector<std::string> test_env{"PATH=/usr/bin:/bin"};

process_spec shell(const std::string& script) {
  process_spec spec;
  spec.argv = {"/bin/sh", "-c", script};
  spec.env = test_env;
  spec.cwd = "/";
  return spec;
}

process_spec program(std::vector<std::string> argv) {
  process_spec spec;
  spec.argv = std::move(argv);
  spec.env = test_env;
  spec.cwd = "/";
  return spec;
}

std::optional<process_result> run_to_completion(process_spec spec) {
  asio::io_context io;
  process_runner runner(io);
  std::optional<process_result> result;
  asio::co_spawn(io, runner.run(std::move(spec)),
                 [&](std::exception_ptr error, process_result r) {
                   if (!error) result = std::move(r);
                 });
  io.run_for(generous_bound);
  return result;
}

// Runs the loop until the predicate holds (or the bound passes).
template <typename Predicate>
bool run_until(asio::io_context& io, Predicate done) {
  const auto give_up = std::chrono::steady_clock::now() + generous_bound;
  while (!done() && std::chrono::steady_clock::now() < give_up) {
    io.restart();
    io.run_for(10ms);
  }
  return done();
}

class temporary_file {
 public:
  temporary_file() {
    char name[] = "/tmp/process_test.XXXXXX";
    fd_ = ::mkstemp(name);
    path_ = name;
  }
  ~temporary_file() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  std::string contents() const {
    std::ifstream in(path_);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  int fd_ = -1;
  std::string path_;
};

std::size_t open_descriptor_count() {
  std::size_t count = 0;
  DIR* dir = ::opendir("/dev/fd");
  if (dir == nullptr) return 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count;
}

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
#ifdef __linux__
  // An orphan is reparented to init; where init does not reap (some
  // containers) it stays a zombie: dead, yet kill(pid, 0) still finds it.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto after_name = line.rfind(") ");
  return after_name != std::string::npos && line.size() > after_name + 2 &&
         line[after_name + 2] == 'Z';
#else
  return false;
#endif
}

bool wait_until_gone(pid_t pid) {
  const auto give_up = std::chrono::steady_clock::now() + generous_bound;
  while (!process_gone(pid)) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

pid_t first_line_as_pid(const std::string& text) {
  return static_cast<pid_t>(std::atol(text.substr(0, text.find('\n')).c_str()));
}

TEST(ProcessRunner, ReportsExitCodeAndCapturesStdout) {
  const auto result = run_to_completion(shell("echo hi; exit 3"));
  ASSERT_TRUE(result);
  EXPECT_FALSE(result->start_failed);
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_EQ(result->term_signal, 0);
  EXPECT_FALSE(result->timed_out);
  EXPECT_EQ(result->captured_stdout, "hi\n");
  EXPECT_FALSE(result->stdout_truncated);
  EXPECT_GT(result->elapsed.count(), 0);
}

TEST(ProcessRunner, ReportsTerminatingSignal) {
  const auto result = run_to_completion(shell("kill -KILL $$"));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->term_signal, SIGKILL);
  EXPECT_EQ(result->exit_code, 128 + SIGKILL);
}

TEST(ProcessRunner, PassesArgumentsByteForByte) {
  const std::string hostile = "a b; \"q\" '$(reboot)' `id`\nline2";
  const auto result = run_to_completion(program({"/bin/echo", hostile}));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_EQ(result->captured_stdout, hostile + "\n");
}

TEST(ProcessRunner, OutputOverTheLimitIsTruncatedAndStillCompletes) {
  auto spec = program({"/usr/bin/head", "-c", "300000", "/dev/zero"});
  spec.capture_limit = 1000;
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_EQ(result->captured_stdout, std::string(1000, '\0'));
  EXPECT_TRUE(result->stdout_truncated);
}

TEST(ProcessRunner, OutputAtTheLimitIsNotTruncated) {
  auto spec = shell("printf 12345");
  spec.capture_limit = 5;
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->captured_stdout, "12345");
  EXPECT_FALSE(result->stdout_truncated);
}

TEST(ProcessRunner, StdoutGoesToTheGivenDescriptor) {
  temporary_file out;
  auto spec = program({"/bin/echo", "to the file"});
  spec.stdout_fd = out.fd();
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_EQ(result->captured_stdout, "");
  EXPECT_EQ(out.contents(), "to the file\n");
}

TEST(ProcessRunner, StderrGoesToTheGivenDescriptor) {
  temporary_file err;
  auto spec = shell("echo oops >&2; echo out");
  spec.stderr_fd = err.fd();
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->captured_stdout, "out\n");
  EXPECT_EQ(err.contents(), "oops\n");
}

TEST(ProcessRunner, StderrIsDiscardedByDefault) {
  const auto result = run_to_completion(shell("echo oops >&2; echo out"));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->captured_stdout, "out\n");
}

TEST(ProcessRunner, StdinIsEmpty) {
  const auto result = run_to_completion(shell("cat; echo end"));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->captured_stdout, "end\n");
}

TEST(ProcessRunner, EnvironmentIsExactlyTheSpecified) {
  auto spec = program({"/usr/bin/env"});
  spec.env = {"workdir=/pool1", "NOINTER=1", "SPACED=two words"};
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->captured_stdout, "workdir=/pool1\nNOINTER=1\nSPACED=two words\n");
}

TEST(ProcessRunner, EmptyEnvironmentStaysEmpty) {
  auto spec = program({"/usr/bin/env"});
  spec.env = {};
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_EQ(result->captured_stdout, "");
}

TEST(ProcessRunner, RunsInTheGivenDirectory) {
  char name[] = "/tmp/process_test_cwd.XXXXXX";
  ASSERT_NE(::mkdtemp(name), nullptr);
  char* resolved = ::realpath(name, nullptr);
  ASSERT_NE(resolved, nullptr);
  const std::string directory = resolved;
  std::free(resolved);

  auto spec = program({"/bin/pwd"});
  spec.cwd = directory;
  const auto result = run_to_completion(spec);
  ::rmdir(name);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->captured_stdout, directory + "\n");
}

TEST(ProcessRunner, MissingExecutableIsAStartFailure) {
  const auto result = run_to_completion(program({"/nonexistent/cbsd", "jls"}));
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->start_failed);
  EXPECT_EQ(result->start_error, "exec /nonexistent/cbsd: No such file or directory");
  EXPECT_EQ(result->captured_stdout, "");
}

TEST(ProcessRunner, NoPathSearch) {
  const auto result = run_to_completion(program({"echo", "hi"}));
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->start_failed);
  EXPECT_EQ(result->start_error, "exec echo: No such file or directory");
}

TEST(ProcessRunner, MissingDirectoryIsAStartFailure) {
  auto spec = program({"/bin/pwd"});
  spec.cwd = "/nonexistent/pool1";
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->start_failed);
  EXPECT_EQ(result->start_error, "chdir /nonexistent/pool1: No such file or directory");
}

TEST(ProcessRunner, EmptyArgvIsAStartFailure) {
  const auto result = run_to_completion(program({}));
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->start_failed);
  EXPECT_FALSE(result->start_error.empty());
}

TEST(ProcessRunner, TimeoutTerminatesTheWholeProcessGroup) {
  auto spec = shell("sleep 100 & echo $!; wait");
  spec.timeout = 1s;
  spec.kill_grace = generous_bound;
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->timed_out);
  EXPECT_EQ(result->term_signal, SIGTERM);
  EXPECT_EQ(result->exit_code, 128 + SIGTERM);
  const pid_t grandchild = first_line_as_pid(result->captured_stdout);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(wait_until_gone(grandchild));
}

TEST(ProcessRunner, ChildIgnoringTermIsKilledAfterTheGrace) {
  auto spec = shell("trap '' TERM; sleep 100 & echo $!; wait");
  spec.timeout = 1s;
  spec.kill_grace = 300ms;
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->timed_out);
  EXPECT_EQ(result->term_signal, SIGKILL);
  const pid_t grandchild = first_line_as_pid(result->captured_stdout);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(wait_until_gone(grandchild));
}

TEST(ProcessRunner, ChildFinishingInTimeIsNotTimedOut) {
  auto spec = shell("exit 0");
  spec.timeout = generous_bound;
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_FALSE(result->timed_out);
  EXPECT_EQ(result->exit_code, 0);
}

TEST(ProcessRunner, GrandchildHoldingStdoutDoesNotHangCompletion) {
  // The background sleep keeps the pipe open after the shell has exited.
  const auto result = run_to_completion(shell("sleep 30 & echo $!"));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->exit_code, 0);
  const pid_t grandchild = first_line_as_pid(result->captured_stdout);
  ASSERT_GT(grandchild, 0);
  ::kill(grandchild, SIGKILL);
}

TEST(ProcessRunner, ManyConcurrentRunsAllComplete) {
  constexpr int run_count = 50;
  asio::io_context io;
  process_runner runner(io);
  int completed = 0;
  int correct_output = 0;
  std::size_t most_running = 0;
  for (int i = 0; i < run_count; ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          const auto result = co_await runner.run(shell("sleep 0.2; echo " + std::to_string(i)));
          most_running = std::max(most_running, runner.running());
          ++completed;
          if (result.exit_code == 0 && result.captured_stdout == std::to_string(i) + "\n")
            ++correct_output;
        },
        asio::detached);
  }
  io.run_for(generous_bound);
  EXPECT_EQ(completed, run_count);
  EXPECT_EQ(correct_output, run_count);
  EXPECT_GT(most_running, 1u);  // they did overlap
  EXPECT_EQ(runner.running(), 0u);
}

TEST(ProcessRunner, NoDescriptorLeaks) {
  const std::size_t before = open_descriptor_count();
  ASSERT_GT(before, 0u);
  {
    asio::io_context io;
    process_runner runner(io);
    temporary_file out;
    // Captured, exec failure, given descriptors, with a timeout.
    std::vector<process_spec> kinds{program({"/bin/echo", "x"}), program({"/nonexistent/cbsd"}),
                                    program({"/bin/echo", "x"}), shell("exit 1")};
    kinds[2].stdout_fd = out.fd();
    kinds[2].stderr_fd = out.fd();
    kinds[3].timeout = generous_bound;
    int completed = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < 100; ++i) {
            co_await runner.run(kinds[i % kinds.size()]);
            ++completed;
          }
        },
        asio::detached);
    io.run_for(generous_bound);
    EXPECT_EQ(completed, 100);
  }
  EXPECT_EQ(open_descriptor_count(), before);
}

TEST(ProcessRunner, ChildDoesNotInheritOtherDescriptors) {
  // The child lists its own descriptors: the unrelated pipe must not be there.
  int pipe_ends[2];
  ASSERT_EQ(::pipe(pipe_ends), 0);
  // Deliberately not close-on-exec, and numbered above what ls itself opens.
  const int unrelated[2] = {::fcntl(pipe_ends[0], F_DUPFD, 50), ::fcntl(pipe_ends[1], F_DUPFD, 50)};
  ::close(pipe_ends[0]);
  ::close(pipe_ends[1]);
  const auto result = run_to_completion(shell("ls /dev/fd"));
  ::close(unrelated[0]);
  ::close(unrelated[1]);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->captured_stdout.find(std::to_string(unrelated[0]) + "\n"), std::string::npos)
      << result->captured_stdout;
  EXPECT_EQ(result->captured_stdout.find(std::to_string(unrelated[1]) + "\n"), std::string::npos)
      << result->captured_stdout;
}

TEST(ProcessRunner, TerminateAllStopsRunningChildren) {
  asio::io_context io;
  process_runner runner(io);
  std::optional<process_result> result;
  asio::co_spawn(io, runner.run(program({"/bin/sleep", "100"})),
                 [&](std::exception_ptr, process_result r) { result = std::move(r); });
  ASSERT_TRUE(run_until(io, [&] { return runner.running() == 1; }));
  runner.terminate_all();
  ASSERT_TRUE(run_until(io, [&] { return result.has_value(); }));
  EXPECT_EQ(result->term_signal, SIGTERM);
  EXPECT_FALSE(result->timed_out);
  EXPECT_EQ(runner.running(), 0u);
}

TEST(ProcessRunner, DestroyingTheRunnerLeavesChildrenAlone) {
  temporary_file pid_file;
  asio::io_context io;
  auto runner = std::make_unique<process_runner>(io);
  std::optional<process_result> result;
  auto spec = shell("echo $$; exec sleep 100");
  spec.stdout_fd = pid_file.fd();
  asio::co_spawn(io, runner->run(spec),
                 [&](std::exception_ptr, process_result r) { result = std::move(r); });
  ASSERT_TRUE(run_until(io, [&] { return !pid_file.contents().empty(); }));
  const pid_t child = first_line_as_pid(pid_file.contents());
  ASSERT_GT(child, 0);

  runner.reset();
  ASSERT_TRUE(run_until(io, [&] { return result.has_value(); }));
  EXPECT_EQ(result->exit_code, -1);
  EXPECT_EQ(::kill(child, 0), 0);  // still running: the runner killed nothing

  ::kill(child, SIGKILL);
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
}

TEST(ProcessRunner, TearingDownWithAChildRunningIsClean) {
  // Runner first, then the loop, without running it again: nothing may be
  // touched after it is gone (the sanitizer build checks).
  temporary_file pid_file;
  pid_t child = 0;
  {
    asio::io_context io;
    auto runner = std::make_unique<process_runner>(io);
    auto spec = shell("echo $$; exec sleep 100");
    spec.stdout_fd = pid_file.fd();
    spec.timeout = generous_bound;
    asio::co_spawn(io, runner->run(spec), asio::detached);
    ASSERT_TRUE(run_until(io, [&] { return !pid_file.contents().empty(); }));
    child = first_line_as_pid(pid_file.contents());
    runner.reset();
  }
  ASSERT_GT(child, 0);
  ::kill(child, SIGKILL);
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
}

} // namespace

// A daemon started with its standard descriptors closed opens /dev/null and
// the pipes among 0..2; the runner then starts children the careful way
// (fork, descriptors moved out of the way) instead of by posix_spawn.
class standard_descriptors_closed {
 public:
  standard_descriptors_closed() {
    for (int fd = 0; fd < 3; ++fd) {
      saved_[fd] = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
      ::close(fd);
    }
  }
  ~standard_descriptors_closed() {
    for (int fd = 0; fd < 3; ++fd) {
      if (saved_[fd] < 0) continue;
      ::dup2(saved_[fd], fd);
      ::close(saved_[fd]);
    }
  }
  standard_descriptors_closed(const standard_descriptors_closed&) = delete;
  standard_descriptors_closed& operator=(const standard_descriptors_closed&) = delete;

 private:
  int saved_[3] = {-1, -1, -1};
};

TEST(ProcessRunner, StartsTheSameWayWhenTheDaemonHasNoStandardDescriptors) {
  std::optional<process_result> plain, timed, failed;
  {
    const standard_descriptors_closed closed;
    auto spec = shell("cat; echo in; pwd; ls /dev/fd");
    spec.cwd = "/tmp";
    plain = run_to_completion(spec);
    auto group = shell("sleep 100 & echo $!; wait");
    group.timeout = 1s;
    group.kill_grace = generous_bound;
    timed = run_to_completion(group);
    auto missing = program({"/nonexistent/cbsd"});
    failed = run_to_completion(missing);
  }
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->exit_code, 0);
  // Empty stdin, the given directory, and only 0..2 (plus ls's own) open.
  EXPECT_EQ(plain->captured_stdout.substr(0, 8), "in\n/tmp\n") << plain->captured_stdout;
  std::istringstream descriptors(plain->captured_stdout.substr(std::min<std::size_t>(8, plain->captured_stdout.size())));
  for (std::string line; std::getline(descriptors, line);) EXPECT_LT(std::atoi(line.c_str()), 4) << line;

  ASSERT_TRUE(timed);
  EXPECT_TRUE(timed->timed_out);
  const pid_t grandchild = first_line_as_pid(timed->captured_stdout);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(wait_until_gone(grandchild)); // the whole group got SIGTERM

  ASSERT_TRUE(failed);
  EXPECT_TRUE(failed->start_failed);
  EXPECT_EQ(failed->start_error, "exec /nonexistent/cbsd: No such file or directory");
}

namespace {

TEST(ProcessRunner, SinksGetStdoutAndStderrAsTheyAreRead) {
  auto spec = shell("echo out; echo err >&2; head -c 100000 /dev/zero");
  std::string out, err;
  spec.stdout_sink = [&](std::string_view data) { out.append(data); };
  spec.stderr_sink = [&](std::string_view data) { err.append(data); };
  const auto result = run_to_completion(spec);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_EQ(out, "out\n" + std::string(100000, '\0'));
  EXPECT_EQ(err, "err\n");
  EXPECT_TRUE(result->captured_stdout.empty());
}

// A process the child leaves behind holding a sink's pipe (a daemon cbsd
// started) neither blocks nor dies of SIGPIPE when it writes after the run:
// what it writes is read and dropped, never given to the sink.
TEST(ProcessRunner, AProcessLeftHoldingASinksPipeCanStillWrite) {
  char tmpl[] = "/tmp/process_test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, gate = dir + "/gate", wrote = dir + "/wrote";
  asio::io_context io;
  process_runner runner(io);
  auto spec = shell("(while [ ! -e " + gate + " ]; do sleep 0.01; done; head -c 200000 /dev/zero; touch " + wrote +
                    ") & echo started");
  std::string out;
  spec.stdout_sink = [&](std::string_view data) { out.append(data); };
  std::optional<process_result> result;
  asio::co_spawn(io, runner.run(std::move(spec)), [&](std::exception_ptr error, process_result r) {
    if (!error) result = std::move(r);
  });
  ASSERT_TRUE(run_until(io, [&] { return result.has_value(); }));
  EXPECT_EQ(out, "started\n");
  std::ofstream(gate) << "go";
  EXPECT_TRUE(run_until(io, [&] { return ::access(wrote.c_str(), F_OK) == 0; }));
  EXPECT_EQ(out, "started\n");
  std::filesystem::remove_all(dir);
}

} // namespace
