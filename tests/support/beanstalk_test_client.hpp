#pragma once
// A small blocking beanstalkd client that writes the protocol's literal wire
// strings itself. It shares no code with the project's own client, so tests
// check the daemon against the real protocol, not against our reading of it.
// Every read has a deadline (SO_RCVTIMEO): a broken test fails, it never hangs.
// Failures throw std::runtime_error naming the command and the reply;
// a connection that is gone (refused, closed, reset) throws the subclass
// connection_lost, after which a fresh connect() is the way on.

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace bs_router::testing {

class beanstalkd_server;

struct connection_lost : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class beanstalk_test_client {
 public:
  struct reserved_job {
    std::uint64_t id = 0;
    std::string body;
  };
  using stats_map = std::map<std::string, std::string>;

  static constexpr std::chrono::seconds default_read_timeout{30};

  beanstalk_test_client() = default;
  beanstalk_test_client(const std::string& host, std::uint16_t port);
  explicit beanstalk_test_client(const beanstalkd_server& server);
  ~beanstalk_test_client();
  beanstalk_test_client(const beanstalk_test_client&) = delete;
  beanstalk_test_client& operator=(const beanstalk_test_client&) = delete;

  void connect(const std::string& host, std::uint16_t port);
  void close();
  bool connected() const { return fd_ >= 0; }
  // Reads that wait longer than this throw (reserve adds its own timeout to it).
  void set_read_timeout(std::chrono::milliseconds timeout) { read_timeout_ = timeout; }

  // Producer side. put() throws unless the reply is INSERTED.
  std::uint64_t put(const std::string& tube, std::string_view body, unsigned priority = 0,
                    unsigned delay_seconds = 0, unsigned ttr_seconds = 5);

  // Worker side: watches exactly `tubes` (ignoring every other), then
  // reserve-with-timeout. nullopt on TIMED_OUT.
  std::optional<reserved_job> reserve(const std::vector<std::string>& tubes,
                                      std::chrono::seconds timeout);
  std::optional<reserved_job> reserve(const std::string& tube, std::chrono::seconds timeout);

  // true on DELETED / BURIED / KICKED / RELEASED / TOUCHED, false on NOT_FOUND.
  bool delete_job(std::uint64_t id);
  bool bury(std::uint64_t id, unsigned priority = 0);
  bool kick_job(std::uint64_t id);
  bool release(std::uint64_t id, unsigned priority = 0, unsigned delay_seconds = 0);
  bool touch(std::uint64_t id);

  // The YAML dictionaries, values as written (quotes removed). nullopt on NOT_FOUND.
  std::optional<stats_map> stats_job(std::uint64_t id);
  stats_map stats();
  std::optional<stats_map> stats_tube(const std::string& tube);
  std::vector<std::string> list_tubes();
  // The body of a peek-ready on `tube`, nullopt on NOT_FOUND.
  std::optional<reserved_job> peek_ready(const std::string& tube);

  // Escape hatch: sends `bytes` verbatim and returns the first reply line
  // without its "\r\n". When that line announces a body (OK, RESERVED, FOUND),
  // the body is read too and kept in last_body().
  std::string command(std::string_view bytes);
  const std::string& last_body() const { return last_body_; }

  // Reserves one reply on `reply_tube`, deletes it and parses it.
  // nullopt when none came within `timeout`; throws if the body is not JSON.
  std::optional<nlohmann::json> wait_reply(const std::string& reply_tube,
                                           std::chrono::seconds timeout = std::chrono::seconds{30});
  // Replies on `reply_tube` up to and including the first with Progress == 100,
  // all within `timeout` overall. The last element is the final reply unless
  // the time ran out (then it is whatever came, possibly nothing).
  std::vector<nlohmann::json> wait_final_reply(
      const std::string& reply_tube, std::chrono::seconds timeout = std::chrono::seconds{30});

 private:
  void send_all(std::string_view bytes);
  std::string read_line(std::chrono::milliseconds timeout);
  std::string read_exact(std::size_t n, std::chrono::milliseconds timeout);
  std::string read_body(std::size_t bytes, std::chrono::milliseconds timeout);
  bool fill_buffer(std::chrono::milliseconds timeout);
  std::string request(std::string_view bytes, std::chrono::milliseconds timeout);
  bool simple_command(const std::string& name, const std::string& bytes,
                      std::string_view success);
  std::optional<stats_map> stats_command(const std::string& name, const std::string& bytes);
  void use(const std::string& tube);
  void watch_only(const std::vector<std::string>& tubes);

  int fd_ = -1;
  std::string buffer_; // bytes received but not consumed yet
  std::string last_body_;
  std::string used_tube_ = "default";
  std::set<std::string> watched_{"default"};
  std::chrono::milliseconds read_timeout_ = default_read_timeout;
};

// "key: value" lines of a beanstalkd YAML dictionary.
beanstalk_test_client::stats_map parse_yaml_dictionary(std::string_view yaml);

} // namespace bs_router::testing
