#pragma once
// A stand-in for beanstalkd on a free loopback port, for tests of how the
// router copes with a broker that misbehaves in ways a real one does not:
// it answers every reserve at once, and can add lines nobody asked for. It
// answers each command by its first word, hands out at most one job (id 1),
// and records every command it receives, with its connection and the time.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bs_router::testing {

class scripted_broker {
 public:
  struct options {
    std::string job_body;              // non-empty: the first reserve gets this job, id 1
    std::size_t unrequested_lines = 0; // "TIMED_OUT" lines sent after each answer to a reserve
    // The bury of the job is answered NOT_FOUND, and the job is ready in
    // stats-job from then on: its TTR ran out before the bury came.
    bool bury_not_found = false;
  };
  struct command {
    std::size_t connection = 0; // 1 for the first connection accepted, and so on
    std::string word;           // its first word ("reserve-with-timeout", "put", ...)
    std::chrono::steady_clock::time_point at;
  };

  explicit scripted_broker(options opts);
  ~scripted_broker();
  scripted_broker(const scripted_broker&) = delete;
  scripted_broker& operator=(const scripted_broker&) = delete;

  std::string uri() const { return "127.0.0.1:" + std::to_string(port_); }
  // Every command received so far, in order.
  std::vector<command> commands() const;
  std::size_t count(const std::string& word) const;
  // Connections accepted, and those the peer has closed.
  std::size_t connections() const;
  std::size_t closed_by_peer() const;

 private:
  struct client;
  void serve();
  void answer(client& c, const std::string& line);

  options options_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  bool job_handed_out_ = false;
  bool job_given_back_ = false; // bury_not_found: the bury came, the job is ready
  std::chrono::steady_clock::time_point handed_out_at_;
  mutable std::mutex mutex_;
  std::vector<command> commands_;
  std::size_t connections_ = 0;
  std::size_t closed_by_peer_ = 0;
  std::thread thread_;
};

} // namespace bs_router::testing
