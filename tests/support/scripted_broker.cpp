#include "support/scripted_broker.hpp"
#include "support/loopback.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <list>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace bs_router::testing {

namespace {

constexpr std::uint64_t job_id = 1;

std::string ok_yaml(const std::string& yaml) {
  return "OK " + std::to_string(yaml.size()) + "\r\n" + yaml + "\r\n";
}

// The number after the first `skip` words of `line`, 0 if there is none.
std::size_t number_field(const std::string& line, int skip) {
  std::size_t pos = 0;
  for (int i = 0; i < skip && pos != std::string::npos; ++i) pos = line.find(' ', pos + 1);
  if (pos == std::string::npos) return 0;
  return static_cast<std::size_t>(std::strtoull(line.c_str() + pos + 1, nullptr, 10));
}

// Writes all of `data`, or gives up when the peer has gone.

} // namespace

struct scripted_broker::client {
  int fd = -1;
  std::size_t number = 0;
  std::string input;
  std::size_t body_to_skip = 0; // a put's body (and its CRLF) still to come
};

scripted_broker::scripted_broker(options opts) : options_(std::move(opts)) {
  listen_fd_ = listen_on_loopback(&port_, "scripted broker");
  if (::pipe(wake_pipe_) != 0) {
    const int error = errno;
    ::close(listen_fd_);
    throw std::runtime_error(std::string("scripted broker: pipe: ") + std::strerror(error));
  }
  thread_ = std::thread([this] { serve(); });
}

scripted_broker::~scripted_broker() {
  const char stop = 's';
  (void)!::write(wake_pipe_[1], &stop, 1);
  thread_.join();
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
  ::close(listen_fd_);
}

std::vector<scripted_broker::command> scripted_broker::commands() const {
  std::lock_guard lock(mutex_);
  return commands_;
}

std::size_t scripted_broker::count(const std::string& word) const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const command& c : commands_) n += c.word == word;
  return n;
}

std::size_t scripted_broker::connections() const {
  std::lock_guard lock(mutex_);
  return connections_;
}

std::size_t scripted_broker::closed_by_peer() const {
  std::lock_guard lock(mutex_);
  return closed_by_peer_;
}

void scripted_broker::serve() {
  std::list<client> clients;
  for (;;) {
    std::vector<pollfd> fds{{wake_pipe_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (const client& c : clients) fds.push_back({c.fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    if (fds[1].revents & POLLIN) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        std::lock_guard lock(mutex_);
        clients.push_back(client{fd, ++connections_, {}, 0});
      }
    }
    std::size_t i = 2;
    for (auto it = clients.begin(); it != clients.end(); ++i) {
      if (i >= fds.size() || !fds[i].revents) {
        ++it;
        continue;
      }
      char chunk[4096];
      const ssize_t n = ::recv(it->fd, chunk, sizeof chunk, 0);
      if (n <= 0) {
        ::close(it->fd);
        it = clients.erase(it);
        std::lock_guard lock(mutex_);
        ++closed_by_peer_;
        continue;
      }
      it->input.append(chunk, static_cast<std::size_t>(n));
      for (;;) {
        if (it->body_to_skip > 0) {
          const std::size_t skip = std::min(it->body_to_skip, it->input.size());
          it->input.erase(0, skip);
          it->body_to_skip -= skip;
          if (it->body_to_skip > 0) break;
        }
        const std::size_t end = it->input.find("\r\n");
        if (end == std::string::npos) break;
        const std::string line = it->input.substr(0, end);
        it->input.erase(0, end + 2);
        answer(*it, line);
      }
      ++it;
    }
  }
  for (client& c : clients) ::close(c.fd);
}

void scripted_broker::answer(client& c, const std::string& line) {
  const std::string word = line.substr(0, line.find(' '));
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(command{c.number, word, std::chrono::steady_clock::now()});
  }
  const std::string& body = options_.job_body;
  std::string out;
  if (word == "stats") {
    out = ok_yaml("---\nmax-job-size: 65535\n");
  } else if (word == "watch") {
    out = "WATCHING 2\r\n";
  } else if (word == "ignore") {
    out = "WATCHING 1\r\n";
  } else if (word == "use") {
    out = "USING " + line.substr(4) + "\r\n";
  } else if (word == "reserve-with-timeout" || word == "reserve") {
    if (!body.empty() && !job_handed_out_) {
      job_handed_out_ = true;
      handed_out_at_ = std::chrono::steady_clock::now();
      out = "RESERVED " + std::to_string(job_id) + " " + std::to_string(body.size()) + "\r\n" + body + "\r\n";
    } else {
      out = "TIMED_OUT\r\n";
    }
    for (std::size_t i = 0; i < options_.unrequested_lines; ++i) out += "TIMED_OUT\r\n";
  } else if (word == "bury") {
    job_given_back_ = options_.bury_not_found;
    out = options_.bury_not_found ? "NOT_FOUND\r\n" : "BURIED\r\n";
  } else if (word == "stats-job" && job_handed_out_ && number_field(line, 1) == job_id) {
    const auto age = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - handed_out_at_);
    out = ok_yaml(std::string("---\nid: 1\nstate: ") + (job_given_back_ ? "ready" : "buried") +
                  "\npri: 0\nage: " + std::to_string(age.count()) + "\n");
  } else if (word == "peek" && job_handed_out_ && number_field(line, 1) == job_id) {
    out = "FOUND " + std::to_string(job_id) + " " + std::to_string(body.size()) + "\r\n" + body + "\r\n";
  } else if (word == "put") {
    c.body_to_skip = number_field(line, 4) + 2;
    out = "INSERTED 2\r\n";
  } else if (word == "delete") {
    out = "DELETED\r\n";
  } else if (word == "release") {
    out = "RELEASED\r\n";
  } else if (word == "stats-job" || word == "peek" || word == "reserve-job") {
    out = "NOT_FOUND\r\n";
  } else {
    out = "UNKNOWN_COMMAND\r\n";
  }
  (void)send_all(c.fd, out); // a peer gone is seen by the next read
}

} // namespace bs_router::testing
