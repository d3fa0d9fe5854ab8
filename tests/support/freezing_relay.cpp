#include "support/freezing_relay.hpp"
#include "support/loopback.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace bs_router::testing {

namespace {

int connect_to(const std::string& host, std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

} // namespace

freezing_relay::freezing_relay(std::string host, std::uint16_t port)
    : host_(std::move(host)), target_port_(port) {
  listen_fd_ = listen_on_loopback(&port_, "freezing_relay");
  if (::pipe(wake_pipe_) != 0) {
    const std::string why = std::strerror(errno);
    ::close(listen_fd_);
    throw std::runtime_error("freezing_relay: pipe: " + why);
  }
  for (int fd : wake_pipe_) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  ::fcntl(wake_pipe_[0], F_SETFL, O_NONBLOCK);
  thread_ = std::thread([this] { run(); });
}

freezing_relay::~freezing_relay() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake();
  thread_.join();
  for (pair& p : pairs_) close_pair(p);
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

void freezing_relay::wake() {
  const char byte = 1;
  [[maybe_unused]] const ssize_t ignored = ::write(wake_pipe_[1], &byte, 1);
}

void freezing_relay::close_pair(pair& p) {
  if (p.client >= 0) ::close(p.client);
  if (p.server >= 0) ::close(p.server);
  p.client = p.server = -1;
}

void freezing_relay::freeze() {
  // The loop relays only under the lock, and looks at the flag first: once
  // this returns, not a byte of these connections moves.
  std::lock_guard lock(mutex_);
  for (pair& p : pairs_) p.frozen = true;
  wake(); // to poll them no more
}

void freezing_relay::thaw() {
  {
    std::lock_guard lock(mutex_);
    for (pair& p : pairs_) p.frozen = false;
  }
  wake();
}

std::size_t freezing_relay::connections() {
  std::lock_guard lock(mutex_);
  return pairs_.size();
}

void freezing_relay::run() {
  char chunk[65536];
  for (;;) {
    std::vector<pollfd> fds{{wake_pipe_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    std::vector<std::size_t> owners; // index into pairs_ of fds[2 + i] / 2
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      for (std::size_t i = 0; i < pairs_.size(); ++i) {
        if (pairs_[i].frozen) continue;
        fds.push_back({pairs_[i].client, POLLIN, 0});
        fds.push_back({pairs_[i].server, POLLIN, 0});
        owners.push_back(i);
      }
    }
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return;
    if (fds[0].revents) {
      while (::read(wake_pipe_[0], chunk, sizeof chunk) > 0) {
      }
    }
    std::lock_guard lock(mutex_);
    if (fds[1].revents & POLLIN) {
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) {
        const int server = connect_to(host_, target_port_);
        if (server < 0) {
          ::close(client);
        } else {
          pairs_.push_back({client, server, false});
        }
      }
    }
    for (std::size_t k = 0; k < owners.size(); ++k) {
      pair& p = pairs_[owners[k]];
      if (p.frozen) continue; // frozen while this turn polled: not a byte more
      for (int side = 0; side < 2 && p.client >= 0; ++side) {
        const pollfd& f = fds[2 + 2 * k + static_cast<std::size_t>(side)];
        if (!(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const int from = side == 0 ? p.client : p.server;
        const int to = side == 0 ? p.server : p.client;
        const ssize_t n = ::read(from, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        // One side closed: the other learns it (unless frozen, above).
        if (n <= 0 || !send_all(to, std::string_view(chunk, static_cast<std::size_t>(n)))) close_pair(p);
      }
    }
    std::erase_if(pairs_, [](const pair& p) { return p.client < 0; });
  }
}

} // namespace bs_router::testing
