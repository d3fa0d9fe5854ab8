#include "bs_router/job_files.hpp"

#include "bs_router/escape.hpp"
#include "bs_router/posix_io.hpp"
#include "bs_router/safe_files.hpp"

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string_view>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bs_router {

namespace {

// Job output and command lines may carry secrets (passwords in arguments):
// readable by the owner's group at most.
constexpr mode_t job_file_mode = 0640;
constexpr mode_t job_dir_mode = 0750;

constexpr std::string_view job_file_suffixes[] = {".cmd", ".out", ".err"};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A character of an AMQP message id ([A-Za-z0-9._:-]).
bool is_message_id_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == ':' ||
         c == '-';
}

// A file stem job_file_id() makes: digits, or the message prefix and 1 to
// 128 characters of a message id.
bool is_job_file_id(std::string_view id) {
  if (!id.empty() && std::all_of(id.begin(), id.end(), is_digit)) return true;
  if (!id.starts_with(message_file_prefix)) return false;
  const std::string_view message_id = id.substr(message_file_prefix.size());
  return !message_id.empty() && message_id.size() <= 128 &&
         std::all_of(message_id.begin(), message_id.end(), is_message_id_char);
}

// "<id>.cmd", "<id>.out" or "<id>.err" with an id job_file_id() makes: the
// only names prune may remove. Returns the id, or an empty view for any
// other name.
std::string_view job_id_of_file_name(std::string_view name) {
  for (std::string_view suffix : job_file_suffixes) {
    if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) continue;
    std::string_view id = name.substr(0, name.size() - suffix.size());
    if (is_job_file_id(id)) return id;
  }
  return {};
}

// Job ids as numbers, for ordering; names too long for 64 bits sort last.
bool job_id_less(const std::string& a, const std::string& b) {
  auto without_leading_zeros = [](const std::string& s) {
    auto first = s.find_first_not_of('0');
    return first == std::string::npos ? std::string_view() : std::string_view(s).substr(first);
  };
  std::string_view x = without_leading_zeros(a);
  std::string_view y = without_leading_zeros(b);
  if (x.size() != y.size()) return x.size() < y.size();
  return x < y;
}

std::chrono::system_clock::time_point modification_time(const struct stat& status) {
  using namespace std::chrono;
  return system_clock::time_point(
      duration_cast<system_clock::duration>(seconds(status.st_mtim.tv_sec) + nanoseconds(status.st_mtim.tv_nsec)));
}

// One argv element as one line of a .cmd file: escaped, so that a value with
// a newline cannot pass for two elements and the file shows the bytes cbsd
// received.
std::string escaped_line(const std::string& element) { return escape_bytes(element) + '\n'; }

// Read and write: the router reads back what the child wrote through the
// same descriptor. Created anew in the directory held open: a file of that
// name (an earlier job's of a reused id, or anything planted) is unlinked,
// never written through.
int create_job_file(const directory& dir, const std::string& name) {
  return create_new_file(dir, name, O_RDWR, job_file_mode);
}

} // namespace

job_files::job_files(std::string logdir, int max_age_days, int max_files, std::uint64_t max_bytes)
    : logdir_(std::move(logdir)), max_age_days_(max_age_days), max_files_(max_files), max_bytes_(max_bytes) {
  if (logdir_.empty()) throw std::invalid_argument("job_files: empty logdir");
  if (max_age_days_ < 0 || max_files_ < 0) throw std::invalid_argument("job_files: negative limit");
  while (logdir_.size() > 1 && logdir_.back() == '/') logdir_.pop_back();
  dir_ = open_private_directory(logdir_, job_dir_mode);
}

std::string job_files::cmd_path(const std::string& job_id) const { return logdir_ + "/" + job_id + ".cmd"; }
std::string job_files::out_path(const std::string& job_id) const { return logdir_ + "/" + job_id + ".out"; }
std::string job_files::err_path(const std::string& job_id) const { return logdir_ + "/" + job_id + ".err"; }

