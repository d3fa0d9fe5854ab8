// bench_router: how close bs_router comes to the limit the machine itself sets.
//
// The limit is measured in the same run: spawning the cbsd stand-in directly
// (posix_spawn + waitpid), once before and once after the router's runs. Every
// router figure is then a ratio to it: a slower machine lowers both sides, so
// ratios from different machines compare where raw rates would not. (A
// machine whose load changes during the run still moves them; the two
// baselines show by how much.)
//
// What runs: a beanstalkd of its own on a free loopback port per measurement,
// the real bs_router with a generated pool (under TMPDIR, so TMPDIR chooses
// the filesystem of its journal and job files) whose cbsd_path is the
// stand-in, and this program as the controller. Nothing here is a test: the
// exit status is 0 when every measurement ran, whatever the figures.

#include "bs_router/amqp_connection.hpp"
#include "bs_router/rabbitmq_config.hpp"

#include "support/amqp_test_client.hpp"
#include "support/run_coroutine.hpp"
#include "support/beanstalk_test_client.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/cbsd_fixture.hpp"
#include "support/loopback.hpp"
#include "support/rabbitmq_node.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <nlohmann/json.hpp>
#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <spawn.h>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

using namespace bs_router::testing;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using nlohmann::json;
namespace asio = boost::asio;

constexpr const char* cbsd_stub_path = CBSD_STUB_PATH;
constexpr int parallel_spawns = 8; // the baseline's "in flight" beside the sequential one
constexpr int router_max_jobs[] = {1, 8};
// A job with jname costs its own run plus the Guid and DskGuid look-ups.
constexpr std::size_t runs_per_jname_job = 3;
// The first put-to-reply round trips pay for cold caches, not for the router.
constexpr std::size_t latency_warmup_runs = 5;
// With jobs waiting in the tube, memory is read once this many were answered.
constexpr std::size_t answered_before_memory_reading = 300;
// The router has nothing to do yet; this only lets its start-up settle.
constexpr auto idle_settle_time = 500ms;
// A burst is done when the broker holds every reply: asked this often.
constexpr auto broker_poll_interval = 5ms;
constexpr std::chrono::seconds reply_wait_limit{10};

// Targets of issue 4.
constexpr double target_burst_ratio = 0.80;
constexpr double target_latency_over_spawn_ms = 1.0;
constexpr double target_peak_rss_mb = 10.0;
// Targets of the look-ups issue: jname jobs/s with the databases against the
// cbsd commands, and against the bare spawn rate (one run per job).
constexpr double target_lookup_speedup = 2.5;
constexpr double target_lookup_spawn_ratio = 0.80;
constexpr int lookup_max_jobs[] = {4, 16};
// Where the stand-in counts its runs (see cbsd_stub.c).
constexpr const char* stub_runs_file = "cbsd_stub.runs";
// --rabbitmq: the bursts' concurrency on every broker.
constexpr int rabbitmq_bench_max_jobs = 8;

struct settings {
  std::size_t jobs = 2000;
  std::size_t latency_runs = 200;
  std::size_t waiting_jobs = 10000;
  std::string journal_dir; // non-empty: extra runs with each router's statedir under it
  bool keep_files = false;  // leave the run's directory in place
  bool lookups_only = false; // only the baselines and the look-ups' runs
  bool rabbitmq = false;     // only the baselines and beanstalkd beside RabbitMQ (one node, three)
  std::size_t vms = 0;       // jname jobs spread over this many VMs; 0: each its own
  std::size_t stub_cpu_ms = 0; // the look-ups' runs: CPU the stand-in burns per run
};

// settings::vms, for job_body: 0, each jname job its own VM.
std::size_t jname_vms = 0;
// settings::stub_cpu_ms, for prepare_lookups.
std::size_t stub_cpu_ms = 0;
// Where the look-ups' baselines run the stand-in: with --stub-cpu-ms, a
// directory holding cbsd_stub.cpu_ms, so that "÷ the bare spawn rate" sets the
// router's runs against spawning the same program; else the bench's own.
std::string lookup_baseline_dir;

// --- small helpers ---------------------------------------------------------------

double seconds_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

double milliseconds_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Nearest rank: the smallest sample with at least `fraction` of all at or below it.
double percentile(std::vector<double> samples, double fraction) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(samples.size())));
  return samples[std::clamp<std::size_t>(rank, 1, samples.size()) - 1];
}

std::string megabytes(std::optional<long> kilobytes) {
  if (!kilobytes) return "n/a";
  return fmt::format("{:.1f}", static_cast<double>(*kilobytes) / 1024.0);
}

// Microseconds to create (and close) one empty file in `dir`, over `count`
// new files that stay until the run's directory goes. Each job makes three in
// logdir; on some file systems (ext4 without a journal) this cost grows with
// the files deleted in the last minutes, whoever deleted them.
double file_create_us(const std::filesystem::path& dir, std::size_t count) {
  std::filesystem::create_directories(dir);
  const auto start = steady::now();
  for (std::size_t i = 0; i < count; ++i) {
    const std::string path = (dir / std::to_string(i)).string();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("create " + path + ": " + std::strerror(errno));
    ::close(fd);
  }
  return milliseconds_between(start, steady::now()) * 1000.0 / static_cast<double>(count);
}

std::string load_average() {
  double load[3];
  if (getloadavg(load, 3) != 3) return "n/a";
  return fmt::format("{:.2f} {:.2f} {:.2f}", load[0], load[1], load[2]);
}

// A "Name:   1234 kB" field of /proc/<pid>/status. Linux only; elsewhere the
// callers fall back to wait4's ru_maxrss or report n/a.
std::optional<long> proc_status_kb([[maybe_unused]] pid_t pid,
                                   [[maybe_unused]] const std::string& field) {
#ifdef __linux__
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string prefix = field + ":";
  while (std::getline(status, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    return std::stol(line.substr(prefix.size()));
  }
#endif
  return std::nullopt;
}

// CPU time a process used itself and the CPU time of its children it has
// reaped, in milliseconds.
struct cpu_split {
  double own_ms = 0;
  double children_ms = 0;
};

// From /proc/<pid>/stat (Linux): a running router's own figures, which
// wait4 would only give once it has exited, and mixed with its children's.
std::optional<cpu_split> proc_cpu([[maybe_unused]] pid_t pid) {
#ifdef __linux__
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(stat, text);
  // The command name (field 2) may hold spaces; fields after it are plain.
  const auto after_name = text.rfind(')');
  if (after_name == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(after_name + 2));
  std::vector<std::string> values;
  for (std::string v; fields >> v;) values.push_back(v);
  // Fields 14..17 of the file (utime stime cutime cstime) are 11..14 here,
  // counted from field 3.
  if (values.size() < 15) return std::nullopt;
  const double ms_per_tick = 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  cpu_split cpu;
  cpu.own_ms = (std::stod(values[11]) + std::stod(values[12])) * ms_per_tick;
  cpu.children_ms = (std::stod(values[13]) + std::stod(values[14])) * ms_per_tick;
  return cpu;
#else
  return std::nullopt;
#endif
}

double cpu_ms(const rusage& usage) {
  return (static_cast<double>(usage.ru_utime.tv_sec) + static_cast<double>(usage.ru_stime.tv_sec)) * 1000.0 +
         (static_cast<double>(usage.ru_utime.tv_usec) + static_cast<double>(usage.ru_stime.tv_usec)) / 1000.0;
}

// getrusage is POSIX: the baseline's CPU cost needs no /proc.
cpu_split cpu_now() {
  rusage self{};
  rusage children{};
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &children);
  return {cpu_ms(self), cpu_ms(children)};
}

// --- the baseline: the stand-in spawned directly ---------------------------------

// posix_spawn with the stand-in's output going to /dev/null: what it prints is
// not what is measured, and a pipe would have to be read. With a directory,
// the stand-in runs there: where that holds cbsd_stub.cpu_ms, the baseline is
// the same CPU-burning program the router runs (--stub-cpu-ms).
class stub_spawner {
 public:
  explicit stub_spawner(const std::string& directory = "") {
    posix_spawn_file_actions_init(&actions_);
    posix_spawn_file_actions_addopen(&actions_, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&actions_, STDOUT_FILENO, STDERR_FILENO);
    if (!directory.empty())
      if (const int error = posix_spawn_file_actions_addchdir_np(&actions_, directory.c_str())) {
        posix_spawn_file_actions_destroy(&actions_);
        throw std::runtime_error(fmt::format("posix_spawn_file_actions_addchdir_np: {}", std::strerror(error)));
      }
  }
  ~stub_spawner() { posix_spawn_file_actions_destroy(&actions_); }
  stub_spawner(const stub_spawner&) = delete;
  stub_spawner& operator=(const stub_spawner&) = delete;

  pid_t start() const {
    char* argv[] = {const_cast<char*>(cbsd_stub_path), nullptr};
    pid_t pid = -1;
    if (const int error = posix_spawn(&pid, cbsd_stub_path, &actions_, nullptr, argv, environ))
      throw std::runtime_error(fmt::format("posix_spawn {}: {}", cbsd_stub_path, std::strerror(error)));
    return pid;
  }

 private:
  posix_spawn_file_actions_t actions_;
};

void check_stub_status(int status) {
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(fmt::format("{} did not exit 0 (wait status {})", cbsd_stub_path, status));
}

struct baseline_result {
  double sequential_per_second = 0;
  double parallel_per_second = 0;
  double spawn_p50_ms = 0; // one spawn + waitpid, sequential
  double spawn_p99_ms = 0;
  cpu_split cpu_ms_per_spawn; // sequential: the spawning side, and the child itself
  double fork_exec_per_second = 0; // a diagnosis: fork + execve instead of posix_spawn
};

