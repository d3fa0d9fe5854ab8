#include "bs_router/replay_guard.hpp"

#include "bs_router/posix_io.hpp"

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bs_router {

namespace {

constexpr const char* temporary_name = "signatures.new";
// "<64 hex> <up to 18 digits> <job id up to 128>\n"
constexpr std::size_t max_line_bytes = 64 + 1 + 18 + 1 + 128 + 1;
// Files are rewritten once they hold this many lines beyond twice the live ones.
constexpr std::size_t rewrite_slack_lines = 1024;

// A file of ours: regular, one link, owned by the router's user.
void check_ours(int fd, const char* name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(errno, std::string("fstat ") + name);
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != ::geteuid())
    throw std::runtime_error(std::string(name) +
                             ": not a regular file of this user with one link; not used (remove it to start afresh)");
}

bool parse_line(std::string_view line, std::string& hmac, std::int64_t& expires, std::string& job_id) {
  const std::size_t first = line.find(' ');
  if (first != 64) return false;
  const std::size_t second = line.find(' ', first + 1);
  if (second == std::string_view::npos || second == first + 1 || second - first - 1 > 18) return false;
  std::int64_t value = 0;
  for (char c : line.substr(first + 1, second - first - 1)) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  for (char c : line.substr(0, first))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  std::string_view id = line.substr(second + 1);
  if (id.empty() || id.size() > 128 || id.find(' ') != std::string_view::npos) return false;
  hmac.assign(line.substr(0, first));
  expires = value;
  job_id.assign(id);
  return true;
}

} // namespace

replay_guard::replay_guard(int dir_fd, std::size_t max_entries, std::int64_t now) : max_entries_(max_entries) {
  dir_fd_ = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dir_fd_ < 0) throw_errno(errno, "dup statedir");
  try {
    load();
    forget_expired(now);
    rewrite();
  } catch (...) {
    if (fd_ >= 0) ::close(fd_);
    ::close(dir_fd_);
    throw;
  }
}

replay_guard::~replay_guard() {
  try {
    if (!pending_.empty()) sync();
  } catch (const std::exception&) {
    // Not synced: the jobs it names were not buried either, so they come
    // back under the same id and are taken then.
  }
  if (fd_ >= 0) ::close(fd_);
  ::close(dir_fd_);
}

void replay_guard::load() {
  const int fd = ::openat(dir_fd_, file_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return;
    throw_errno(errno, std::string("open ") + file_name);
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_it{fd};
  check_ours(fd, file_name);
  // Never more than a rewrite leaves room for, whatever the file claims.
  const std::size_t limit = (2 * max_entries_ + rewrite_slack_lines + 1) * max_line_bytes;
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(errno, std::string("read ") + file_name);
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > limit) throw std::runtime_error(std::string(file_name) + ": larger than its bound");
  }
  std::string hmac, job_id;
  std::int64_t expires = 0;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\n', start);
    if (end == std::string::npos) break; // torn by a crash: never synced, so its job was never buried
    if (parse_line(std::string_view(text).substr(start, end - start), hmac, expires, job_id)) {
      auto [it, added] = entries_.try_emplace(hmac, entry{expires, job_id});
      if (added) by_expiry_.emplace(expires, hmac);
    }
    start = end + 1;
  }
}

void replay_guard::forget_expired(std::int64_t now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first < now) {
    entries_.erase(by_expiry_.begin()->second);
    by_expiry_.erase(by_expiry_.begin());
  }
}

std::string replay_guard::line_of(const std::string& hmac, const entry& e) const {
  return hmac + " " + std::to_string(e.expires) + " " + e.job_id + "\n";
}

void replay_guard::rewrite() {
  if (::unlinkat(dir_fd_, temporary_name, 0) != 0 && errno != ENOENT)
    throw_errno(errno, std::string("unlink ") + temporary_name);
  const int tmp = ::openat(dir_fd_, temporary_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (tmp < 0) throw_errno(errno, std::string("create ") + temporary_name);
  try {
    std::string text;
    text.reserve(entries_.size() * 100);
    for (const auto& [expires, hmac] : by_expiry_) text += line_of(hmac, entries_.at(hmac));
    if (int error = write_all(tmp, text)) throw_errno(error, std::string("write ") + temporary_name);
    if (::fsync(tmp) != 0) throw_errno(errno, std::string("fsync ") + temporary_name);
  } catch (...) {
    ::close(tmp);
    ::unlinkat(dir_fd_, temporary_name, 0);
    throw;
  }
  ::close(tmp);
  if (::renameat(dir_fd_, temporary_name, dir_fd_, file_name) != 0)
    throw_errno(errno, std::string("rename ") + temporary_name);
  if (::fsync(dir_fd_) != 0) throw_errno(errno, "fsync statedir");
  pending_.clear();
  needs_rewrite_ = false;
  lines_in_file_ = entries_.size();
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::openat(dir_fd_, file_name, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
  if (fd_ < 0) throw_errno(errno, std::string("open ") + file_name);
  check_ours(fd_, file_name);
}

replay_guard::verdict replay_guard::admit(std::string_view hmac, std::int64_t expires, std::string_view job_id,
                                          std::int64_t now) {
  const std::string key(hmac);
  if (auto it = entries_.find(key); it != entries_.end()) {
    if (it->second.expires >= now) return it->second.job_id == job_id ? verdict::same_job : verdict::replayed;
  }
  forget_expired(now);
  if (entries_.size() >= max_entries_) return verdict::full;
  entry e{expires, std::string(job_id)};
  pending_ += line_of(key, e);
  entries_.emplace(key, std::move(e));
  by_expiry_.emplace(expires, key);
  return verdict::fresh;
}

void replay_guard::sync() {
  if (pending_.empty()) return;
  // What pending_ holds is in entries_ too: a rewrite writes it. After a
  // failed fdatasync the kernel may have dropped pages it could not write,
  // and a later one would not know: only a rewrite is sure.
  if (needs_rewrite_ || lines_in_file_ > 2 * entries_.size() + rewrite_slack_lines) {
    rewrite();
    return;
  }
  const std::size_t lines = static_cast<std::size_t>(std::count(pending_.begin(), pending_.end(), '\n'));
  if (int error = write_all(fd_, pending_)) throw_errno(error, std::string("write ") + file_name);
  lines_in_file_ += lines;
  pending_.clear();
  if (::fdatasync(fd_) != 0) {
    needs_rewrite_ = true;
    throw_errno(errno, std::string("fdatasync ") + file_name);
  }
}

} // namespace bs_router
