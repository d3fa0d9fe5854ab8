#include "bs_router/rabbitmq_config.hpp"

#include "bs_router/rabbitmq_c.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bs_router {

namespace {

constexpr std::size_t max_password_bytes = 4096;

bool is_message_id_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == ':' || c == '-';
}

} // namespace

bool valid_message_id(const std::string& id) {
  return !id.empty() && id.size() <= max_message_id_chars && std::all_of(id.begin(), id.end(), is_message_id_char);
}

std::string amqp_uri::redacted() const {
  return std::string(tls ? "amqps://" : "amqp://") + user + "@" +
         (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port) +
         (vhost == "/" ? "/" : "/" + vhost);
}

std::optional<amqp_uri> parse_amqp_uri(const std::string& text, std::string& problem) {
  if (text.rfind("amqp://", 0) != 0 && text.rfind("amqps://", 0) != 0) {
    problem = "expected amqp://host[:port][/vhost] or amqps://...";
    return std::nullopt;
  }
  if (std::any_of(text.begin(), text.end(), [](unsigned char c) { return c <= ' ' || c >= 0x7f; })) {
    problem = "an AMQP URI has no spaces or control characters (percent-encode them)";
    return std::nullopt;
  }
  // amqp_parse_url cuts its argument in place and points into it.
  std::vector<char> buffer(text.begin(), text.end());
  buffer.push_back('\0');
  amqp_connection_info info{};
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK || info.host == nullptr || *info.host == '\0') {
    problem = "not an AMQP URI (amqp[s]://[user[:password]@]host[:port][/vhost])";
    return std::nullopt;
  }
  if (info.port < 1 || info.port > 65535) {
    problem = "port " + std::to_string(info.port) + " is not between 1 and 65535";
    return std::nullopt;
  }
  amqp_uri uri;
  uri.text = text;
  uri.tls = info.ssl != 0;
  uri.host = info.host;
  uri.port = static_cast<std::uint16_t>(info.port);
  uri.user = info.user ? info.user : "guest";
  uri.password = info.password ? info.password : "guest";
  uri.vhost = info.vhost && *info.vhost ? info.vhost : "/";
  return uri;
}

std::string queue_name_problem(const std::string& name) {
  if (name.empty()) return "empty";
  if (name.size() > max_queue_name) return "longer than " + std::to_string(max_queue_name) + " bytes";
  if (!std::all_of(name.begin(), name.end(), [](unsigned char c) { return c > ' ' && c < 0x7f; }))
    return "has a space or a character that is not printable ASCII";
  if (name.rfind("amq.", 0) == 0) return "names starting with \"amq.\" are the broker's own";
  return "";
}

std::string load_password_file(const std::string& path) {
  auto fail = [&path](const std::string& what) { return std::runtime_error(path + ": " + what); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) throw fail(std::string("cannot open the password file: ") + std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_it{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw fail(std::string("cannot check the password file: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw fail("the password file is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw fail(std::string("the password file has mode ") + mode +
               ": group and others must have no access to it (chmod 600)");
  }
  if (st.st_size > static_cast<off_t>(max_password_bytes))
    throw fail("a password file holds at most " + std::to_string(max_password_bytes) + " bytes");
  std::string password;
  char buffer[512];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(std::string("cannot read the password file: ") + std::strerror(errno));
    if (n == 0) break;
    password.append(buffer, static_cast<std::size_t>(n));
    if (password.size() > max_password_bytes)
      throw fail("a password file holds at most " + std::to_string(max_password_bytes) + " bytes");
  }
  if (!password.empty() && password.back() == '\n') password.pop_back();
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.empty()) throw fail("the password file is empty");
  if (password.find('\n') != std::string::npos) throw fail("the password file holds more than one line");
  return password;
}

} // namespace bs_router
