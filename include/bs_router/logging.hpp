#pragma once
// The daemon's own log: spdlog to a file (or /dev/stdout) that SIGHUP reopens,
// so newsyslog can rotate it.

#include <memory>
#include <string>
#include <vector>

#include <spdlog/logger.h>

namespace bs_router {

// The log is opened as every file the router writes (safe_files.hpp): in its
// directory held open, never through a link, only a regular file of ours
// with one link, mode 0640 at most. /dev/stdout and /dev/stderr are the
// router's own descriptors 1 and 2, /dev/null discards; any other device,
// FIFO, socket or directory is refused.

// Throws unsafe_path_error when `path` names something the router would
// refuse to log to (a FIFO, a link, somebody else's file), without opening
// it; a missing file is fine.
void check_log_file(const std::string& path);

// Opens `path` for appending, creating it (and missing directories, mode
// 0750). Throws std::system_error or unsafe_path_error when it cannot.
std::shared_ptr<spdlog::logger> make_file_logger(const std::string& name, const std::string& path);

// Closes and reopens the files of every logger made by make_file_logger. A
// file that cannot be reopened keeps its old descriptor; what went wrong is
// returned, one line per file.
std::vector<std::string> reopen_log_files();

} // namespace bs_router
