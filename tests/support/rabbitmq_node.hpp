#pragma once
// Real RabbitMQ nodes for tests, on 127.0.0.1 and ports nobody else holds.
//
// A node boots in 8-25 s and holds about 140 MiB, so a test run shares one:
// shared_rabbitmq_node() starts it on first use and stops it at exit, and
// each test uses queue names of its own (unique_name()). A cluster of three
// is for the tests of failover; keep at most one up at a time.
//
// Everything of a node lives in one temporary directory: its config, its
// database, its logs, and the HOME whose .erlang.cookie (mode 0400) is the
// cluster's cookie. Erlang's port mapper is a private epmd started here, so
// its pid is known and nothing of the test outlives it. Stopping is kill -9
// of the VM and of epmd, reaped here, then the directory goes: a test broker
// has nothing to save.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace bs_router::testing {

// A private Erlang port mapper on 127.0.0.1.
class epmd_daemon {
 public:
  epmd_daemon(); // throws std::runtime_error
  ~epmd_daemon();
  epmd_daemon(const epmd_daemon&) = delete;
  epmd_daemon& operator=(const epmd_daemon&) = delete;
  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }

 private:
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

class rabbitmq_node {
 public:
  // Found by CMake (Debian: /usr/lib/rabbitmq/bin/rabbitmq-server).
  static constexpr const char* executable = RABBITMQ_SERVER_PATH;

  struct options {
    std::string name;                // node name ("n1@localhost"); empty: made up
    std::filesystem::path dir;       // empty: a new temporary directory, removed with the node
    std::uint16_t epmd_port = 0;     // 0: a private epmd of its own
    std::string cookie;              // empty: made up
    std::vector<std::string> peers;  // classic_config peer discovery (all nodes, itself included)
    std::string extra_conf;          // lines appended to rabbitmq.conf
    bool start = true;               // false: the caller calls start() (a cluster boots in steps)
  };

  rabbitmq_node(); // a standalone node, started
  explicit rabbitmq_node(options opts);
  ~rabbitmq_node(); // kill()s it and removes its directory (if it made it)
  rabbitmq_node(const rabbitmq_node&) = delete;
  rabbitmq_node& operator=(const rabbitmq_node&) = delete;

  // Boots the VM and returns once the AMQP port completes a handshake;
  // throws std::runtime_error when the VM exits or is not ready in time.
  void start();
  // Boots it without waiting; ready() waits.
  void launch();
  void wait_ready();
  void kill();    // SIGKILL + waitpid: a crash
  void restart(); // kill() and start() again on the same ports and database
  void suspend(); // SIGSTOP: connections stay open, nothing answers
  void resume();  // SIGCONT

  const std::string& name() const { return options_.name; }
  std::uint16_t amqp_port() const { return amqp_port_; }
  std::uint16_t dist_port() const { return dist_port_; }
  // "amqp://guest:guest@127.0.0.1:PORT/" (guest may log in over loopback).
  std::string uri() const;
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  const std::filesystem::path& dir() const { return options_.dir; }
  // Seconds the last start took until ready.
  double last_boot_seconds() const { return last_boot_seconds_; }

 private:
  std::vector<std::string> environment() const;
  void write_files() const;

  options options_;
  bool own_dir_ = false;
  std::unique_ptr<epmd_daemon> epmd_;
  std::uint16_t amqp_port_ = 0;
  std::uint16_t dist_port_ = 0;
  pid_t pid_ = -1;
  std::chrono::steady_clock::time_point launched_at_{};
  double last_boot_seconds_ = 0;
};

// Three nodes on one machine, one epmd and one cookie; the first boots
// alone, the other two join it in parallel (classic_config discovery).
class rabbitmq_cluster {
 public:
  rabbitmq_cluster(); // throws std::runtime_error
  ~rabbitmq_cluster();
  rabbitmq_cluster(const rabbitmq_cluster&) = delete;
  rabbitmq_cluster& operator=(const rabbitmq_cluster&) = delete;

  rabbitmq_node& node(std::size_t i) { return *nodes_.at(i); }
  std::size_t size() const { return nodes_.size(); }
  std::vector<std::string> uris() const;
  double form_seconds() const { return form_seconds_; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<epmd_daemon> epmd_;
  std::vector<std::unique_ptr<rabbitmq_node>> nodes_;
  double form_seconds_ = 0;
};

// The test run's node: started on first use, killed at exit.
rabbitmq_node& shared_rabbitmq_node();

// A queue name no other test of this run uses ("<prefix>.<pid>.<n>").
std::string unique_name(const std::string& prefix);

// True once 127.0.0.1:`port` answers the AMQP 0-9-1 protocol header with
// connection.start (within `limit` for the exchange).
bool amqp_handshakes(std::uint16_t port, std::chrono::milliseconds limit = std::chrono::seconds{2});

} // namespace bs_router::testing
