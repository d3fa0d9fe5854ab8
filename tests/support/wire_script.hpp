#pragma once
// A peer on a free loopback port that plays a script of exact bytes, for
// tests of the beanstalk client alone: it waits for the bytes the client
// must send, answers with canned bytes, or hangs up, step by step. Whatever
// it received is kept, so a test can compare every byte the client wrote.
// One connection; the script runs on a thread of its own.

#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bs_router::testing {

class wire_script {
 public:
  struct step {
    enum class kind { expect, send, hang_up } what;
    std::string bytes; // expect: what must come next; send: what goes out
  };
  static step expect(std::string bytes) { return {step::kind::expect, std::move(bytes)}; }
  static step send(std::string bytes) { return {step::kind::send, std::move(bytes)}; }
  static step hang_up() { return {step::kind::hang_up, {}}; }

  explicit wire_script(std::vector<step> steps);
  ~wire_script();
  wire_script(const wire_script&) = delete;
  wire_script& operator=(const wire_script&) = delete;

  std::uint16_t port() const { return port_; }
  // Every byte received so far, the script's expected bytes and any after.
  std::string received() const;
  // "" while the script is followed; else what went wrong first (bytes that
  // differ from an expect step, or the peer closing before them).
  std::string mismatch() const;

 private:
  void play();
  // Reads into `buffer` until it holds `n` bytes; false on close or stop.
  bool read_at_least(int fd, std::string& buffer, std::size_t n);

  std::vector<step> steps_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  mutable std::mutex mutex_;
  std::string received_;
  std::string mismatch_;
  std::thread thread_;
};

} // namespace bs_router::testing
