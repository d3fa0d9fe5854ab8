#pragma once
// A real beanstalkd for one test, on 127.0.0.1 and a port nobody else holds.
// Tests drive the broker's failures through it: kill (crash), stop (clean
// exit), restart on the same port and binlog (broker comes back), and
// suspend/resume (a broker that goes silent with its connections open).

#include <cstddef>
#include <cstdint>
#include <string>
#include <sys/types.h>

namespace bs_router::testing {

class beanstalkd_server {
 public:
  struct options {
    std::string binlog_dir;       // non-empty: -b DIR, so jobs survive a restart
    std::size_t max_job_size = 0; // non-zero: -z N
    // Its clock tells whole seconds (support/coarse_clock.cpp): it then keeps
    // a job reserved past its TTR for a connection that stays silent.
    bool coarse_clock = false;
  };

  // Found by CMake (/usr/bin on Debian, /usr/local/bin on FreeBSD).
  static constexpr const char* executable = BEANSTALKD_PATH;
  static bool available();

  // Starts the server and returns once it accepts connections; throws
  // std::runtime_error when it cannot be started.
  beanstalkd_server();
  explicit beanstalkd_server(options opts);
  ~beanstalkd_server(); // kills it
  beanstalkd_server(const beanstalkd_server&) = delete;
  beanstalkd_server& operator=(const beanstalkd_server&) = delete;

  std::string host() const { return "127.0.0.1"; }
  std::uint16_t port() const { return port_; }
  std::string uri() const; // "127.0.0.1:PORT"
  pid_t pid() const { return pid_; } // -1 while not running
  bool running() const { return pid_ > 0; }
  const options& settings() const { return options_; }

  void kill();    // SIGKILL + waitpid: a crash
  void stop();    // SIGTERM + waitpid: a clean shutdown
  void restart(); // starts again on the same port and binlog dir (kills it first if running)
  void suspend(); // SIGSTOP: connections stay open, nothing answers
  void resume();  // SIGCONT

 private:
  bool try_start_on(std::uint16_t port);
  void reap(int signal_number);

  options options_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool suspended_ = false;
};

} // namespace bs_router::testing
