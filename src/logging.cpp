#include "bs_router/logging.hpp"

#include <mutex>
#include <vector>

#include <spdlog/details/file_helper.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

namespace bs_router {

namespace {

// spdlog's basic_file_sink cannot reopen its file; this one can.
class reopenable_file_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit reopenable_file_sink(const std::string& path) { file_.open(path, false); }

  void reopen() {
    std::lock_guard<std::mutex> lock(mutex_);
    file_.reopen(false);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    file_.write(formatted);
    // Few lines (two per job): flushing each keeps `tail -f` and crashes honest.
    file_.flush();
  }
  void flush_() override { file_.flush(); }

 private:
  spdlog::details::file_helper file_;
};

std::mutex registry_mutex;
std::vector<std::weak_ptr<reopenable_file_sink>> registry;

} // namespace

std::shared_ptr<spdlog::logger> make_file_logger(const std::string& name, const std::string& path) {
  auto sink = std::make_shared<reopenable_file_sink>(path);
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry.push_back(sink);
  }
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %n[%P] %l: %v");
  logger->set_level(spdlog::level::info);
  return logger;
}

void reopen_log_files() {
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (auto it = registry.begin(); it != registry.end();) {
    if (auto sink = it->lock()) {
      sink->reopen();
      ++it;
    } else {
      it = registry.erase(it);
    }
  }
}

} // namespace bs_router
