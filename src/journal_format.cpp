#include "bs_router/journal_format.hpp"

#include "bs_router/posix_io.hpp"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <stdexcept>
#include <unistd.h>
#include <dirent.h>

#include <algorithm>
#include <ctime>
#include <string_view>

#include <nlohmann/json.hpp>

namespace bs_router {

namespace {

using nlohmann::json;

const char* state_names[] = {"accepted", "running", "finished"};

json reply_to_json(const reply& r) {
  return json{{"job_id", r.job_id},           {"numeric_id", r.numeric_id},
              {"err_code", r.err_code},
              {"message", r.message},         {"progress", r.progress},
              {"guid", r.guid},               {"dsk_guid", r.dsk_guid},
              {"vnc", r.vnc},                 {"stderr", r.stderr_text},
              {"message_bytes", r.message_bytes}, {"stderr_bytes", r.stderr_bytes},
              {"duration", r.duration_seconds}};
}

reply reply_from_json(const json& j) {
  reply r;
  // Earlier versions wrote the beanstalkd job id as a number.
  const json& id = j.at("job_id");
  r.job_id = id.is_number_unsigned() ? std::to_string(id.get<std::uint64_t>()) : id.get<std::string>();
  r.numeric_id = j.value("numeric_id", id.is_number_unsigned());
  r.err_code = j.at("err_code").get<long long>();
  r.message = j.at("message").get<std::string>();
  r.progress = j.at("progress").get<int>();
  r.guid = j.at("guid").get<std::string>();
  r.dsk_guid = j.at("dsk_guid").get<std::string>();
  r.vnc = j.at("vnc").get<std::string>();
  r.stderr_text = j.at("stderr").get<std::string>();
  r.message_bytes = j.at("message_bytes").get<std::uint64_t>();
  r.stderr_bytes = j.at("stderr_bytes").get<std::uint64_t>();
  r.duration_seconds = j.at("duration").get<double>();
  return r;
}

journal_state state_from_string(const std::string& s) {
  for (int i = 0; i < 3; ++i)
    if (s == state_names[i]) return static_cast<journal_state>(i);
  throw std::invalid_argument("unknown state " + s);
}

bool parse_job_file_name(const std::string& name, std::uint64_t* id) {
  const std::string suffix = ".json";
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  const std::string digits = name.substr(0, name.size() - suffix.size());
  if (digits.empty() || digits.size() > 20 || !std::all_of(digits.begin(), digits.end(), ::isdigit))
    return false;
  errno = 0;
  unsigned long long v = std::strtoull(digits.c_str(), nullptr, 10);
  if (errno == ERANGE) return false;
  *id = v;
  return true;
}

// The log's lines: "<16 hex digits> <json>\n", the digits a checksum of the
// JSON text, so a line torn or garbled by a crash is recognised.
std::uint64_t checksum(std::string_view text) {
  std::uint64_t h = 14695981039346656037ull; // FNV-1a, 64 bits
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string as_line(const json& record) {
  // Bodies and outputs may hold bytes that are not UTF-8: keep them readable.
  const std::string text = record.dump(-1, ' ', false, json::error_handler_t::replace);
  // 16 hex digits, then the JSON (snprintf costs more than the rest of the
  // line on the hot path).
  std::string line(17, ' ');
  std::uint64_t sum = checksum(text);
  for (int i = 15; i >= 0; --i, sum >>= 4) line[static_cast<std::size_t>(i)] = "0123456789abcdef"[sum & 0xf];
  line.reserve(line.size() + text.size() + 1);
  line += text;
  line += '\n';
  return line;
}

// The entry's key: "key", or in a line an earlier version wrote, the
// beanstalkd job id it was keyed by.
std::uint64_t key_of(const json& j) {
  if (j.contains("key")) return j.at("key").get<std::uint64_t>();
  return j.at("job_id").get<std::uint64_t>();
}

json entry_to_json(const journal_entry& entry) {
  json j{{"key", entry.key},
         {"broker_id", entry.broker_id},
         {"state", to_string(entry.state)},
         {"body", entry.body},
         {"reserved_at", entry.taken_at}}; // the key of earlier versions, kept
  if (entry.result) j["result"] = reply_to_json(*entry.result);
  if (!entry.numeric_id) j["numeric_id"] = false;
  if (!entry.reply_to.empty()) j["reply_to"] = entry.reply_to;
  if (entry.taken_over) j["taken_over"] = true;
  if (entry.replied) j["replied"] = true;
  return j;
}

journal_entry entry_from_json(const json& j) {
  journal_entry entry;
  entry.key = key_of(j);
  entry.broker_id = j.contains("broker_id") ? j.at("broker_id").get<std::string>() : std::to_string(entry.key);
  entry.numeric_id = j.value("numeric_id", true);
  entry.reply_to = j.value("reply_to", std::string());
  entry.state = state_from_string(j.at("state").get<std::string>());
  entry.body = j.at("body").get<std::string>();
  entry.taken_at = j.at("reserved_at").get<std::int64_t>();
  if (j.contains("result")) entry.result = reply_from_json(j.at("result"));
  entry.taken_over = j.value("taken_over", false);
  entry.replied = j.value("replied", false);
  if (entry.state == journal_state::finished && !entry.result)
    throw std::invalid_argument("finished without a result");
  return entry;
}

// Reads a whole file of the journal's directory; false when it is missing.
bool read_own_file(const directory& dir, const std::string& name, std::string& text) {
  const int fd = open_own_file_for_reading(dir, name);
  if (fd < 0) return false;
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      throw_errno(error, "read " + dir.path_of(name));
    }
    if (n == 0) break;
    text.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return true;
}

// Applies the log's lines in order: the last state of a job wins, a removal
// forgets it. A last line without its newline is a write the crash cut short.
void read_log(const directory& dir, journal_directory_contents& contents) {
  const std::string path = dir.path_of(journal_log_name);
  std::string file_text;
  if (!read_own_file(dir, journal_log_name, file_text)) return;
  std::size_t number = 0;
  std::size_t start = 0;
  while (start < file_text.size()) {
    ++number;
    const std::size_t end = file_text.find('\n', start);
    if (end == std::string::npos) break; // no newline: torn
    const std::string line = file_text.substr(start, end - start);
    start = end + 1;
    try {
      if (line.size() < 18 || line[16] != ' ') throw std::invalid_argument("not a journal line");
      const std::string_view text = std::string_view(line).substr(17);
      if (std::strtoull(line.substr(0, 16).c_str(), nullptr, 16) != checksum(text))
        throw std::invalid_argument("checksum does not match");
      const json j = json::parse(text);
      const std::uint64_t id = key_of(j);
      if (j.contains("removed")) {
        contents.entries.erase(id);
      } else {
        contents.entries[id] = entry_from_json(j);
      }
    } catch (const std::exception& ex) {
      contents.log_damaged = true;
      contents.problems.push_back(path + " line " + std::to_string(number) + ": unreadable (" + ex.what() +
                                  "), skipped");
    }
  }
}

} // namespace

journal_directory_contents read_journal_directory(const directory& dir) {
  journal_directory_contents contents;
  if (!dir.is_open()) return contents; // no router has run here yet
  // A descriptor of its own: readdir moves the offset it shares with dups.
  const int list_fd = ::openat(dir.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (list_fd < 0) throw_errno(errno, "open " + dir.path());
  DIR* d = ::fdopendir(list_fd);
  if (!d) {
    const int error = errno;
    ::close(list_fd);
    throw_errno(error, "opendir " + dir.path());
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());

  // Entries of the older one-file-per-job layout come first: the log is newer.
  for (const std::string& name : names) {
    const std::string path = dir.path_of(name);
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      contents.leftovers.push_back(name);
      continue;
    }
    std::uint64_t id = 0;
    if (!parse_job_file_name(name, &id)) continue;
    try {
      std::string text;
      if (!read_own_file(dir, name, text)) continue;
      journal_entry entry = entry_from_json(json::parse(text));
      if (entry.key != id) throw std::invalid_argument("job_id does not match the file name");
      contents.entries[id] = std::move(entry);
      contents.older_files.push_back(name);
    } catch (const std::exception& ex) {
      contents.unreadable_files.emplace_back(name, id);
      contents.problems.push_back(path + ": unreadable (" + ex.what() + ")");
    }
  }
  read_log(dir, contents);
  return contents;
}

const char* to_string(journal_state s) { return state_names[static_cast<int>(s)]; }

std::string journal_line(const journal_entry& entry) { return as_line(entry_to_json(entry)); }

std::string journal_removal_line(std::uint64_t key) { return as_line(json{{"key", key}, {"removed", true}}); }

std::string journal_listing(const std::vector<journal_entry>& entries) {
  std::string text = "JOB STATE TAKEN BODY\n";
  for (const journal_entry& entry : entries) {
    const std::time_t taken = static_cast<std::time_t>(entry.taken_at);
    std::tm utc{};
    char when[32] = "?";
    if (::gmtime_r(&taken, &utc)) std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &utc);
    text += entry.broker_id + " " + to_string(entry.state) + " " + when + " " +
            json(entry.body).dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  }
  return text;
}

} // namespace bs_router