// Where the platform's posix_spawn cannot change directory and close
// inherited descriptors, the router starts cbsd with fork() and execve(),
// which copies page tables that posix_spawn's vfork-like clone does not.
// This row shows what that fallback costs.
double measure_fork_exec_rate(std::size_t spawns) {
  char* argv[] = {const_cast<char*>(cbsd_stub_path), nullptr};
  const int dev_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (dev_null < 0) throw std::runtime_error(fmt::format("open /dev/null: {}", std::strerror(errno)));
  const auto started = steady::now();
  for (std::size_t i = 0; i < spawns; ++i) {
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(fmt::format("fork: {}", std::strerror(errno)));
    if (pid == 0) {
      dup2(dev_null, STDOUT_FILENO);
      dup2(dev_null, STDERR_FILENO);
      execve(cbsd_stub_path, argv, environ);
      _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    check_stub_status(status);
  }
  const double rate = static_cast<double>(spawns) / seconds_between(started, steady::now());
  close(dev_null);
  return rate;
}

// Spawns per second one after another; each spawn's duration goes to
// `durations_ms` when given.
double measure_sequential(const stub_spawner& spawner, std::size_t spawns, std::vector<double>* durations_ms) {
  const auto sequential_start = steady::now();
  for (std::size_t i = 0; i < spawns; ++i) {
    const auto started = steady::now();
    const pid_t pid = spawner.start();
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (durations_ms) durations_ms->push_back(milliseconds_between(started, steady::now()));
    check_stub_status(status);
  }
  return static_cast<double>(spawns) / seconds_between(sequential_start, steady::now());
}

// Spawns per second with `in_flight_limit` in flight.
double measure_parallel(const stub_spawner& spawner, std::size_t spawns, int in_flight_limit = parallel_spawns) {
  // Any child may end first, so reap whichever does. Only the stand-ins are
  // children while this runs (no broker or router is alive), but a stranger
  // is skipped rather than counted.
  std::set<pid_t> in_flight;
  std::size_t started_count = 0;
  const auto parallel_start = steady::now();
  while (started_count < spawns || !in_flight.empty()) {
    while (started_count < spawns && in_flight.size() < static_cast<std::size_t>(in_flight_limit)) {
      in_flight.insert(spawner.start());
      ++started_count;
    }
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(fmt::format("waitpid: {}", std::strerror(errno)));
    }
    if (in_flight.erase(pid) == 0) continue;
    check_stub_status(status);
  }
  return static_cast<double>(spawns) / seconds_between(parallel_start, steady::now());
}

baseline_result measure_baseline(std::size_t spawns) {
  const stub_spawner spawner;
  baseline_result result;

  std::vector<double> durations_ms;
  durations_ms.reserve(spawns);
  const cpu_split cpu_before = cpu_now();
  result.sequential_per_second = measure_sequential(spawner, spawns, &durations_ms);
  const cpu_split cpu_after = cpu_now();
  result.cpu_ms_per_spawn = {(cpu_after.own_ms - cpu_before.own_ms) / static_cast<double>(spawns),
                             (cpu_after.children_ms - cpu_before.children_ms) / static_cast<double>(spawns)};
  result.spawn_p50_ms = percentile(durations_ms, 0.50);
  result.spawn_p99_ms = percentile(durations_ms, 0.99);
  result.parallel_per_second = measure_parallel(spawner, spawns);
  result.fork_exec_per_second = measure_fork_exec_rate(spawns);
  return result;
}

// The spawn rate at a burst's concurrency, measured right beside it: what the
// machine can do may change within a run (other work on it), and a ratio is
// only fair against the limit of the same minutes.
double adjacent_spawn_rate(int max_jobs, std::size_t spawns, const std::string& directory = "") {
  const stub_spawner spawner(directory);
  // As many in flight as the router may run at once: the same concurrency.
  return max_jobs == 1 ? measure_sequential(spawner, spawns, nullptr) : measure_parallel(spawner, spawns, max_jobs);
}

// --- the router --------------------------------------------------------------------

// The journal's syncs and the time they took, per job.
struct journal_cost {
  double syncs_per_job = 0;
  double sync_ms_per_job = 0;
};

std::optional<journal_cost> journal_cost_per_job(std::uint16_t metrics_port, std::size_t jobs) {
  const auto syncs = metric_sample(metrics_port, "bs_router_journal_syncs_total");
  const auto seconds = metric_sample(metrics_port, "bs_router_journal_sync_seconds_total");
  if (!syncs || !seconds || jobs == 0) return std::nullopt;
  return journal_cost{*syncs / static_cast<double>(jobs), *seconds * 1000 / static_cast<double>(jobs)};
}

// The pool's config beside test_pool's defaults (which already put logfile,
// logdir and statedir inside the pool dir and use 1 s reserve and reconnect
// timeouts): the stand-in as cbsd, the concurrency under test, and the
// journal elsewhere when asked.
// Returns the metrics port it chose.
// `lookups`: the key's value, empty to leave it out.
std::uint16_t configure(test_pool& pool, int max_jobs, const std::string& journal_dir,
                        const std::string& lookups = "") {
  const std::uint16_t metrics_port = free_loopback_port();
  json extra = {{"cbsd_path", cbsd_stub_path},
                {"max_jobs", max_jobs},
                {"metrics_listen", fmt::format("127.0.0.1:{}", metrics_port)}};
  if (!journal_dir.empty()) extra["statedir"] = journal_dir + "/" + pool.name();
  if (!lookups.empty()) extra["lookups"] = lookups;
  pool.write_config(extra);
  return metrics_port;
}

