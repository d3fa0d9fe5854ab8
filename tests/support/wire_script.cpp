#include "support/wire_script.hpp"
#include "support/loopback.hpp"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace bs_router::testing {

wire_script::wire_script(std::vector<step> steps) : steps_(std::move(steps)) {
  listen_fd_ = listen_on_loopback(&port_, "wire script");
  if (::pipe(wake_pipe_) != 0) {
    const int error = errno;
    ::close(listen_fd_);
    throw std::runtime_error(std::string("wire script: pipe: ") + std::strerror(error));
  }
  thread_ = std::thread([this] { play(); });
}

wire_script::~wire_script() {
  const char stop = 's';
  (void)!::write(wake_pipe_[1], &stop, 1);
  thread_.join();
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
  ::close(listen_fd_);
}

std::string wire_script::received() const {
  std::lock_guard lock(mutex_);
  return received_;
}

std::string wire_script::mismatch() const {
  std::lock_guard lock(mutex_);
  return mismatch_;
}

bool wire_script::read_at_least(int fd, std::string& buffer, std::size_t n) {
  while (buffer.size() < n) {
    pollfd fds[2] = {{wake_pipe_[0], POLLIN, 0}, {fd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (fds[0].revents) return false;
    char chunk[4096];
    const ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(got));
    std::lock_guard lock(mutex_);
    received_.append(chunk, static_cast<std::size_t>(got));
  }
  return true;
}

void wire_script::play() {
  pollfd accept_fds[2] = {{wake_pipe_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
  while (::poll(accept_fds, 2, -1) < 0 && errno == EINTR) {
  }
  if (accept_fds[0].revents) return;
  int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  auto failed = [this](std::string what) {
    std::lock_guard lock(mutex_);
    if (mismatch_.empty()) mismatch_ = std::move(what);
  };
  std::string pending; // received, not yet matched by an expect step
  for (const step& s : steps_) {
    if (s.what == step::kind::expect) {
      const bool complete = read_at_least(fd, pending, s.bytes.size());
      if (pending.compare(0, s.bytes.size(), s.bytes) != 0) {
        failed("expected \"" + s.bytes + "\", got \"" + pending.substr(0, s.bytes.size()) + "\"" +
               (complete ? "" : " before the connection closed"));
        break;
      }
      pending.erase(0, s.bytes.size());
    } else if (s.what == step::kind::send) {
      if (!send_all(fd, s.bytes)) {
        failed("the connection closed before \"" + s.bytes + "\" could be sent");
        break;
      }
    } else {
      ::close(fd);
      fd = -1;
      break;
    }
  }
  if (fd < 0) return;
  // The script is played: keep the connection, and count what else comes.
  read_at_least(fd, pending, static_cast<std::size_t>(-1));
  ::close(fd);
}

} // namespace bs_router::testing
