#pragma once
// How the journal (journal.hpp) stands on disk: the log's lines, each
// "<16 hex digits> <json>\n" with the digits a checksum of the JSON text, and
// the reading of a journal directory, including the one-file-per-job
// <id>.json entries an older version wrote. Pure encoding and reading: the
// journal object makes the writes, syncs and rewrites.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bs_router/journal.hpp"
#include "bs_router/safe_files.hpp"

namespace bs_router {

// The log's name in the journal's directory.
inline constexpr const char* journal_log_name = "jobs.journal";

// The log line recording the entry's state.
std::string journal_line(const journal_entry& entry);
// The log line recording the removal of the entry `key`.
std::string journal_removal_line(std::uint64_t key);

// What a journal directory holds.
struct journal_directory_contents {
  std::map<std::uint64_t, journal_entry> entries;
  std::vector<std::string> older_files;  // <id>.json, read; removed after the rewrite
  std::vector<std::string> leftovers;    // *.tmp of interrupted writes
  std::vector<std::pair<std::string, std::uint64_t>> unreadable_files; // <id>.json and its id
  std::vector<std::string> problems;
  bool log_damaged = false;
};

// Reads the older <id>.json entries, then the log over them (the log is
// newer); changes nothing. A directory not open holds nothing. Throws
// std::system_error when the directory or a file cannot be read.
journal_directory_contents read_journal_directory(const directory& dir);

} // namespace bs_router
