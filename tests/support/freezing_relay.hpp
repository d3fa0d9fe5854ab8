#pragma once
// A loopback TCP relay in front of a server, for network partitions: each
// connection accepted on its port is relayed to the server on a connection
// of its own. freeze() stops every connection open at that moment dead:
// nothing passes either way, and neither side learns that the other closed
// (as behind a firewall that lost the connection's state). Connections made
// later pass as usual. thaw() lets the frozen ones move again, closes
// included.

#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bs_router::testing {

class freezing_relay {
 public:
  // Relays to host:port. Throws std::runtime_error when it cannot listen.
  freezing_relay(std::string host, std::uint16_t port);
  ~freezing_relay();
  freezing_relay(const freezing_relay&) = delete;
  freezing_relay& operator=(const freezing_relay&) = delete;

  std::uint16_t port() const { return port_; }
  std::string uri() const { return "127.0.0.1:" + std::to_string(port_); }

  // Once it returns, no byte of a frozen connection moves any more.
  void freeze();
  void thaw();
  // Connection pairs open now, frozen or not.
  std::size_t connections();

 private:
  struct pair {
    int client = -1;
    int server = -1;
    bool frozen = false;
  };
  void run();
  void wake();
  void close_pair(pair& p);

  std::string host_;
  std::uint16_t target_port_;
  std::uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::mutex mutex_;
  std::vector<pair> pairs_; // guarded by mutex_
  bool stopping_ = false;   // guarded by mutex_
  std::thread thread_;
};

} // namespace bs_router::testing
