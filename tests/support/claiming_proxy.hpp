#pragma once
// A TCP proxy in front of a real beanstalkd that changes one thing: the
// max-job-size its `stats` answer claims. Everything else passes byte for
// byte. For tests of what the router makes of a broker's claims (a broker
// may say anything: 2^64-1, -1).

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bs_router::testing {

class claiming_proxy {
 public:
  // Listens on a free loopback port; throws std::runtime_error if it cannot.
  claiming_proxy(std::uint16_t target_port, std::string claimed_max_job_size);
  ~claiming_proxy(); // closes every connection and joins its threads
  claiming_proxy(const claiming_proxy&) = delete;
  claiming_proxy& operator=(const claiming_proxy&) = delete;

  std::uint16_t port() const { return port_; }
  std::string uri() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  void accept_loop();
  void serve(int client);

  std::uint16_t target_port_;
  std::string claim_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<std::thread> connections_;
  std::thread acceptor_;
};

} // namespace bs_router::testing