// test_pool removes its own directory; a statedir placed elsewhere is ours.
void remove_outside_statedir(const test_pool& pool, const std::string& journal_dir) {
  if (journal_dir.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(journal_dir + "/" + pool.name(), ignored);
}

// Each job gets its own jname so that jname jobs may run side by side: the
// router runs one job at a time per jname. With --vms N they take turns
// over N VMs instead (a VM's jobs one after another).
std::string job_body(std::size_t index, bool with_jname) {
  if (with_jname)
    return json{{"Command", "jstart"},
                {"CommandArgs", {{"jname", fmt::format("bench{}", jname_vms ? index % jname_vms : index)}}}}
        .dump();
  return json{{"Command", "jls"}, {"CommandArgs", {{"header", "0"}}}}.dump();
}

// CBSD's databases as CBSD lays them out, with VMs bench0 .. bench<count-1>
// (job_body's jnames), whose Guid and DskGuid are the stand-in's "ok": one VM
// database made once and copied.
void create_cbsd_databases(const test_pool& pool, std::size_t count) {
  namespace fixture = cbsd_fixture;
  const std::filesystem::path& env = pool.dir();
  fixture::create_inventory(env);
  fixture::create_vm_tables(env, "bench0", "bhyve");
  {
    fixture::database vm(fixture::vm_database_path(env, "bench0"));
    fixture::insert_row(vm.get(), "settings", {{"vm_zfs_guid", "ok"}});
    fixture::insert_row(vm.get(), "bhyvedsk", {{"jname", "bench0"}, {"dsk_path", "dsk1.vhd"}, {"dsk_zfs_guid", "ok"}});
  }
  fixture::database inventory(fixture::inventory_path(env));
  inventory.exec("BEGIN");
  for (std::size_t i = 0; i < count; ++i) {
    const std::string jname = fmt::format("bench{}", i);
    fixture::insert_row(inventory.get(), "jails", {{"jname", jname}, {"emulator", "bhyve"}});
    if (i == 0) continue;
    std::filesystem::create_directories(env / "jails-system" / jname);
    std::filesystem::copy_file(fixture::vm_database_path(env, "bench0"), fixture::vm_database_path(env, jname));
  }
  inventory.exec("COMMIT");
}

// How the look-ups are made in a run: nullopt for the pool as the other runs
// have it (no databases, lookups left out: the cbsd commands); else the
// lookups key, with the databases made when "database", and the stand-in's
// runs counted.
using lookup_way = std::optional<std::string>;

void prepare_lookups(const test_pool& pool, const lookup_way& way, std::size_t vms) {
  if (!way) return;
  if (*way == "database") create_cbsd_databases(pool, jname_vms ? std::min(vms, jname_vms) : vms);
  std::ofstream(pool.dir() / stub_runs_file); // the stand-in appends to it
  if (stub_cpu_ms > 0) std::ofstream(pool.dir() / "cbsd_stub.cpu_ms") << stub_cpu_ms;
}

std::optional<std::size_t> stub_runs(const test_pool& pool, const lookup_way& way) {
  if (!way) return std::nullopt;
  std::error_code ec;
  const auto size = std::filesystem::file_size(pool.dir() / stub_runs_file, ec);
  if (ec) return std::nullopt;
  return static_cast<std::size_t>(size);
}

// Every put the broker took since it started: the jobs we put plus the
// router's replies (one per job: progress replies are off).
std::uint64_t broker_put_count(beanstalk_test_client& broker) {
  return std::stoull(broker.stats().at("cmd-put"));
}

// Stops the router (SIGTERM, as an operator would) and returns its peak
// resident set as its parent sees it: wait4 works on every POSIX system,
// /proc only on Linux. ru_maxrss is in kilobytes on Linux and FreeBSD.
std::optional<long> stop_router_and_read_peak_kb(test_pool& pool) {
  const pid_t pid = pool.router_pid();
  if (pid <= 0) return std::nullopt;
  ::kill(pid, SIGTERM);
  rusage usage{};
  int status = 0;
  const bool reaped = wait_until([&] { return wait4(pid, &status, WNOHANG, &usage) == pid; }, 60s);
  if (!reaped) {
    pool.kill_router();
    return std::nullopt;
  }
  // test_pool finds its router gone (ECHILD) and forgets it.
  pool.router_running();
  return usage.ru_maxrss;
}

// What the stand-in makes a correct final reply look like.
std::optional<std::string> reply_problem(const json& reply, std::uint64_t job_id, bool with_jname) {
  if (!reply.is_object()) return "not a JSON object";
  if (reply.value("JobID", json()) != job_id) return "JobID is not " + std::to_string(job_id);
  if (reply.value("ErrCode", json()) != 0) return "ErrCode " + reply.value("ErrCode", json()).dump();
  if (reply.value("Progress", json()) != 100) return "Progress is not 100";
  if (reply.value("Message", json()) != "ok\n") return "Message is not the stand-in's output";
  if (with_jname && (reply.value("Guid", json()) != "ok" || reply.value("DskGuid", json()) != "ok"))
    return "Guid/DskGuid are not the look-ups' output";
  return std::nullopt;
}

struct reply_tally {
  std::size_t lost = 0;
  std::size_t invalid = 0;
  std::string first_problem;

  void note(const std::string& problem) {
    if (first_problem.empty()) first_problem = problem;
  }
};

// Takes and checks the final reply of every job. The replies are already in
// the broker (the caller waited for them), so nothing is waited for here.
reply_tally collect_replies(test_pool& pool, const std::vector<std::uint64_t>& job_ids, bool with_jname) {
  reply_tally tally;
  for (const std::uint64_t id : job_ids) {
    std::optional<json> reply;
    try {
      reply = pool.client().wait_reply(pool.reply_tube(id), 0s);
    } catch (const std::exception& ex) {
      ++tally.invalid;
      tally.note(ex.what());
      continue;
    }
    if (!reply) {
      ++tally.lost;
      tally.note(fmt::format("job {}: no reply", id));
      continue;
    }
    if (const auto problem = reply_problem(*reply, id, with_jname)) {
      ++tally.invalid;
      tally.note(fmt::format("job {}: {}: {}", id, *problem, reply->dump()));
    }
  }
  return tally;
}

struct burst_result {
  // The bare spawn rate at the same concurrency just before and just after.
  double adjacent_rate_before = 0;
  double adjacent_rate_after = 0;
  double adjacent_rate() const { return (adjacent_rate_before + adjacent_rate_after) / 2; }
  int max_jobs = 0;
  bool with_jname = false;
  bool journal_elsewhere = false;
  std::size_t jobs = 0;
  double seconds = 0;
  reply_tally replies;
  std::optional<long> vm_hwm_kb;   // Linux: /proc/<pid>/status before the stop
  std::optional<long> peak_rss_kb; // wait4 after the stop
  std::optional<cpu_split> router_cpu_ms_per_job; // Linux: the router, and the cbsd runs it reaped
  // Linux: beanstalkd's CPU over the burst (the jobs' puts come before it), per job.
  std::optional<double> broker_cpu_ms_per_job;
  std::optional<journal_cost> journal;
  lookup_way lookups;                // the look-ups' runs only
  std::optional<std::size_t> stub_runs; // counted by the stand-in, for those

  double jobs_per_second() const { return static_cast<double>(jobs) / seconds; }
  double runs_per_job() const {
    if (stub_runs && jobs) return static_cast<double>(*stub_runs) / static_cast<double>(jobs);
    return static_cast<double>(with_jname ? runs_per_jname_job : 1);
  }
  double runs_per_second() const { return jobs_per_second() * runs_per_job(); }
  // The burst's ratio: its cbsd runs/s over the bare spawn rate beside it.
  double ratio() const { return runs_per_second() / adjacent_rate(); }
};

// All jobs go on the tube first, then the router starts: the time is the
// router draining a full tube, from its exec to the broker holding the last
// reply, start-up included.
burst_result run_burst(std::size_t jobs, int max_jobs, bool with_jname, const std::string& journal_dir,
                       const lookup_way& lookups = std::nullopt) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.keep_directory(); // see work_directory
  const std::uint16_t metrics_port = configure(pool, max_jobs, journal_dir, lookups.value_or(""));
  prepare_lookups(pool, lookups, jobs);

  burst_result result;
  result.max_jobs = max_jobs;
  result.with_jname = with_jname;
  result.journal_elsewhere = !journal_dir.empty();
  result.jobs = jobs;

  std::vector<std::uint64_t> job_ids;
  job_ids.reserve(jobs);
  for (std::size_t i = 0; i < jobs; ++i) job_ids.push_back(pool.put_job(job_body(i, with_jname)));

  beanstalk_test_client& broker = pool.client();
  const std::uint64_t puts_before = broker_put_count(broker);
  const auto limit = 60s + jobs * 100ms;

  const std::optional<cpu_split> broker_cpu_before = proc_cpu(server.pid());
  const auto started = steady::now();
  pool.start_router();
  wait_until([&] { return broker_put_count(broker) - puts_before >= jobs; }, limit, broker_poll_interval);
  result.seconds = seconds_between(started, steady::now());
  if (const std::optional<cpu_split> broker_cpu_after = proc_cpu(server.pid()); broker_cpu_before && broker_cpu_after)
    result.broker_cpu_ms_per_job = (broker_cpu_after->own_ms - broker_cpu_before->own_ms) / static_cast<double>(jobs);

  result.vm_hwm_kb = proc_status_kb(pool.router_pid(), "VmHWM");
  result.journal = journal_cost_per_job(metrics_port, jobs);
  if (const auto cpu = proc_cpu(pool.router_pid()))
    result.router_cpu_ms_per_job = cpu_split{cpu->own_ms / static_cast<double>(jobs),
                                             cpu->children_ms / static_cast<double>(jobs)};
  result.peak_rss_kb = stop_router_and_read_peak_kb(pool);
  result.replies = collect_replies(pool, job_ids, with_jname);
  result.lookups = lookups;
  result.stub_runs = stub_runs(pool, lookups);
  remove_outside_statedir(pool, journal_dir);
  return result;
}

struct latency_result {
  bool journal_elsewhere = false;
  std::size_t runs = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double run_p50_ms = 0; // the replies' Duration: the router's own timing of the cbsd run
  double startup_ms = 0; // start_router() until its log says it serves (10 ms polls)
  double adjacent_spawn_p50_ms = 0; // one bare spawn's p50, measured just before
  std::optional<journal_cost> journal;
  reply_tally replies;
  lookup_way lookups; // set: jobs with jname, made that way
  std::optional<double> runs_per_job;
};

// One job at a time: put, wait for its reply, again. The time runs from just
// before the put to the RESERVED of the reply.
latency_result run_latency(std::size_t runs, const std::string& journal_dir, const lookup_way& lookups = std::nullopt) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.keep_directory(); // see work_directory
  const std::uint16_t metrics_port = configure(pool, 1, journal_dir, lookups.value_or(""));
  prepare_lookups(pool, lookups, latency_warmup_runs + runs);
  const bool with_jname = lookups.has_value();

  latency_result result;
  result.journal_elsewhere = !journal_dir.empty();
  const auto starting = steady::now();
  pool.start_router();
  result.startup_ms = milliseconds_between(starting, steady::now());

  beanstalk_test_client& broker = pool.client();
  std::vector<double> latencies_ms;
  std::vector<double> run_durations_ms;
  for (std::size_t i = 0; i < latency_warmup_runs + runs; ++i) {
    const auto put_at = steady::now();
    const std::uint64_t id = pool.put_job(job_body(i, with_jname));
    const auto reply_job = broker.reserve(pool.reply_tube(id), reply_wait_limit);
    const auto replied_at = steady::now();
    if (!reply_job) {
      ++result.replies.lost;
      result.replies.note(fmt::format("job {}: no reply within {} s", id, reply_wait_limit.count()));
      continue;
    }
    broker.delete_job(reply_job->id);
    std::optional<std::string> problem;
    double run_ms = 0;
    try {
      const json reply = json::parse(reply_job->body);
      problem = reply_problem(reply, id, with_jname);
      run_ms = reply.value("Duration", 0.0) * 1000;
    } catch (const json::exception& ex) {
      problem = ex.what();
    }
    if (problem) {
      ++result.replies.invalid;
      result.replies.note(fmt::format("job {}: {}", id, *problem));
    }
    if (i < latency_warmup_runs) continue;
    latencies_ms.push_back(milliseconds_between(put_at, replied_at));
    run_durations_ms.push_back(run_ms);
  }
  result.runs = latencies_ms.size();
  result.p50_ms = percentile(latencies_ms, 0.50);
  result.p99_ms = percentile(latencies_ms, 0.99);
  result.run_p50_ms = percentile(run_durations_ms, 0.50);
  result.journal = journal_cost_per_job(metrics_port, latency_warmup_runs + runs);
  stop_router_and_read_peak_kb(pool);
  result.lookups = lookups;
  if (const auto counted = stub_runs(pool, lookups))
    result.runs_per_job = static_cast<double>(*counted) / static_cast<double>(latency_warmup_runs + runs);
  remove_outside_statedir(pool, journal_dir);
  return result;
}

struct waiting_result {
  std::size_t waiting_jobs = 0;
  std::optional<long> idle_rss_kb;
  std::optional<long> rss_kb_with_jobs_waiting;
  std::size_t answered_at_reading = 0;
  std::size_t still_in_tube_at_reading = 0;
  std::optional<long> peak_rss_kb;
};

