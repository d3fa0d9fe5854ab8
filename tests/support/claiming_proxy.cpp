#include "support/claiming_proxy.hpp"
#include "support/loopback.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>

namespace bs_router::testing {

namespace {

// The broker's answers, framed: a line, and for OK, RESERVED and FOUND the
// body it announces. Only the body of an OK that holds max-job-size (the
// answer to `stats`) is changed.
class answer_rewriter {
 public:
  explicit answer_rewriter(std::string claim) : claim_(std::move(claim)) {}

  // Appends what the broker sent; returns what to forward now.
  std::string feed(std::string_view data) {
    pending_.append(data);
    std::string out;
    for (;;) {
      const auto end = pending_.find("\r\n");
      if (end == std::string::npos) break;
      const std::string line = pending_.substr(0, end);
      std::size_t body = 0;
      const bool has_body = line.rfind("OK ", 0) == 0 || line.rfind("RESERVED ", 0) == 0 || line.rfind("FOUND ", 0) == 0;
      if (has_body) body = std::stoul(line.substr(line.rfind(' ') + 1));
      if (has_body && pending_.size() < end + 2 + body + 2) break;
      if (!has_body) {
        out += line + "\r\n";
        pending_.erase(0, end + 2);
        continue;
      }
      std::string text = pending_.substr(end + 2, body);
      pending_.erase(0, end + 2 + body + 2);
      const std::string key = "\nmax-job-size: ";
      if (const auto at = text.find(key); line.rfind("OK ", 0) == 0 && at != std::string::npos) {
        const auto value_end = text.find('\n', at + key.size());
        text.replace(at + key.size(), value_end - at - key.size(), claim_);
        out += "OK " + std::to_string(text.size()) + "\r\n" + text + "\r\n";
      } else {
        out += line + "\r\n" + text + "\r\n";
      }
    }
    return out;
  }

 private:
  std::string claim_;
  std::string pending_;
};

} // namespace

claiming_proxy::claiming_proxy(std::uint16_t target_port, std::string claimed_max_job_size)
    : target_port_(target_port), claim_(std::move(claimed_max_job_size)) {
  listener_ = listen_on_loopback(&port_, "claiming_proxy");
  acceptor_ = std::thread([this] { accept_loop(); });
}

claiming_proxy::~claiming_proxy() {
  stopping_ = true;
  ::shutdown(listener_, SHUT_RDWR);
  acceptor_.join();
  ::close(listener_);
  std::lock_guard lock(mutex_);
  for (std::thread& t : connections_) t.join();
}

void claiming_proxy::accept_loop() {
  while (!stopping_) {
    pollfd p{listener_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    std::lock_guard lock(mutex_);
    connections_.emplace_back([this, client] { serve(client); });
  }
}

void claiming_proxy::serve(int client) {
  const int broker = connect_to_loopback(target_port_);
  if (broker < 0) {
    ::close(client);
    return;
  }
  answer_rewriter rewriter(claim_);
  char buf[65536];
  while (!stopping_) {
    pollfd p[2] = {{client, POLLIN, 0}, {broker, POLLIN, 0}};
    if (::poll(p, 2, 100) <= 0) continue;
    if (p[0].revents) {
      const ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0 || !send_all(broker, std::string_view(buf, static_cast<std::size_t>(n)))) break;
    }
    if (p[1].revents) {
      const ssize_t n = ::recv(broker, buf, sizeof buf, 0);
      if (n <= 0 || !send_all(client, rewriter.feed(std::string_view(buf, static_cast<std::size_t>(n))))) break;
    }
  }
  ::close(broker);
  ::close(client);
}

} // namespace bs_router::testing
