#pragma once
// A throw-away CBSD pool for one test: a directory with nc.inventory, a router
// config pointing at a test beanstalkd and at the fake cbsd, and the router
// process itself. The fake cbsd runs with this directory as its working
// directory, so its records and rules live here too.

#include "support/beanstalk_test_client.hpp"
#include "support/beanstalkd_server.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace bs_router::testing {

// --- processes started by tests (fork/exec, never a shell) -------------------

struct spawn_options {
  std::string cwd;                               // empty: the test's own
  std::optional<std::vector<std::string>> env;   // "NAME=value"; nullopt: the test's own
  int stdout_fd = -1;                            // -1: the test's own
  int stderr_fd = -1;                            // -1: the test's own
  std::string output_path; // non-empty: stdout and stderr appended to this file
};

// Starts argv[0] (a path; no PATH search) with stdin from /dev/null. On Linux
// the child is killed if the test process dies, so nothing outlives a crashed
// test. Throws std::runtime_error when exec fails.
pid_t spawn_process(const std::vector<std::string>& argv, const spawn_options& options = {});

// The raw waitpid status once `pid` has ended, nullopt if it is still running
// after `limit`.
std::optional<int> wait_for_exit(pid_t pid, std::chrono::milliseconds limit);

// A shell-style exit status: the exit code, or 128 + the signal that ended it.
int exit_status_of(int wait_status);

// Runs bs_router-client with `args`, captures its output and returns its exit
// status; a client still running after 60 s is killed (status 128 + 9).
int run_client(const std::vector<std::string>& args, std::string* out = nullptr,
               std::string* err = nullptr);

// Runs `argv` with `options`, captures stdout and stderr, returns the exit
// status; killed after `limit`.
int run_captured(const std::vector<std::string>& argv, const spawn_options& options,
                 std::string* out, std::string* err,
                 std::chrono::milliseconds limit = std::chrono::seconds{60});

// What the fake cbsd prints for fake_stdout_bytes=N.
std::string fake_stdout_bytes_text(std::size_t n);

// --- the pool -----------------------------------------------------------------

// The RabbitMQ nodes a pool's router uses ("broker": "rabbitmq"), tried in
// turn; the pool's tube is then its queue.
struct rabbitmq_target {
  std::vector<std::string> uris;
};

class test_pool {
 public:
  // `extra` is merged into the generated config (RFC 7386 merge patch: nested
  // objects merge, null removes a key).
  explicit test_pool(const beanstalkd_server& server,
                     const nlohmann::json& extra = nlohmann::json::object());
  // A pool on RabbitMQ: the config's "rabbitmq" section names `target`'s
  // nodes, the queue tube() and the reply queue prefix reply_tube_prefix().
  // The beanstalkd helpers (client(), put_job, wait_reply) are not for it.
  explicit test_pool(const rabbitmq_target& target,
                     const nlohmann::json& extra = nlohmann::json::object());
  // Kills a router still running, then removes the directory, unless the test
  // failed: then the directory is kept and its path printed.
  ~test_pool();
  test_pool(const test_pool&) = delete;
  test_pool& operator=(const test_pool&) = delete;

  // Leaves the directory in place when the pool goes (its owner removes it).
  void keep_directory() { keep_directory_ = true; }

  const std::filesystem::path& dir() const { return dir_; }
  std::string name() const { return dir_.filename().string(); }
  const std::string& tube() const { return tube_; }
  std::string reply_tube_prefix() const { return tube_ + "_result_id"; }
  std::string reply_tube(std::uint64_t job_id) const;
  std::filesystem::path config_path() const { return dir_ / "router.json"; }
  std::filesystem::path log_path() const { return dir_ / "router.log"; }
  std::filesystem::path output_path() const { return dir_ / "router.out"; }
  std::filesystem::path logdir() const { return dir_ / "logdir"; }
  std::filesystem::path statedir() const { return dir_ / "state"; }
  std::filesystem::path records_path() const { return dir_ / "fake_cbsd.records"; }
  std::filesystem::path rules_path() const { return dir_ / "fake_cbsd.rules.json"; }