// max_jobs 1 with many jobs in the tube: the router must leave them there,
// so its memory with them waiting is its idle memory.
waiting_result run_waiting(std::size_t waiting_jobs) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.keep_directory(); // see work_directory
  configure(pool, 1, "");

  waiting_result result;
  result.waiting_jobs = waiting_jobs;
  pool.start_router();
  std::this_thread::sleep_for(idle_settle_time);
  result.idle_rss_kb = proc_status_kb(pool.router_pid(), "VmRSS");

  beanstalk_test_client& broker = pool.client();
  const std::uint64_t puts_before = broker_put_count(broker);
  for (std::size_t i = 0; i < waiting_jobs; ++i) pool.put_job(job_body(i, false));
  auto answered = [&] { return broker_put_count(broker) - puts_before - waiting_jobs; };
  const std::size_t answered_after_puts = answered();
  const std::size_t wanted = std::min(waiting_jobs, answered_after_puts + answered_before_memory_reading);
  wait_until([&] { return answered() >= wanted; }, 120s, broker_poll_interval);

  result.rss_kb_with_jobs_waiting = proc_status_kb(pool.router_pid(), "VmRSS");
  result.answered_at_reading = answered();
  if (const auto tube = broker.stats_tube(pool.tube()))
    result.still_in_tube_at_reading = std::stoul(tube->at("current-jobs-ready"));
  result.peak_rss_kb = stop_router_and_read_peak_kb(pool);
  return result;
}

// --- the report --------------------------------------------------------------------

std::string first_line_of_file(const std::string& path, const std::string& prefix) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto colon = line.find(':');
    return colon == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", colon + 1));
  }
  return "n/a";
}

std::string machine_description() {
  utsname os{};
  uname(&os);
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  const double memory_gb = pages > 0 && page_size > 0
                               ? static_cast<double>(pages) * static_cast<double>(page_size) / (1024.0 * 1024 * 1024)
                               : 0;
  return fmt::format(
      "- CPUs online: {}\n- CPU: {}\n- memory: {:.1f} GiB\n- OS: {} {} {}\n- compiler: {}\n",
      sysconf(_SC_NPROCESSORS_ONLN), first_line_of_file("/proc/cpuinfo", "model name"), memory_gb,
      os.sysname, os.release, os.machine,
#if defined(__clang__)
      "clang " __clang_version__
#elif defined(__GNUC__)
      "g++ " __VERSION__
#else
      "unknown"
#endif
  );
}

struct report {
  settings options;
  baseline_result before;
  baseline_result after;
  std::vector<burst_result> bursts;
  std::vector<latency_result> latencies;
  std::vector<burst_result> lookup_bursts;       // jname, per lookup_max_jobs: cbsd then database
  std::vector<latency_result> lookup_latencies;  // jname one at a time: cbsd then database
  waiting_result waiting;
  std::string load_before;
  std::string load_after;
  double create_us_before = 0;
  double create_us_after = 0;

  // Ratios use the mean of the two baselines: the machine may have changed
  // (other work) while the router ran.
  double sequential_rate() const { return (before.sequential_per_second + after.sequential_per_second) / 2; }
  double parallel_rate() const { return (before.parallel_per_second + after.parallel_per_second) / 2; }
  double spawn_p50_ms() const { return (before.spawn_p50_ms + after.spawn_p50_ms) / 2; }
  double rate_at(int max_jobs) const { return max_jobs == 1 ? sequential_rate() : parallel_rate(); }
};

std::string burst_label(const burst_result& b) {
  return fmt::format("{}{}", b.with_jname ? "jname" : "no jname", b.journal_elsewhere ? ", journal elsewhere" : "");
}

// "router (or spawner) + its children", milliseconds per job or spawn.
std::string journal_text(const std::optional<journal_cost>& cost) {
  if (!cost) return "n/a | n/a";
  return fmt::format("{:.2f} | {:.3f}", cost->syncs_per_job, cost->sync_ms_per_job);
}

std::string cpu_text(const std::optional<cpu_split>& cpu) {
  if (!cpu) return "n/a";
  return fmt::format("{:.2f} + {:.2f}", cpu->own_ms, cpu->children_ms);
}

void print_markdown(const report& r) {
  std::cout << "\n#### Machine\n\n" << machine_description();
  std::cout << fmt::format("- load average (1, 5, 15 min): {} before, {} after\n", r.load_before, r.load_after);
  std::cout << fmt::format("- creating an empty file where the pools live: {:.0f} µs before, {:.0f} µs after\n\n",
                           r.create_us_before, r.create_us_after);

  std::cout << "#### Baseline: the stand-in spawned directly (posix_spawn + waitpid)\n\n"
            << "| | before | after | used for ratios |\n|---|---|---|---|\n"
            << fmt::format("| spawns/s, one at a time | {:.0f} | {:.0f} | {:.0f} |\n", r.before.sequential_per_second,
                           r.after.sequential_per_second, r.sequential_rate())
            << fmt::format("| spawns/s, {} in flight | {:.0f} | {:.0f} | {:.0f} |\n", parallel_spawns,
                           r.before.parallel_per_second, r.after.parallel_per_second, r.parallel_rate())
            << fmt::format("| one spawn p50 / p99, ms | {:.2f} / {:.2f} | {:.2f} / {:.2f} | {:.2f} |\n",
                           r.before.spawn_p50_ms, r.before.spawn_p99_ms, r.after.spawn_p50_ms, r.after.spawn_p99_ms,
                           r.spawn_p50_ms())
            << fmt::format("| fork + execve instead (not used for ratios), per s | {:.0f} | {:.0f} | |\n\n",
                           r.before.fork_exec_per_second, r.after.fork_exec_per_second);

  std::cout << fmt::format("#### Burst: {} jobs on the tube, then the router starts\n\n", r.options.jobs)
            << "| max_jobs | jobs | jobs/s | cbsd runs/s | bare spawns/s, same concurrency, just before / after "
               "| ÷ that (the ratio) | ÷ the run's spawn rate, same concurrency | lost | invalid | peak RSS MB |\n"
            << "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& b : r.bursts) {
    std::cout << fmt::format("| {} | {} | {:.1f} | {:.1f} | {:.0f} / {:.0f} | **{:.0f}%** | {:.0f}% | {} | {} | {} |\n",
                             b.max_jobs, burst_label(b), b.jobs_per_second(), b.runs_per_second(),
                             b.adjacent_rate_before, b.adjacent_rate_after,
                             100 * b.ratio(),
                             100 * b.runs_per_second() / r.rate_at(b.max_jobs), b.replies.lost, b.replies.invalid,
                             megabytes(b.peak_rss_kb));
  }

  std::cout << "\n#### CPU time per job, ms: the router (or, for the baseline, the spawning program) + its children\n\n"
            << "| | CPU ms |\n|---|---|\n"
            << fmt::format("| baseline, before | {} |\n", cpu_text(r.before.cpu_ms_per_spawn))
            << fmt::format("| baseline, after | {} |\n", cpu_text(r.after.cpu_ms_per_spawn));
  for (const auto& b : r.bursts)
    std::cout << fmt::format("| burst, max_jobs {}, {} | {} |\n", b.max_jobs, burst_label(b), cpu_text(b.router_cpu_ms_per_job));

  std::cout << "\n#### The journal: syncs per job, and the time the router waited for them per job\n\n"
            << "| | syncs per job | ms per job |\n|---|---|---|\n";
  for (const auto& b : r.bursts)
    std::cout << fmt::format("| burst, max_jobs {}, {} | {} |\n", b.max_jobs, burst_label(b), journal_text(b.journal));
  for (const auto& l : r.latencies)
    std::cout << fmt::format("| one at a time{} | {} |\n", l.journal_elsewhere ? ", journal elsewhere" : "",
                             journal_text(l.journal));

  std::cout << fmt::format("\n#### Latency: one job at a time, {} runs after {} warm-up runs\n\n",
                           r.options.latency_runs, latency_warmup_runs)
            << "| | put-to-reply p50 ms | p99 ms | one bare spawn p50 just before, ms | p50 − that, ms "
               "| cbsd run inside the router (reply Duration) p50 ms | lost | invalid |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& l : r.latencies) {
    std::cout << fmt::format("| {} | {:.2f} | {:.2f} | {:.2f} | **{:.2f}** | {:.2f} | {} | {} |\n",
                             l.journal_elsewhere ? "journal elsewhere" : "router as configured", l.p50_ms, l.p99_ms,
                             l.adjacent_spawn_p50_ms, l.p50_ms - l.adjacent_spawn_p50_ms, l.run_p50_ms,
                             l.replies.lost, l.replies.invalid);
  }

  const auto& w = r.waiting;
  std::cout << fmt::format("\n#### Memory with {} jobs waiting in the tube (max_jobs 1)\n\n", w.waiting_jobs)
            << "| idle RSS MB | RSS MB with jobs waiting | answered / still in the tube at that reading | peak RSS MB |\n"
            << "|---|---|---|---|\n"
            << fmt::format("| {} | {} | {} / {} | {} |\n", megabytes(w.idle_rss_kb), megabytes(w.rss_kb_with_jobs_waiting),
                           w.answered_at_reading, w.still_in_tube_at_reading, megabytes(w.peak_rss_kb));
}

const char* verdict(bool met) { return met ? "met" : "not met"; }

std::string runs_text(const std::optional<std::size_t>& runs, std::size_t jobs) {
  if (!runs || jobs == 0) return "n/a";
  return fmt::format("{:.2f}", static_cast<double>(*runs) / static_cast<double>(jobs));
}

// The run of the same max_jobs made `way`, beside a database one.
const burst_result* burst_beside(const report& r, const burst_result& b, const std::string& way) {
  for (const auto& other : r.lookup_bursts)
    if (other.max_jobs == b.max_jobs && other.lookups == way) return &other;
  return nullptr;
}
const burst_result* cbsd_way_beside(const report& r, const burst_result& b) { return burst_beside(r, b, "cbsd"); }

std::string way_label(const lookup_way& way) {
  if (!way) return "?";
  return way->empty() ? "no jname" : *way;
}

