#include "support/beanstalk_test_client.hpp"

#include "support/beanstalkd_server.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace bs_router::testing {

namespace {

std::runtime_error failure(const std::string& op, const std::string& what) {
  return std::runtime_error("beanstalk test client: " + op + ": " + what);
}

connection_lost lost(const std::string& op, const std::string& what) {
  return connection_lost("beanstalk test client: " + op + ": " + what);
}

std::vector<std::string> split_words(std::string_view line) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ') ++i;
    if (i > start) words.emplace_back(line.substr(start, i - start));
  }
  return words;
}

std::uint64_t to_number(const std::string& op, const std::string& text) {
  try {
    std::size_t used = 0;
    const auto n = std::stoull(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return n;
  } catch (const std::exception&) {
    throw failure(op, "expected a number, got \"" + text + "\"");
  }
}

bool is_final_reply(const nlohmann::json& reply) {
  const auto it = reply.find("Progress");
  return it != reply.end() && it->is_number() && *it == 100;
}

} // namespace

beanstalk_test_client::stats_map parse_yaml_dictionary(std::string_view yaml) {
  beanstalk_test_client::stats_map result;
  std::size_t pos = 0;
  while (pos < yaml.size()) {
    auto end = yaml.find('\n', pos);
    if (end == std::string_view::npos) end = yaml.size();
    const std::string_view line = yaml.substr(pos, end - pos);
    pos = end + 1;
    const auto colon = line.find(": ");
    if (line == "---" || colon == std::string_view::npos) continue;
    std::string value(line.substr(colon + 2));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    result[std::string(line.substr(0, colon))] = value;
  }
  return result;
}

beanstalk_test_client::beanstalk_test_client(const std::string& host, std::uint16_t port) {
  connect(host, port);
}

beanstalk_test_client::beanstalk_test_client(const beanstalkd_server& server) {
  connect(server.host(), server.port());
}

beanstalk_test_client::~beanstalk_test_client() { close(); }

void beanstalk_test_client::connect(const std::string& host, std::uint16_t port) {
  close();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    throw failure("connect", host + ": " + gai_strerror(rc));
  std::string last_error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      fd_ = fd;
      break;
    }
    last_error = std::strerror(errno);
    ::close(fd);
  }
  freeaddrinfo(found);
  if (fd_ < 0) throw lost("connect", host + ":" + service + ": " + last_error);
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void beanstalk_test_client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffer_.clear();
  used_tube_ = "default";
  watched_ = {"default"};
}

void beanstalk_test_client::send_all(std::string_view bytes) {
  if (fd_ < 0) throw lost("send", "not connected");
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw lost("send", std::strerror(errno));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Appends what one recv() returns to buffer_; false when the peer closed.
bool beanstalk_test_client::fill_buffer(std::chrono::milliseconds timeout) {
  if (fd_ < 0) throw lost("read", "not connected");
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1000; // zero would mean "no timeout"
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      throw failure("read", "no reply within " + std::to_string(timeout.count()) + " ms");
    throw lost("read", std::strerror(errno));
  }
}

std::string beanstalk_test_client::read_line(std::chrono::milliseconds timeout) {
  for (;;) {
    const auto end = buffer_.find("\r\n");
    if (end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      return line;
    }
    if (!fill_buffer(timeout)) throw lost("read", "connection closed by the server");
  }
}

std::string beanstalk_test_client::read_exact(std::size_t n, std::chrono::milliseconds timeout) {
  while (buffer_.size() < n) {
    if (!fill_buffer(timeout)) throw lost("read", "connection closed by the server");
  }
  std::string bytes = buffer_.substr(0, n);
  buffer_.erase(0, n);
  return bytes;
}

// Bodies are read by their announced length, never up to a "\r\n": a body may
// contain "\r\n" itself.
std::string beanstalk_test_client::read_body(std::size_t bytes, std::chrono::milliseconds timeout) {
  std::string body = read_exact(bytes + 2, timeout);
  if (body.compare(bytes, 2, "\r\n") != 0) throw failure("read", "body not followed by \\r\\n");
  body.resize(bytes);
  return body;
}

std::string beanstalk_test_client::request(std::string_view bytes,
                                           std::chrono::milliseconds timeout) {
  send_all(bytes);
  return read_line(timeout);
}