  // The config as written; write_config() rewrites it with a new `extra`
  // (merged into the defaults, not into the previous extra).
  const nlohmann::json& config() const { return config_; }
  void write_config(const nlohmann::json& extra);

  // Starts bs_router -config <file> <extra_args...> (output to router.out) and
  // returns once its log says "watching tube <tube>" (RabbitMQ: "connected
  // to rabbitmq ... queue <queue>", the config's queue); throws if the router
  // exits or does not get there within `limit`.
  pid_t start_router(const std::vector<std::string>& extra_args = {},
                     std::chrono::milliseconds limit = std::chrono::seconds{30});
  // Starts it without waiting for anything: for routers expected to refuse
  // to start. The arguments are exactly `args` (no -config added).
  pid_t spawn_router(const std::vector<std::string>& args);
  // The router's raw waitpid status once it exited, nullopt if still running.
  std::optional<int> wait_router_exit(std::chrono::milliseconds limit = std::chrono::seconds{30});
  // SIGTERM and wait; returns the exit status (128 + signal if killed). A
  // router that ignores SIGTERM for 60 s is killed and the test fails.
  int stop_router();
  void kill_router(); // SIGKILL and wait
  bool router_running();
  pid_t router_pid() const { return router_pid_; }
  // The last router's raw waitpid status, once it has been reaped.
  std::optional<int> router_wait_status() const { return router_status_; }

  // Every record the fake cbsd wrote, in order.
  std::vector<nlohmann::json> records() const;
  // The "start" records whose argv[1] is `command`.
  std::vector<nlohmann::json> runs_of(const std::string& command) const;
  // Replaces the fake cbsd's rules file (see tests/fake_cbsd.cpp).
  void write_rules(const nlohmann::json& rules) const;

  std::string log_text() const;    // router.log
  std::string output_text() const; // router.out

  // A client connected to the pool's beanstalkd (connecting on first use),
  // for the test's own use.
  beanstalk_test_client& client();
  // Puts a job on the pool's tube. A string is sent as-is; JSON is dumped, and
  // a body written in place ({{"Command", ...}, {"CommandArgs", {...}}}) keeps
  // its keys in the order written, since that is the order of cbsd's argv (an
  // nlohmann::json passed in has sorted its keys already).
  std::uint64_t put_job(const nlohmann::ordered_json& body, unsigned priority = 0,
                        unsigned delay_seconds = 0, unsigned ttr_seconds = 60);
  // A template only so that an nlohmann::json (which converts to anything,
  // std::string included) takes the JSON overload above.
  template <std::same_as<std::string> String>
  std::uint64_t put_job(const String& body, unsigned priority = 0, unsigned delay_seconds = 0,
                        unsigned ttr_seconds = 60) {
    return put_raw_job(body, priority, delay_seconds, ttr_seconds);
  }
  std::uint64_t put_job(const char* body, unsigned priority = 0, unsigned delay_seconds = 0,
                        unsigned ttr_seconds = 60);
  std::uint64_t put_raw_job(std::string_view body, unsigned priority = 0,
                            unsigned delay_seconds = 0, unsigned ttr_seconds = 60);
  // wait_reply / wait_final_reply on this pool's reply tube for `job_id`.
  std::optional<nlohmann::json> wait_reply(std::uint64_t job_id,
                                           std::chrono::seconds timeout = std::chrono::seconds{30});
  std::vector<nlohmann::json> wait_final_reply(
      std::uint64_t job_id, std::chrono::seconds timeout = std::chrono::seconds{30});

 private:
  void reap_router(int wait_status);

  void make_directory();
  bool serving_line(const std::string& text, std::size_t offset) const;
  const beanstalkd_server& beanstalk() const;

  const beanstalkd_server* server_ = nullptr;
  std::optional<rabbitmq_target> rabbitmq_;
  std::filesystem::path dir_;
  bool keep_directory_ = false;
  std::string tube_;
  nlohmann::json config_;
  beanstalk_test_client client_;
  pid_t router_pid_ = -1;
  std::optional<int> router_status_;
};

} // namespace bs_router::testing