void print_lookups_markdown(const report& r) {
  if (r.lookup_bursts.empty() && r.lookup_latencies.empty()) return;
  std::cout << fmt::format("\n#### Look-ups: {} jname jobs on the tube ({}), the cbsd commands "
                           "(lookups \"cbsd\") beside CBSD's databases (lookups \"database\")\n\n",
                           r.options.jobs,
                           (r.options.vms ? fmt::format("taking turns over {} VMs", r.options.vms) : "each its own VM") +
                               (r.options.stub_cpu_ms
                                    ? fmt::format("; each cbsd run burns {} ms of CPU, in the bare spawns "
                                                  "beside as well",
                                                  r.options.stub_cpu_ms)
                                    : ""))
            << "| max_jobs | lookups | jobs/s | cbsd runs per job (counted) | bare spawns/s beside "
               "| jobs/s ÷ that | ÷ the cbsd way's jobs/s | ÷ the no-jname jobs/s | CPU ms per job, router "
               "(all its threads) + its cbsd runs | beanstalkd's CPU ms per job | lost | invalid |\n"
            << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& b : r.lookup_bursts) {
    const burst_result* cbsd = b.lookups == "database" ? cbsd_way_beside(r, b) : nullptr;
    const burst_result* plain = b.lookups == "database" ? burst_beside(r, b, "") : nullptr;
    std::cout << fmt::format("| {} | {} | {:.1f} | {} | {:.0f} | **{:.0f}%** | {} | {} | {} | {} | {} | {} |\n", b.max_jobs,
                             way_label(b.lookups), b.jobs_per_second(), runs_text(b.stub_runs, b.jobs),
                             b.adjacent_rate(), 100 * b.jobs_per_second() / b.adjacent_rate(),
                             cbsd ? fmt::format("**{:.2f}×**", b.jobs_per_second() / cbsd->jobs_per_second()) : "",
                             plain ? fmt::format("{:.0f}%", 100 * b.jobs_per_second() / plain->jobs_per_second()) : "",
                             cpu_text(b.router_cpu_ms_per_job),
                             b.broker_cpu_ms_per_job ? fmt::format("{:.2f}", *b.broker_cpu_ms_per_job) : "n/a",
                             b.replies.lost, b.replies.invalid);
  }
  std::cout << "\n| one jname job at a time | put-to-reply p50 ms | p99 ms | one bare spawn p50 just before, ms "
               "| cbsd runs per job (counted) | lost | invalid |\n|---|---|---|---|---|---|---|\n";
  for (const auto& l : r.lookup_latencies)
    std::cout << fmt::format("| lookups \"{}\" | {:.2f} | {:.2f} | {:.2f} | {} | {} | {} |\n", l.lookups.value_or("?"),
                             l.p50_ms, l.p99_ms, l.adjacent_spawn_p50_ms,
                             l.runs_per_job ? fmt::format("{:.2f}", *l.runs_per_job) : "n/a", l.replies.lost,
                             l.replies.invalid);
}

void print_lookups_summary(const report& r) {
  if (r.lookup_bursts.empty() && r.lookup_latencies.empty()) return;
  std::cout << "\nlook-ups, jname jobs:\n";
  std::optional<double> speedup_at_4, spawn_ratio_at_4;
  for (const auto& b : r.lookup_bursts) {
    const burst_result* cbsd = b.lookups == "database" ? cbsd_way_beside(r, b) : nullptr;
    const double spawn_ratio = b.jobs_per_second() / b.adjacent_rate();
    std::cout << fmt::format("  max_jobs {:>2}, lookups {:<8} {:>8.1f} jobs/s, {} cbsd runs per job, {:.0f}% of the "
                             "bare spawn rate beside{}; lost {}, invalid {}\n",
                             b.max_jobs, way_label(b.lookups), b.jobs_per_second(), runs_text(b.stub_runs, b.jobs),
                             100 * spawn_ratio,
                             cbsd ? fmt::format(", {:.2f}× the cbsd way, {:.0f}% of the no-jname rate",
                                                b.jobs_per_second() / cbsd->jobs_per_second(),
                                                burst_beside(r, b, "") ? 100 * b.jobs_per_second() /
                                                                             burst_beside(r, b, "")->jobs_per_second()
                                                                       : 0.0)
                                  : "",
                             b.replies.lost, b.replies.invalid);
    if (!b.replies.first_problem.empty()) std::cout << "    first problem: " << b.replies.first_problem << "\n";
    if (cbsd && b.max_jobs == 4) {
      speedup_at_4 = b.jobs_per_second() / cbsd->jobs_per_second();
      spawn_ratio_at_4 = spawn_ratio;
    }
  }
  for (const auto& l : r.lookup_latencies)
    std::cout << fmt::format("  one at a time, lookups {:<8} p50 {:.2f} ms, p99 {:.2f} ms (one spawn p50 {:.2f} ms), "
                             "{} cbsd runs per job; lost {}, invalid {}\n",
                             l.lookups.value_or("?"), l.p50_ms, l.p99_ms, l.adjacent_spawn_p50_ms,
                             l.runs_per_job ? fmt::format("{:.2f}", *l.runs_per_job) : "n/a", l.replies.lost,
                             l.replies.invalid);
  std::cout << "targets (look-ups issue):\n"
            << fmt::format("  jname jobs/s at max_jobs 4, databases ≥ {:.1f}× the cbsd way: {} -> {}\n",
                           target_lookup_speedup, speedup_at_4 ? fmt::format("{:.2f}×", *speedup_at_4) : "n/a",
                           verdict(speedup_at_4 && *speedup_at_4 >= target_lookup_speedup))
            << fmt::format("  and ≥ {:.0f}% of the bare spawn rate: {} -> {}\n", 100 * target_lookup_spawn_ratio,
                           spawn_ratio_at_4 ? fmt::format("{:.0f}%", 100 * *spawn_ratio_at_4) : "n/a",
                           verdict(spawn_ratio_at_4 && *spawn_ratio_at_4 >= target_lookup_spawn_ratio));
}

// Above this, creating a file costs several times what it does on a quiet
// disk here (10-20 µs): see work_directory.
constexpr double slow_file_create_us = 60.0;

void print_summary(const report& r) {
  std::cout << "\n== bench_router results ==\n";
  if (std::max(r.create_us_before, r.create_us_after) > slow_file_create_us)
    std::cout << fmt::format("warning: creating a file where the pools live took {:.0f} µs before the run and {:.0f} µs "
                             "after: files deleted nearby in the last minutes slow every job's files, and the figures "
                             "below with them\n",
                             r.create_us_before, r.create_us_after);
  std::cout << fmt::format("baseline: {:.0f} spawns/s one at a time, {:.0f}/s with {} in flight, one spawn p50 {:.2f} ms\n",
                           r.sequential_rate(), r.parallel_rate(), parallel_spawns, r.spawn_p50_ms());
  std::cout << fmt::format("  CPU ms per spawn, spawner + child: {} before, {} after\n", cpu_text(r.before.cpu_ms_per_spawn),
                           cpu_text(r.after.cpu_ms_per_spawn));
  std::cout << fmt::format("  fork + execve instead of posix_spawn: {:.0f}/s before, {:.0f}/s after\n",
                           r.before.fork_exec_per_second, r.after.fork_exec_per_second);
  std::cout << fmt::format("{:<34} {:>9} {:>11} {:>9} {:>9} {:>6} {:>8} {:>9} {:>9}\n", "burst", "jobs/s", "cbsd runs/s",
                           "÷ beside", "÷ run's", "lost", "invalid", "VmHWM MB", "peak MB");
  double worst_ratio = 1e9;
  std::optional<long> worst_peak_kb;
  std::size_t bad_replies = 0;
  for (const auto& b : r.bursts) {
    const double ratio = b.ratio();
    std::cout << fmt::format("{:<34} {:>9.1f} {:>11.1f} {:>8.0f}% {:>8.0f}% {:>6} {:>8} {:>9} {:>9}\n",
                             fmt::format("max_jobs {}, {}", b.max_jobs, burst_label(b)), b.jobs_per_second(),
                             b.runs_per_second(), 100 * ratio, 100 * b.runs_per_second() / r.rate_at(b.max_jobs),
                             b.replies.lost, b.replies.invalid, megabytes(b.vm_hwm_kb), megabytes(b.peak_rss_kb));
    std::cout << "  CPU ms per job, router + its cbsd runs: " << cpu_text(b.router_cpu_ms_per_job) << "\n";
    if (!b.replies.first_problem.empty()) std::cout << "  first problem: " << b.replies.first_problem << "\n";
    bad_replies += b.replies.lost + b.replies.invalid;
    if (b.journal_elsewhere) continue; // a diagnosis, not the router as deployed
    worst_ratio = std::min(worst_ratio, ratio);
    if (b.peak_rss_kb && (!worst_peak_kb || *b.peak_rss_kb > *worst_peak_kb)) worst_peak_kb = b.peak_rss_kb;
  }
  std::optional<double> latency_over_spawn_ms;
  for (const auto& l : r.latencies) {
    std::cout << fmt::format("latency{}: p50 {:.2f} ms, p99 {:.2f} ms, p50 − spawn p50 {:.2f} ms, cbsd run inside "
                             "the router p50 {:.2f} ms ({} runs, lost {}, invalid {}); router start-up {:.0f} ms\n",
                             l.journal_elsewhere ? " (journal elsewhere)" : "", l.p50_ms, l.p99_ms,
                             l.p50_ms - l.adjacent_spawn_p50_ms, l.run_p50_ms, l.runs, l.replies.lost, l.replies.invalid,
                             l.startup_ms);
    if (!l.replies.first_problem.empty()) std::cout << "  first problem: " << l.replies.first_problem << "\n";
    bad_replies += l.replies.lost + l.replies.invalid;
    if (!l.journal_elsewhere) latency_over_spawn_ms = l.p50_ms - l.adjacent_spawn_p50_ms;
  }
  const auto& w = r.waiting;
  std::cout << fmt::format("{} jobs waiting, max_jobs 1: RSS idle {} MB, with jobs waiting {} MB ({} answered, {} "
                           "still in the tube), peak {} MB\n",
                           w.waiting_jobs, megabytes(w.idle_rss_kb), megabytes(w.rss_kb_with_jobs_waiting),
                           w.answered_at_reading, w.still_in_tube_at_reading, megabytes(w.peak_rss_kb));

  std::cout << "\ntargets (issue 4):\n"
            << fmt::format("  burst ≥ {:.0f}% of the bare spawn rate: worst {:.0f}% -> {}\n", 100 * target_burst_ratio,
                           100 * worst_ratio, verdict(worst_ratio >= target_burst_ratio))
            << fmt::format("  latency p50 within {:.0f} ms of one spawn: {} -> {}\n", target_latency_over_spawn_ms,
                           latency_over_spawn_ms ? fmt::format("{:+.2f} ms", *latency_over_spawn_ms) : "n/a",
                           verdict(latency_over_spawn_ms && *latency_over_spawn_ms <= target_latency_over_spawn_ms))
            << fmt::format("  peak RSS < {:.0f} MB in a burst: {} MB -> {}\n", target_peak_rss_mb, megabytes(worst_peak_kb),
                           verdict(worst_peak_kb && static_cast<double>(*worst_peak_kb) / 1024 < target_peak_rss_mb))
            << fmt::format("  no reply lost or invalid: {} -> {}\n", bad_replies, verdict(bad_replies == 0));
}