std::string beanstalk_test_client::command(std::string_view bytes) {
  last_body_.clear();
  const std::string line = request(bytes, read_timeout_);
  const auto words = split_words(line);
  if (!words.empty()) {
    std::size_t body_bytes = 0;
    bool has_body = false;
    if (words[0] == "OK" && words.size() == 2) {
      body_bytes = to_number("command", words[1]);
      has_body = true;
    } else if ((words[0] == "RESERVED" || words[0] == "FOUND") && words.size() == 3) {
      body_bytes = to_number("command", words[2]);
      has_body = true;
    }
    if (has_body) last_body_ = read_body(body_bytes, read_timeout_);
  }
  return line;
}

void beanstalk_test_client::use(const std::string& tube) {
  if (tube == used_tube_) return;
  const std::string reply = request("use " + tube + "\r\n", read_timeout_);
  if (reply != "USING " + tube) throw failure("use " + tube, reply);
  used_tube_ = tube;
}

void beanstalk_test_client::watch_only(const std::vector<std::string>& tubes) {
  if (tubes.empty()) throw failure("watch", "no tube to watch");
  const std::set<std::string> wanted(tubes.begin(), tubes.end());
  // Watch first: beanstalkd refuses to ignore the last watched tube.
  for (const auto& tube : wanted) {
    if (watched_.count(tube)) continue;
    const std::string reply = request("watch " + tube + "\r\n", read_timeout_);
    if (reply.rfind("WATCHING ", 0) != 0) throw failure("watch " + tube, reply);
    watched_.insert(tube);
  }
  for (auto it = watched_.begin(); it != watched_.end();) {
    if (wanted.count(*it)) {
      ++it;
      continue;
    }
    const std::string reply = request("ignore " + *it + "\r\n", read_timeout_);
    if (reply.rfind("WATCHING ", 0) != 0) throw failure("ignore " + *it, reply);
    it = watched_.erase(it);
  }
}

std::uint64_t beanstalk_test_client::put(const std::string& tube, std::string_view body,
                                         unsigned priority, unsigned delay_seconds,
                                         unsigned ttr_seconds) {
  use(tube);
  std::string bytes = "put " + std::to_string(priority) + " " + std::to_string(delay_seconds) +
                      " " + std::to_string(ttr_seconds) + " " + std::to_string(body.size()) +
                      "\r\n";
  bytes.append(body);
  bytes += "\r\n";
  const std::string reply = request(bytes, read_timeout_);
  const auto words = split_words(reply);
  if (words.size() != 2 || words[0] != "INSERTED") throw failure("put", reply);
  return to_number("put", words[1]);
}

std::optional<beanstalk_test_client::reserved_job> beanstalk_test_client::reserve(
    const std::vector<std::string>& tubes, std::chrono::seconds timeout) {
  watch_only(tubes);
  const std::string reply = request(
      "reserve-with-timeout " + std::to_string(timeout.count()) + "\r\n", timeout + read_timeout_);
  const auto words = split_words(reply);
  if (reply == "TIMED_OUT") return std::nullopt;
  if (words.size() != 3 || words[0] != "RESERVED") throw failure("reserve", reply);
  reserved_job job;
  job.id = to_number("reserve", words[1]);
  job.body = read_body(to_number("reserve", words[2]), read_timeout_);
  return job;
}

std::optional<beanstalk_test_client::reserved_job> beanstalk_test_client::reserve(
    const std::string& tube, std::chrono::seconds timeout) {
  return reserve(std::vector<std::string>{tube}, timeout);
}

bool beanstalk_test_client::simple_command(const std::string& name, const std::string& bytes,
                                           std::string_view success) {
  const std::string reply = request(bytes, read_timeout_);
  if (reply == success) return true;
  if (reply == "NOT_FOUND") return false;
  throw failure(name, reply);
}

bool beanstalk_test_client::delete_job(std::uint64_t id) {
  return simple_command("delete", "delete " + std::to_string(id) + "\r\n", "DELETED");
}

bool beanstalk_test_client::bury(std::uint64_t id, unsigned priority) {
  return simple_command(
      "bury", "bury " + std::to_string(id) + " " + std::to_string(priority) + "\r\n", "BURIED");
}

