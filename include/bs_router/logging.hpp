#pragma once
// The daemon's own log: spdlog to a file (or /dev/stdout) that SIGHUP reopens,
// so newsyslog can rotate it.

#include <memory>
#include <string>

#include <spdlog/logger.h>

namespace bs_router {

// Opens `path` for appending (creating its directory is the operator's job).
// Throws spdlog::spdlog_ex when it cannot be opened.
std::shared_ptr<spdlog::logger> make_file_logger(const std::string& name, const std::string& path);

// Closes and reopens the files of every logger made by make_file_logger.
void reopen_log_files();

} // namespace bs_router
