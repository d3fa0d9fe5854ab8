#include "bs_router/logging.hpp"

#include "bs_router/posix_io.hpp"
#include "bs_router/safe_files.hpp"

#include <cerrno>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

namespace bs_router {

namespace {

constexpr mode_t log_file_mode = 0640;
constexpr mode_t log_dir_mode = 0750;

// Names that stand for a descriptor the router already has, or for nothing:
// opened as they are, not as files (on Linux /dev/stdout is a link).
int standard_descriptor(const std::string& path) {
  if (path == "/dev/stdout") return STDOUT_FILENO;
  if (path == "/dev/stderr") return STDERR_FILENO;
  return -1;
}

bool is_dev_null(const std::string& path) { return path == "/dev/null"; }

void split_path(const std::string& path, std::string& dir, std::string& name) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) {
    dir = ".";
    name = path;
  } else {
    dir = slash == 0 ? "/" : path.substr(0, slash);
    name = path.substr(slash + 1);
  }
  if (name.empty() || name == "." || name == "..")
    throw unsafe_path_error(path + ": not the name of a file");
}

int open_log(const std::string& path) {
  if (int standard = standard_descriptor(path); standard >= 0) {
    const int fd = ::fcntl(standard, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) throw_errno(errno, "cannot duplicate " + path);
    return fd;
  }
  if (is_dev_null(path)) {
    const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw_errno(errno, "cannot open " + path);
    return fd;
  }
  std::string dir_path, name;
  split_path(path, dir_path, name);
  const directory dir = open_directory(dir_path, log_dir_mode);
  return open_own_file(dir, name, O_WRONLY | O_APPEND, log_file_mode);
}

// spdlog's basic_file_sink opens its file by path and cannot reopen it; this
// one writes to a descriptor opened as above, and can.
class reopenable_file_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit reopenable_file_sink(const std::string& path) : path_(path), fd_(open_log(path)) {}
  ~reopenable_file_sink() override {
    if (fd_ >= 0) ::close(fd_);
  }

  // Returns what went wrong, or an empty string.
  std::string reopen() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (standard_descriptor(path_) >= 0) return {}; // nothing to reopen
    try {
      const int fd = open_log(path_);
      ::close(fd_);
      fd_ = fd;
      return {};
    } catch (const std::exception& ex) {
      return ex.what();
    }
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    // Unbuffered: few lines (two per job), and each is in the file at once,
    // which keeps `tail -f` and crashes honest.
    if (int error = write_all(fd_, std::string_view(formatted.data(), formatted.size())))
      throw spdlog::spdlog_ex("cannot write " + path_, error);
  }
  void flush_() override {}

 private:
  std::string path_;
  int fd_ = -1;
};

std::mutex registry_mutex;
std::vector<std::weak_ptr<reopenable_file_sink>> registry;

} // namespace

void check_log_file(const std::string& path) {
  if (standard_descriptor(path) >= 0 || is_dev_null(path)) return;
  std::string dir, name;
  split_path(path, dir, name);
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) return; // created at start
  if (!S_ISREG(status.st_mode))
    throw unsafe_path_error(path + ": " + file_type_name(status.st_mode) +
                            ", not a regular file (only /dev/stdout, /dev/stderr and /dev/null are allowed besides)");
  if (status.st_uid != ::geteuid())
    throw unsafe_path_error(path + ": owned by uid " + std::to_string(status.st_uid) + ", not by the router's uid " +
                            std::to_string(::geteuid()));
  if (status.st_nlink != 1)
    throw unsafe_path_error(path + ": has " + std::to_string(status.st_nlink) +
                            " hard links; the router writes only a file with one");
}

std::shared_ptr<spdlog::logger> make_file_logger(const std::string& name, const std::string& path) {
  auto sink = std::make_shared<reopenable_file_sink>(path);
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry.push_back(sink);
  }
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  // The pid is written into the pattern once: spdlog's %P asks getpid() on
  // every line, and the router never logs from another process (a child
  // between fork and exec makes async-signal-safe calls only).
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %n[" + std::to_string(::getpid()) + "] %l: %v");
  logger->set_level(spdlog::level::info);
  return logger;
}

std::vector<std::string> reopen_log_files() {
  std::vector<std::string> problems;
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (auto it = registry.begin(); it != registry.end();) {
    if (auto sink = it->lock()) {
      if (std::string problem = sink->reopen(); !problem.empty()) problems.push_back(std::move(problem));
      ++it;
    } else {
      it = registry.erase(it);
    }
  }
  return problems;
}

} // namespace bs_router