bool beanstalk_test_client::kick_job(std::uint64_t id) {
  return simple_command("kick-job", "kick-job " + std::to_string(id) + "\r\n", "KICKED");
}

bool beanstalk_test_client::release(std::uint64_t id, unsigned priority, unsigned delay_seconds) {
  return simple_command("release",
                        "release " + std::to_string(id) + " " + std::to_string(priority) + " " +
                            std::to_string(delay_seconds) + "\r\n",
                        "RELEASED");
}

bool beanstalk_test_client::touch(std::uint64_t id) {
  return simple_command("touch", "touch " + std::to_string(id) + "\r\n", "TOUCHED");
}

std::optional<beanstalk_test_client::stats_map> beanstalk_test_client::stats_command(
    const std::string& name, const std::string& bytes) {
  const std::string reply = request(bytes, read_timeout_);
  if (reply == "NOT_FOUND") return std::nullopt;
  const auto words = split_words(reply);
  if (words.size() != 2 || words[0] != "OK") throw failure(name, reply);
  return parse_yaml_dictionary(read_body(to_number(name, words[1]), read_timeout_));
}

std::optional<beanstalk_test_client::stats_map> beanstalk_test_client::stats_job(
    std::uint64_t id) {
  return stats_command("stats-job", "stats-job " + std::to_string(id) + "\r\n");
}

beanstalk_test_client::stats_map beanstalk_test_client::stats() {
  auto result = stats_command("stats", "stats\r\n");
  if (!result) throw failure("stats", "NOT_FOUND");
  return *result;
}

std::optional<beanstalk_test_client::stats_map> beanstalk_test_client::stats_tube(
    const std::string& tube) {
  return stats_command("stats-tube", "stats-tube " + tube + "\r\n");
}

std::vector<std::string> beanstalk_test_client::list_tubes() {
  const std::string reply = request("list-tubes\r\n", read_timeout_);
  const auto words = split_words(reply);
  if (words.size() != 2 || words[0] != "OK") throw failure("list-tubes", reply);
  const std::string yaml = read_body(to_number("list-tubes", words[1]), read_timeout_);
  std::vector<std::string> tubes;
  std::size_t pos = 0;
  while (pos < yaml.size()) {
    auto end = yaml.find('\n', pos);
    if (end == std::string::npos) end = yaml.size();
    const std::string_view line(yaml.data() + pos, end - pos);
    if (line.rfind("- ", 0) == 0) tubes.emplace_back(line.substr(2));
    pos = end + 1;
  }
  return tubes;
}

std::optional<beanstalk_test_client::reserved_job> beanstalk_test_client::peek_ready(
    const std::string& tube) {
  use(tube);
  const std::string reply = request("peek-ready\r\n", read_timeout_);
  if (reply == "NOT_FOUND") return std::nullopt;
  const auto words = split_words(reply);
  if (words.size() != 3 || words[0] != "FOUND") throw failure("peek-ready", reply);
  reserved_job job;
  job.id = to_number("peek-ready", words[1]);
  job.body = read_body(to_number("peek-ready", words[2]), read_timeout_);
  return job;
}

std::optional<nlohmann::json> beanstalk_test_client::wait_reply(const std::string& reply_tube,
                                                                std::chrono::seconds timeout) {
  const auto job = reserve(reply_tube, timeout);
  if (!job) return std::nullopt;
  delete_job(job->id);
  try {
    return nlohmann::json::parse(job->body);
  } catch (const nlohmann::json::exception& e) {
    throw failure("wait_reply on " + reply_tube,
                  "reply " + std::to_string(job->id) + " is not JSON (" + e.what() +
                      "): " + job->body);
  }
}

std::vector<nlohmann::json> beanstalk_test_client::wait_final_reply(const std::string& reply_tube,
                                                                    std::chrono::seconds timeout) {
  std::vector<nlohmann::json> replies;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::seconds>(deadline -
                                                              std::chrono::steady_clock::now());
    if (left <= std::chrono::seconds{0}) break;
    auto reply = wait_reply(reply_tube, left);
    if (!reply) break;
    replies.push_back(std::move(*reply));
    if (is_final_reply(replies.back())) break;
  }
  return replies;
}

} // namespace bs_router::testing