// --- command line ---------------------------------------------------------------

const char* usage_text =
    "usage: bench_router [--jobs N] [--latency-runs M] [--waiting-jobs W] [--quick] [--journal-dir DIR]\n"
    "                    [--keep-files]\n"
    "  --jobs N           jobs per burst and spawns per baseline (default 2000)\n"
    "  --latency-runs M   one-at-a-time round trips (default 200)\n"
    "  --waiting-jobs W   jobs left in the tube for the memory reading (default 10000)\n"
    "  --quick            300 jobs, 50 round trips, 2000 waiting (explicit options still win)\n"
    "  --journal-dir DIR  also run with each router's statedir under DIR (e.g. a tmpfs),\n"
    "                     to see what the journal's writes cost\n"
    "  --keep-files       leave the run's directory (pools, job files) in place\n"
    "  --lookups-only     only the baselines and the look-ups' runs (jname jobs, the cbsd\n"
    "                     commands beside CBSD's databases)\n"
    "  --rabbitmq         only the baselines and a burst and one-at-a-time runs on beanstalkd,\n"
    "                     one RabbitMQ node and a 3-node cluster, with each broker's own round trip\n"
    "  --vms N            jname jobs take turns over N VMs (default: each job its own VM)\n"
    "  --stub-cpu-ms N    in the look-ups' runs, each run of the stand-in burns N ms of CPU first,\n"
    "                     as real cbsd's start-up does, and so do the bare spawns beside them (the\n"
    "                     first and last baselines keep the bare stand-in)\n";

std::size_t positive_number(const std::string& option, const char* text) {
  try {
    std::size_t used = 0;
    const unsigned long long n = std::stoull(text, &used);
    if (used == std::strlen(text) && n > 0) return static_cast<std::size_t>(n);
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(option + " wants a positive number, not \"" + text + "\"");
}

settings parse_command_line(int argc, char** argv) {
  settings s;
  bool quick = false;
  std::optional<std::size_t> jobs, latency_runs, waiting_jobs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " wants a value");
      return argv[++i];
    };
    if (arg == "--jobs") {
      jobs = positive_number(arg, value());
    } else if (arg == "--latency-runs") {
      latency_runs = positive_number(arg, value());
    } else if (arg == "--waiting-jobs") {
      waiting_jobs = positive_number(arg, value());
    } else if (arg == "--quick") {
      quick = true;
    } else if (arg == "--journal-dir") {
      s.journal_dir = value();
    } else if (arg == "--keep-files") {
      s.keep_files = true;
    } else if (arg == "--lookups-only") {
      s.lookups_only = true;
    } else if (arg == "--rabbitmq") {
      s.rabbitmq = true;
    } else if (arg == "--vms") {
      s.vms = positive_number(arg, value());
    } else if (arg == "--stub-cpu-ms") {
      s.stub_cpu_ms = positive_number(arg, value());
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage_text;
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown option " + arg);
    }
  }
  if (quick) {
    s.jobs = 300;
    s.latency_runs = 50;
    s.waiting_jobs = 2000;
  }
  if (jobs) s.jobs = *jobs;
  if (latency_runs) s.latency_runs = *latency_runs;
  if (waiting_jobs) s.waiting_jobs = *waiting_jobs;
  return s;
}

void progress(const std::string& what) { std::cerr << "bench_router: " << what << std::endl; }

// --- RabbitMQ beside beanstalkd (--rabbitmq) -------------------------------------

// The same router runs with "broker": "rabbitmq" against one node and a
// three-node cluster (tests/support/rabbitmq_node.hpp), beside beanstalkd in
// the same run. Jobs go on the pool's queue with message ids bench<i>;
// replies come back on <prefix>bench<i>, the quorum queues the router
// declares, as bs_router-client's do.

struct rabbitmq_target {
  std::string label;
  std::vector<std::string> uris;
  std::uint16_t port = 0; // the node the controller side uses
};

// Publish→confirm round trips of persistent messages on a quorum queue: the
// broker's own share of every job and reply.
struct confirm_result {
  std::string label;
  std::size_t runs = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  // queue.declare of a new reply queue (durable quorum, as the router's
  // reply sink and bs_router-client declare one per job); RabbitMQ only.
  std::optional<double> declare_p50_ms;
};

// New reply queues declared per target, for their p50.
constexpr std::size_t reply_queue_declares = 30;

// Runs one coroutine to its end on `io`.
void run_on(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  if (!bs_router::testing::run_coroutine(io, std::move(body), 600s))
    throw std::runtime_error("a RabbitMQ step did not finish within 600 s");
}

bs_router::amqp_settings bench_amqp_settings(const std::string& uri) {
  std::string problem;
  auto parsed = bs_router::parse_amqp_uri(uri, problem);
  if (!parsed) throw std::runtime_error(uri + ": " + problem);
  bs_router::amqp_settings s;
  s.uris = {*parsed};
  s.operation_timeout = 30s;
  s.publish_timeout = 30s;
  s.max_body_bytes = 1 << 20;
  return s;
}

confirm_result measure_confirms(const rabbitmq_target& target, std::size_t runs) {
  asio::io_context io;
  bs_router::amqp_connection conn(io.get_executor(), bench_amqp_settings(target.uris.front()));
  const std::string queue = unique_name("bench_confirm");
  std::vector<double> ms;
  run_on(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_reply_queue(queue);
    for (std::size_t i = 0; i < latency_warmup_runs + runs; ++i) {
      const auto started = steady::now();
      co_await conn.publish(queue, "{}", fmt::format("m{}", i), "");
      if (i >= latency_warmup_runs) ms.push_back(milliseconds_between(started, steady::now()));
    }
    co_await conn.delete_queue(queue);
  });
  std::vector<double> declare_ms;
  run_on(io, [&]() -> asio::awaitable<void> {
    for (std::size_t i = 0; i < reply_queue_declares; ++i) {
      const std::string name = fmt::format("{}.declared{}", queue, i);
      const auto started = steady::now();
      co_await conn.declare_reply_queue(name);
      declare_ms.push_back(milliseconds_between(started, steady::now()));
      co_await conn.delete_queue(name);
    }
  });
  conn.close();
  confirm_result result{target.label, ms.size(), percentile(ms, 0.50), percentile(ms, 0.99), std::nullopt};
  result.declare_p50_ms = percentile(declare_ms, 0.50);
  return result;
}

// beanstalkd's counterpart: put → INSERTED, one at a time.
confirm_result measure_beanstalk_puts(std::size_t runs) {
  beanstalkd_server server;
  test_pool pool(server);
  std::vector<double> ms;
  for (std::size_t i = 0; i < latency_warmup_runs + runs; ++i) {
    const auto started = steady::now();
    pool.client().put(pool.tube(), "{}");
    if (i >= latency_warmup_runs) ms.push_back(milliseconds_between(started, steady::now()));
  }
  return confirm_result{"beanstalkd", ms.size(), percentile(ms, 0.50), percentile(ms, 0.99), std::nullopt};
}

struct rabbitmq_pool {
  std::string queue = unique_name("bench_pool");
  std::string reply_prefix = unique_name("bench_result") + ".";
  std::uint16_t metrics_port = free_loopback_port();
};

void configure_rabbitmq(test_pool& pool, const rabbitmq_pool& p, const rabbitmq_target& target, int max_jobs) {
  pool.write_config({{"cbsd_path", cbsd_stub_path},
                     {"max_jobs", max_jobs},
                     {"metrics_listen", fmt::format("127.0.0.1:{}", p.metrics_port)},
                     {"broker", "rabbitmq"},
                     {"beanstalkd", nullptr},
                     {"rabbitmq",
                      {{"uris", target.uris},
                       {"queue", p.queue},
                       {"reply_queue_prefix", p.reply_prefix},
                       {"reconnect_timeout", 1},
                       {"logdir", pool.logdir().string()}}}});
}

// Starts the router and returns once it consumes the pool's queue.
void start_rabbitmq_router(test_pool& pool, const rabbitmq_pool& p) {
  pool.spawn_router({"-config", pool.config_path().string()});
  const bool serving = wait_until(
      [&] {
        const std::string log = pool.log_text();
        return log.find("queue " + p.queue) != std::string::npos || !pool.router_running();
      },
      60s, broker_poll_interval);
  if (!serving || !pool.router_running())
    throw std::runtime_error("bs_router did not serve " + p.queue + ":\n" + pool.output_text() + pool.log_text());
}