void job_files::write_command(const std::string& job_id, const std::vector<std::string>& argv) const {
  std::string text;
  for (const std::string& element : argv) text += escaped_line(element);

  // Written in place: one small write, read by people after the job has run.
  const std::string path = cmd_path(job_id);
  int fd = create_job_file(dir_, job_id + ".cmd");
  try {
    if (int error = write_all(fd, text)) throw_errno(error, "cannot write " + path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw_errno(errno, "cannot write " + path);
}

int job_files::open_out(const std::string& job_id) const { return create_job_file(dir_, job_id + ".out"); }
int job_files::open_err(const std::string& job_id) const { return create_job_file(dir_, job_id + ".err"); }

std::string job_files::read_head(int fd, const std::string& name, std::size_t max_bytes, std::uint64_t* total) {
  struct stat status {};
  if (::fstat(fd, &status) != 0) throw_errno(errno, "cannot stat " + name);
  std::string head;
  // Read in chunks rather than sized up front: max_bytes may be a generous
  // bound far above the file's size.
  head.reserve(std::min<std::uint64_t>(max_bytes, static_cast<std::uint64_t>(std::max<off_t>(status.st_size, 0))));
  char chunk[65536];
  while (head.size() < max_bytes) {
    const ssize_t n = ::pread(fd, chunk, std::min(sizeof chunk, max_bytes - head.size()), static_cast<off_t>(head.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "cannot read " + name);
    }
    if (n == 0) break;
    head.append(chunk, static_cast<std::size_t>(n));
  }
  // A file still being written may have grown since fstat.
  if (total) *total = std::max<std::uint64_t>(static_cast<std::uint64_t>(std::max<off_t>(status.st_size, 0)), head.size());
  return head;
}

bool job_files::older::operator()(const age_key& a, const age_key& b) const {
  // Jobs touched in the same instant go by id.
  if (a.first != b.first) return a.first < b.first;
  if (job_id_less(a.second, b.second)) return true;
  if (job_id_less(b.second, a.second)) return false;
  return a.second < b.second; // "01" and "1": distinct names, one order
}

void job_files::count(std::string id, kept_job job) {
  if (auto old = index_.find(id); old != index_.end()) forget(old);
  index_bytes_ += job.bytes;
  by_age_.emplace(job.newest, id);
  index_.emplace(std::move(id), std::move(job));
}

void job_files::forget(std::map<std::string, kept_job>::iterator it) {
  index_bytes_ -= it->second.bytes;
  by_age_.erase({it->second.newest, it->first});
  index_.erase(it);
}

std::size_t job_files::remove_while_over_bounds(const std::string& keep) {
  auto over = [this] {
    return (max_files_ > 0 && index_.size() > static_cast<std::size_t>(max_files_)) ||
           (max_bytes_ > 0 && index_bytes_ > max_bytes_);
  };
  std::size_t removed = 0;
  auto next = by_age_.begin();
  while (over() && next != by_age_.end()) {
    const std::string id = (next++)->second;
    if (id == keep) continue;
    auto it = index_.find(id);
    if (remove_files(it->second)) ++removed;
    forget(it);
  }
  return removed;
}

// By name in the directory held open, as the files were made: a link or
// another directory planted at logdir's path since the start leads nowhere.
bool job_files::remove_files(const kept_job& job) const {
  bool any = false;
  for (const std::string& name : job.files) any = (::unlinkat(dir_.fd(), name.c_str(), 0) == 0) || any;
  return any;
}

// A job's file as it is now, or nothing when it is gone or not a regular file.
std::optional<struct stat> job_files::regular_file(const std::string& name) const {
  struct stat status {};
  if (::fstatat(dir_.fd(), name.c_str(), &status, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(status.st_mode))
    return std::nullopt;
  return status;
}

std::size_t job_files::prune(std::chrono::system_clock::time_point now) {
  std::map<std::string, kept_job> jobs; // by the id as written in the names

  // A removed logdir still lists (empty) through the descriptor, but no
  // job file can be made in it any more: said each time, not passed over.
  struct stat held {};
  if (::fstat(dir_.fd(), &held) != 0) throw_errno(errno, "cannot stat " + logdir_);
  if (held.st_nlink == 0) throw_errno(ENOENT, logdir_ + " was removed while the router runs; restart it to make it anew");
  // The directory held open is listed, through a descriptor of its own (so
  // that the listing's position is not shared), not whatever is at its path.
  const int list_fd = ::openat(dir_.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (list_fd < 0) throw_errno(errno, "cannot list " + logdir_);
  const std::unique_ptr<DIR, int (*)(DIR*)> listing(::fdopendir(list_fd), ::closedir); // closes list_fd
  if (!listing) {
    const int error = errno;
    ::close(list_fd);
    throw_errno(error, "cannot list " + logdir_);
  }
  while (const dirent* entry = ::readdir(listing.get())) {
    std::string_view name = entry->d_name;
    std::string_view id = job_id_of_file_name(name);
    if (id.empty()) continue;
    // Only regular files: a directory or link that happens to match the
    // pattern is not ours.
    const std::optional<struct stat> status = regular_file(std::string(name));
    if (!status) continue;
    kept_job& job = jobs[std::string(id)];
    job.files.emplace_back(name);
    job.newest = std::max(job.newest, modification_time(*status));
    job.bytes += static_cast<std::uint64_t>(std::max<off_t>(status->st_size, 0));
  }

  index_.clear();
  by_age_.clear();
  index_bytes_ = 0;
  std::size_t removed = 0;
  const auto max_age = std::chrono::hours(24) * max_age_days_;
  for (auto& [id, job] : jobs) {
    if (max_age_days_ > 0 && job.newest < now - max_age) {
      if (remove_files(job)) ++removed;
    } else {
      count(id, std::move(job));
    }
  }
  if (by_age_.empty()) return removed;
  return removed + remove_while_over_bounds(by_age_.rbegin()->second);
}

std::size_t job_files::add_job(const std::string& job_id) {
  kept_job job;
  for (std::string_view suffix : job_file_suffixes) {
    std::string name = job_id + std::string(suffix);
    const std::optional<struct stat> status = regular_file(name);
    if (!status) continue;
    job.files.push_back(std::move(name));
    job.newest = std::max(job.newest, modification_time(*status));
    job.bytes += static_cast<std::uint64_t>(std::max<off_t>(status->st_size, 0));
  }
  const std::string& id = job_id;
  if (job.files.empty()) {
    if (auto old = index_.find(id); old != index_.end()) forget(old);
    return 0;
  }
  count(id, std::move(job));
  return remove_while_over_bounds(id);
}

capped_output::capped_output(int fd, std::string path, std::uint64_t cap)
    : fd_(fd), path_(std::move(path)), cap_(cap) {}

std::string capped_output::marker(std::uint64_t cap) {
  return "\n[bs_router: output cut here: only the first " + std::to_string(cap) +
         " bytes are kept (joblog_max_output_bytes)]\n";
}

void capped_output::append(std::string_view data) noexcept {
  received_ += data.size();
  if (!error_.empty() || marked_) return;
  try {
    std::string_view kept = data;
    if (cap_ > 0) kept = data.substr(0, static_cast<std::size_t>(std::min<std::uint64_t>(data.size(), cap_ - written_)));
    if (int error = write_all(fd_, kept)) throw_errno(error, "cannot write " + path_);
    written_ += kept.size();
    if (kept.size() < data.size()) {
      marked_ = true;
      if (int error = write_all(fd_, marker(cap_))) throw_errno(error, "cannot write " + path_);
    }
  } catch (const std::exception& ex) {
    error_ = ex.what();
  } catch (...) {
    error_ = "cannot write " + path_;
  }
}

std::string job_file_id(const std::string& broker_id, bool numeric_id) {
  if (numeric_id) return broker_id;
  return std::string(message_file_prefix) + broker_id;
}

} // namespace bs_router