std::optional<std::string> rabbitmq_reply_problem(const std::optional<amqp_test_message>& m, const std::string& id) {
  if (!m) return "no reply";
  if (m->correlation_id != id) return "correlation_id is not " + id;
  json reply = json::parse(m->body, nullptr, false);
  if (!reply.is_object()) return "not a JSON object";
  if (reply.value("JobID", json()) != id) return "JobID is not " + id;
  if (reply.value("ErrCode", json()) != 0) return "ErrCode " + reply.value("ErrCode", json()).dump();
  if (reply.value("Progress", json()) != 100) return "Progress is not 100";
  if (reply.value("Message", json()) != "ok\n") return "Message is not the stand-in's output";
  return std::nullopt;
}

// Takes and checks every job's reply and deletes its queue (the node is the
// run's: hundreds of quorum queues left behind would slow what follows).
reply_tally collect_rabbitmq_replies(amqp_test_client& client, const rabbitmq_pool& p, std::size_t jobs) {
  reply_tally tally;
  for (std::size_t i = 0; i < jobs; ++i) {
    const std::string id = fmt::format("bench{}", i);
    const std::string queue = p.reply_prefix + id;
    std::optional<amqp_test_message> m;
    try {
      if (client.queue_exists(queue)) m = client.get(queue);
    } catch (const std::exception& ex) {
      ++tally.invalid;
      tally.note(ex.what());
      continue;
    }
    if (const auto problem = rabbitmq_reply_problem(m, id)) {
      ++(m ? tally.invalid : tally.lost);
      tally.note(id + ": " + *problem);
    }
    if (m) client.delete_queue(queue);
  }
  return tally;
}

// As run_burst: every job on the queue first, then the router starts; done
// when it has run them all and holds no reply unsent (its metrics).
burst_result run_rabbitmq_burst(const rabbitmq_target& target, std::size_t jobs, int max_jobs) {
  beanstalkd_server unused; // test_pool wants one; the config names RabbitMQ
  test_pool pool(unused);
  pool.keep_directory(); // see work_directory
  const rabbitmq_pool p;
  configure_rabbitmq(pool, p, target, max_jobs);
  amqp_test_client client(target.port);
  client.declare_quorum_queue(p.queue, true);
  for (std::size_t i = 0; i < jobs; ++i) client.publish(p.queue, job_body(i, false), fmt::format("bench{}", i));

  burst_result result;
  result.max_jobs = max_jobs;
  result.jobs = jobs;
  const auto started = steady::now();
  start_rabbitmq_router(pool, p);
  wait_until(
      [&] {
        const auto done = metric_sample(p.metrics_port, "bs_router_job_duration_seconds_count");
        const auto unsent = metric_sample(p.metrics_port, "bs_router_replies_waiting");
        return done && unsent && *done >= static_cast<double>(jobs) && *unsent == 0;
      },
      60s + jobs * 200ms, broker_poll_interval);
  result.seconds = seconds_between(started, steady::now());
  result.vm_hwm_kb = proc_status_kb(pool.router_pid(), "VmHWM");
  if (const auto cpu = proc_cpu(pool.router_pid()))
    result.router_cpu_ms_per_job =
        cpu_split{cpu->own_ms / static_cast<double>(jobs), cpu->children_ms / static_cast<double>(jobs)};
  result.peak_rss_kb = stop_router_and_read_peak_kb(pool);
  result.replies = collect_rabbitmq_replies(client, p, jobs);
  client.delete_queue(p.queue);
  return result;
}

// As run_latency: one job at a time, from just before the publish to the
// delivery of its reply, the reply queue declared and consumed first (as
// bs_router-client does).
latency_result run_rabbitmq_latency(const rabbitmq_target& target, std::size_t runs) {
  beanstalkd_server unused;
  test_pool pool(unused);
  pool.keep_directory();
  const rabbitmq_pool p;
  configure_rabbitmq(pool, p, target, 1);
  latency_result result;
  const auto starting = steady::now();
  start_rabbitmq_router(pool, p);
  result.startup_ms = milliseconds_between(starting, steady::now());

  asio::io_context io;
  bs_router::amqp_connection conn(io.get_executor(), bench_amqp_settings(target.uris.front()));
  std::vector<double> latencies_ms, run_ms;
  run_on(io, [&]() -> asio::awaitable<void> {
    co_await conn.open();
    co_await conn.declare_job_queue(p.queue);
    for (std::size_t i = 0; i < latency_warmup_runs + runs; ++i) {
      const std::string id = fmt::format("bench{}", i);
      co_await conn.declare_reply_queue(p.reply_prefix + id);
      co_await conn.consume(p.reply_prefix + id);
      const auto put_at = steady::now();
      co_await conn.publish(p.queue, job_body(i, false), id, id);
      auto d = co_await conn.next(std::chrono::duration_cast<std::chrono::milliseconds>(reply_wait_limit));
      const auto replied_at = steady::now();
      if (!d) {
        ++result.replies.lost;
        result.replies.note(id + ": no reply within " + std::to_string(reply_wait_limit.count()) + " s");
        continue;
      }
      co_await conn.ack(d->delivery_tag);
      amqp_test_message m;
      m.body = d->body;
      m.correlation_id = d->correlation_id;
      if (const auto problem = rabbitmq_reply_problem(m, id)) {
        ++result.replies.invalid;
        result.replies.note(id + ": " + *problem);
      }
      if (i < latency_warmup_runs) continue;
      latencies_ms.push_back(milliseconds_between(put_at, replied_at));
      run_ms.push_back(json::parse(d->body, nullptr, false).value("Duration", 0.0) * 1000);
    }
  });
  conn.close();
  result.runs = latencies_ms.size();
  result.p50_ms = percentile(latencies_ms, 0.50);
  result.p99_ms = percentile(latencies_ms, 0.99);
  result.run_p50_ms = percentile(run_ms, 0.50);
  stop_router_and_read_peak_kb(pool);
  amqp_test_client client(target.port);
  for (std::size_t i = 0; i < latency_warmup_runs + runs; ++i) client.delete_queue(p.reply_prefix + fmt::format("bench{}", i));
  client.delete_queue(p.queue);
  return result;
}

struct broker_runs {
  std::string label;
  burst_result burst;
  latency_result latency;
  confirm_result confirm;
};

struct rabbitmq_report {
  baseline_result before, after;
  std::vector<broker_runs> brokers; // beanstalkd, one node, three nodes
  std::string load_before, load_after;
  double form_seconds = 0;
  double sequential_rate() const { return (before.sequential_per_second + after.sequential_per_second) / 2; }
  double parallel_rate() const { return (before.parallel_per_second + after.parallel_per_second) / 2; }
};

void print_rabbitmq_report(const rabbitmq_report& r, const settings& options) {
  std::cout << "\n#### Machine\n\n" << machine_description()
            << fmt::format("- load average (1, 5, 15 min): {} before, {} after\n", r.load_before, r.load_after)
            << fmt::format("- the 3-node cluster took {:.0f} s to form\n\n", r.form_seconds);
  std::cout << "#### Baseline: the stand-in spawned directly (posix_spawn + waitpid)\n\n"
            << "| | before | after | used for ratios |\n|---|---|---|---|\n"
            << fmt::format("| spawns/s, one at a time | {:.0f} | {:.0f} | {:.0f} |\n", r.before.sequential_per_second,
                           r.after.sequential_per_second, r.sequential_rate())
            << fmt::format("| spawns/s, {} in flight | {:.0f} | {:.0f} | {:.0f} |\n\n", parallel_spawns,
                           r.before.parallel_per_second, r.after.parallel_per_second, r.parallel_rate());
  std::cout << fmt::format("#### Burst: {} jobs (no jname) in the broker, then the router starts, max_jobs {}\n\n",
                           options.jobs, rabbitmq_bench_max_jobs)
            << "| broker | jobs/s | bare spawns/s beside, before / after | ÷ that (the ratio) | ÷ the run's spawn rate "
               "| ÷ beanstalkd's jobs/s | CPU ms per job, router + children | lost | invalid | peak RSS MB |\n"
            << "|---|---|---|---|---|---|---|---|---|---|\n";
  const double beanstalk_rate = r.brokers.empty() ? 0 : r.brokers.front().burst.jobs_per_second();
  for (const auto& b : r.brokers)
    std::cout << fmt::format("| {} | {:.1f} | {:.0f} / {:.0f} | **{:.0f}%** | {:.0f}% | {:.0f}% | {} | {} | {} | {} |\n",
                             b.label, b.burst.jobs_per_second(), b.burst.adjacent_rate_before,
                             b.burst.adjacent_rate_after, 100 * b.burst.ratio(),
                             100 * b.burst.jobs_per_second() / r.parallel_rate(),
                             100 * b.burst.jobs_per_second() / beanstalk_rate, cpu_text(b.burst.router_cpu_ms_per_job),
                             b.burst.replies.lost, b.burst.replies.invalid, megabytes(b.burst.peak_rss_kb));
  std::cout << fmt::format("\n#### One job at a time, {} runs after {} warm-up runs; the broker's own round trip\n\n",
                           options.latency_runs, latency_warmup_runs)
            << "| broker | put-to-reply p50 ms | p99 ms | one bare spawn p50 just before, ms | p50 − that, ms "
               "| reply Duration p50 ms | publish→confirm (beanstalkd: put→INSERTED) p50 / p99 ms "
               "| declaring a new reply queue p50 ms | lost | invalid |\n"
            << "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& b : r.brokers)
    std::cout << fmt::format("| {} | {:.2f} | {:.2f} | {:.2f} | **{:.2f}** | {:.2f} | {:.2f} / {:.2f} | {} | {} | {} |\n",
                             b.label, b.latency.p50_ms, b.latency.p99_ms, b.latency.adjacent_spawn_p50_ms,
                             b.latency.p50_ms - b.latency.adjacent_spawn_p50_ms, b.latency.run_p50_ms,
                             b.confirm.p50_ms, b.confirm.p99_ms,
                             b.confirm.declare_p50_ms ? fmt::format("{:.2f}", *b.confirm.declare_p50_ms) : "none",
                             b.latency.replies.lost, b.latency.replies.invalid);
  for (const auto& b : r.brokers) {
    if (!b.burst.replies.first_problem.empty())
      std::cout << "\n" << b.label << ", burst, first problem: " << b.burst.replies.first_problem << "\n";
    if (!b.latency.replies.first_problem.empty())
      std::cout << "\n" << b.label << ", one at a time, first problem: " << b.latency.replies.first_problem << "\n";
  }
}

broker_runs measure_broker(const std::string& label, const settings& options,
                           const std::function<burst_result()>& burst,
                           const std::function<latency_result()>& latency,
                           const std::function<confirm_result()>& confirm) {
  broker_runs runs;
  runs.label = label;
  progress(fmt::format("{}: burst of {} jobs, max_jobs {}", label, options.jobs, rabbitmq_bench_max_jobs));
  const double rate_before = adjacent_spawn_rate(rabbitmq_bench_max_jobs, options.jobs);
  runs.burst = burst();
  runs.burst.adjacent_rate_before = rate_before;
  runs.burst.adjacent_rate_after = adjacent_spawn_rate(rabbitmq_bench_max_jobs, options.jobs);
  progress(fmt::format("{}: {} round trips", label, options.latency_runs));
  std::vector<double> spawn_ms;
  measure_sequential(stub_spawner(), options.jobs, &spawn_ms);
  runs.latency = latency();
  runs.latency.adjacent_spawn_p50_ms = percentile(spawn_ms, 0.50);
  runs.confirm = confirm();
  return runs;
}

int run_rabbitmq_bench(const settings& options) {
  rabbitmq_report r;
  r.load_before = load_average();
  progress(fmt::format("baseline: {} spawns of {}", options.jobs, cbsd_stub_path));
  r.before = measure_baseline(options.jobs);
  const std::size_t confirms = std::max<std::size_t>(options.latency_runs, 200);

  r.brokers.push_back(measure_broker(
      "beanstalkd", options, [&] { return run_burst(options.jobs, rabbitmq_bench_max_jobs, false, ""); },
      [&] { return run_latency(options.latency_runs, ""); }, [&] { return measure_beanstalk_puts(confirms); }));
  {
    progress("RabbitMQ: one node");
    rabbitmq_node node;
    const rabbitmq_target target{"RabbitMQ, one node", {node.uri()}, node.amqp_port()};
    r.brokers.push_back(measure_broker(
        target.label, options, [&] { return run_rabbitmq_burst(target, options.jobs, rabbitmq_bench_max_jobs); },
        [&] { return run_rabbitmq_latency(target, options.latency_runs); },
        [&] { return measure_confirms(target, confirms); }));
  }
  {
    progress("RabbitMQ: a 3-node cluster");
    rabbitmq_cluster cluster;
    r.form_seconds = cluster.form_seconds();
    const rabbitmq_target target{"RabbitMQ, 3 nodes", cluster.uris(), cluster.node(0).amqp_port()};
    r.brokers.push_back(measure_broker(
        target.label, options, [&] { return run_rabbitmq_burst(target, options.jobs, rabbitmq_bench_max_jobs); },
        [&] { return run_rabbitmq_latency(target, options.latency_runs); },
        [&] { return measure_confirms(target, confirms); }));
  }
  progress("baseline again");
  r.after = measure_baseline(options.jobs);
  r.load_after = load_average();
  print_rabbitmq_report(r, options);
  return 0;
}

} // namespace

// Every pool of the run lives in one directory under TMPDIR, removed when the
// run is over (unless kept). Removing each pool's thousands of job files right
// after its measurement would slow the next one: ext4 without a journal skips
// inodes freed in the last minutes when it allocates new ones, so every file
// the next router creates would pay for the last one's clean-up. The same
// goes for a run started right after another one's clean-up.
class work_directory {
 public:
  explicit work_directory(bool keep) : keep_(keep) {
    std::string templ = (std::filesystem::temp_directory_path() / "bs_router_bench.XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr)
      throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
    path_ = templ;
    ::setenv("TMPDIR", path_.c_str(), 1); // test_pool creates its pools there
  }
  ~work_directory() {
    if (keep_) {
      std::cerr << "bench_router: the run's files are kept in " << path_ << "\n";
      return;
    }
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  work_directory(const work_directory&) = delete;
  work_directory& operator=(const work_directory&) = delete;

 private:
  bool keep_;
  std::string path_;
};

int main(int argc, char** argv) {
  settings options;
  try {
    options = parse_command_line(argc, argv);
    jname_vms = options.vms;
    stub_cpu_ms = options.stub_cpu_ms;
  } catch (const std::exception& ex) {
    std::cerr << "bench_router: " << ex.what() << "\n" << usage_text;
    return 2;
  }
  if (!beanstalkd_server::available()) {
    std::cerr << "bench_router: " << beanstalkd_server::executable << " not found\n";
    return 1;
  }

  const work_directory work(options.keep_files);
  if (options.rabbitmq) {
    try {
      return run_rabbitmq_bench(options);
    } catch (const std::exception& ex) {
      std::cerr << "bench_router: " << ex.what() << "\n";
      return 1;
    }
  }
  try {
    report r;
    r.options = options;
    r.load_before = load_average();
    constexpr std::size_t probe_files = 300;
    r.create_us_before = file_create_us(std::filesystem::path(work.path()) / "create-probe-before", probe_files);
    if (options.stub_cpu_ms > 0) {
      const auto dir = std::filesystem::path(work.path()) / "stub-cpu";
      std::filesystem::create_directory(dir);
      std::ofstream(dir / "cbsd_stub.cpu_ms") << options.stub_cpu_ms;
      lookup_baseline_dir = dir.string();
    }

    progress(fmt::format("baseline: {} spawns of {}", options.jobs, cbsd_stub_path));
    r.before = measure_baseline(options.jobs);

    std::vector<std::string> journal_dirs{""};
    if (!options.journal_dir.empty()) journal_dirs.push_back(options.journal_dir);
    if (options.lookups_only) journal_dirs.clear();
    for (const auto& journal_dir : journal_dirs) {
      for (const bool with_jname : {false, true}) {
        // The jname bursts show the look-ups' cost; with the journal
        // elsewhere only the plain ones are needed to see the journal's.
        if (with_jname && !journal_dir.empty()) continue;
        for (const int max_jobs : router_max_jobs) {
          progress(fmt::format("burst: {} jobs, max_jobs {}, {}{}", options.jobs, max_jobs,
                               with_jname ? "jname" : "no jname",
                               journal_dir.empty() ? "" : ", journal in " + journal_dir));
          const double rate_before = adjacent_spawn_rate(max_jobs, options.jobs);
          burst_result burst = run_burst(options.jobs, max_jobs, with_jname, journal_dir);
          burst.adjacent_rate_before = rate_before;
          burst.adjacent_rate_after = adjacent_spawn_rate(max_jobs, options.jobs);
          r.bursts.push_back(std::move(burst));
        }
      }
      progress(fmt::format("latency: {} round trips{}", options.latency_runs,
                           journal_dir.empty() ? "" : ", journal in " + journal_dir));
      std::vector<double> spawn_ms;
      measure_sequential(stub_spawner(), options.jobs, &spawn_ms);
      latency_result latency = run_latency(options.latency_runs, journal_dir);
      latency.adjacent_spawn_p50_ms = percentile(spawn_ms, 0.50);
      r.latencies.push_back(std::move(latency));
    }
    if (!options.lookups_only) {
      progress(fmt::format("memory with {} jobs waiting", options.waiting_jobs));
      r.waiting = run_waiting(options.waiting_jobs);
    }

    for (const int max_jobs : lookup_max_jobs) {
      // "": jobs without jname, the router's rate with one run per job and no look-up.
      for (const char* way : {"", "cbsd", "database"}) {
        const bool with_jname = *way != '\0';
        progress(fmt::format("look-ups: {} {} jobs, max_jobs {}, lookups {}", options.jobs,
                             with_jname ? "jname" : "no-jname", max_jobs, with_jname ? way : "none"));
        const double rate_before = adjacent_spawn_rate(max_jobs, options.jobs, lookup_baseline_dir);
        burst_result burst = run_burst(options.jobs, max_jobs, with_jname, "", std::string(way));
        burst.adjacent_rate_before = rate_before;
        burst.adjacent_rate_after = adjacent_spawn_rate(max_jobs, options.jobs, lookup_baseline_dir);
        r.lookup_bursts.push_back(std::move(burst));
      }
    }
    for (const char* way : {"cbsd", "database"}) {
      progress(fmt::format("look-ups: {} jname round trips, lookups {}", options.latency_runs, way));
      std::vector<double> spawn_ms;
      measure_sequential(stub_spawner(lookup_baseline_dir), options.jobs, &spawn_ms);
      latency_result latency = run_latency(options.latency_runs, "", std::string(way));
      latency.adjacent_spawn_p50_ms = percentile(spawn_ms, 0.50);
      r.lookup_latencies.push_back(std::move(latency));
    }

    progress("baseline again");
    r.after = measure_baseline(options.jobs);
    r.load_after = load_average();
    r.create_us_after = file_create_us(std::filesystem::path(work.path()) / "create-probe-after", probe_files);

    print_summary(r);
    print_lookups_summary(r);
    print_markdown(r);
    print_lookups_markdown(r);
  } catch (const std::exception& ex) {
    std::cerr << "bench_router: " << ex.what() << "\n";
    return 1;
  }
  return 0;
}
