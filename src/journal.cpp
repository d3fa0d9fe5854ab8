#include "bs_router/journal.hpp"

#include "bs_router/posix_io.hpp"
#include "bs_router/safe_files.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <system_error>
#include <unistd.h>
#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <string_view>

#include <nlohmann/json.hpp>

namespace bs_router {

namespace {

using nlohmann::json;

// The journal is the router's alone: owner only.
constexpr mode_t journal_file_mode = 0600;
constexpr mode_t journal_dir_mode = 0700;


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
constexpr const char* log_name = "jobs.journal";
// The log is rewritten with only the live entries once it has grown this much.
constexpr std::uint64_t rewrite_after_bytes = 4 * 1024 * 1024;
// The free space of the journal's filesystem is looked at again after at
// most this much growth (sooner when it is short).
constexpr std::uint64_t room_check_bytes = 64 * 1024;

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

void write_all(journal_files& files, int fd, const std::string& data, std::uint64_t offset,
               const std::string& path) {
  const int error = write_fully(data, [&](const char* bytes, std::size_t size, std::size_t done) {
    return files.pwrite(fd, bytes, size, static_cast<off_t>(offset + done));
  });
  if (error) throw_errno(error, "write " + path);
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

// What a journal directory holds.
struct directory_contents {
  std::map<std::uint64_t, journal_entry> entries;
  std::vector<std::string> older_files;  // <id>.json, read; removed after the rewrite
  std::vector<std::string> leftovers;    // *.tmp of interrupted writes
  std::vector<std::pair<std::string, std::uint64_t>> unreadable_files; // <id>.json and its id
  std::vector<std::string> problems;
  bool log_damaged = false;
};

// Applies the log's lines in order: the last state of a job wins, a removal
// forgets it. A last line without its newline is a write the crash cut short.
void read_log(const directory& dir, directory_contents& contents) {
  const std::string path = dir.path_of(log_name);
  std::string file_text;
  if (!read_own_file(dir, log_name, file_text)) return;
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

directory_contents read_directory(const directory& dir) {
  directory_contents contents;
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

} // namespace

directory open_state_directory(const std::string& dir) { return open_private_directory(dir, journal_dir_mode); }

const char* to_string(journal_state s) { return state_names[static_cast<int>(s)]; }

journal::journal(std::string dir, journal_files& files) : journal(open_state_directory(dir), files) {}

journal::journal(directory dir, journal_files& files)
    : dir_(std::move(dir)), files_(&files), log_path_(dir_.path_of(log_name)) {}

journal::~journal() {
  if (fd_ < 0) return;
  if (synced_ < appended_) files_->fdatasync(fd_);
  ::close(fd_);
}

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

std::vector<journal_entry> journal::inspect(const std::string& dir) {
  directory_contents contents = read_directory(open_existing_private_directory(dir));
  std::vector<journal_entry> entries;
  for (auto& [id, entry] : contents.entries) entries.push_back(std::move(entry));
  return entries;
}

std::vector<journal_entry> journal::load(std::vector<std::string>* problems) {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  directory_contents contents = read_directory(dir_);
  if (problems) problems->insert(problems->end(), contents.problems.begin(), contents.problems.end());

  for (const auto& [name, id] : contents.unreadable_files) {
    const std::string aside = std::to_string(id) + ".corrupt";
    ::renameat(dir_.fd(), name.c_str(), dir_.fd(), aside.c_str());
    if (problems) problems->push_back(dir_.path_of(name) + " moved to " + dir_.path_of(aside));
  }
  if (contents.log_damaged) {
    // Kept for whoever wants to look; the rewrite below replaces the log.
    const std::string aside = std::string(log_name) + ".corrupt-" + std::to_string(std::time(nullptr));
    if (::linkat(dir_.fd(), log_name, dir_.fd(), aside.c_str(), 0) == 0 && problems)
      problems->push_back(log_path() + " as it was is kept as " + dir_.path_of(aside));
  }

  live_.clear();
  std::vector<journal_entry> entries;
  for (auto& [id, entry] : contents.entries) {
    live_[id] = as_line(entry_to_json(entry));
    entries.push_back(std::move(entry));
  }
  rewrite();
  for (const std::string& name : contents.older_files) ::unlinkat(dir_.fd(), name.c_str(), 0);
  for (const std::string& name : contents.leftovers) ::unlinkat(dir_.fd(), name.c_str(), 0);
  return entries;
}

void journal::open_for_append() {
  if (fd_ < 0) load();
}

void journal::rewrite() {
  const std::string tmp_name = std::string(log_name) + ".tmp";
  const std::string tmp = dir_.path_of(tmp_name);
  // Created anew: a jobs.journal.tmp already there is unlinked, never
  // written through.
  int fd = files_->create_new_file(dir_, tmp_name, O_WRONLY, journal_file_mode);
  std::uint64_t size = 0;
  try {
    std::string text;
    for (const auto& [id, line] : live_) text += line;
    write_all(*files_, fd, text, 0, tmp);
    size = text.size();
    if (files_->fsync(fd) != 0) throw_errno(errno, "fsync " + tmp);
    if (files_->renameat(dir_.fd(), tmp_name.c_str(), dir_.fd(), log_name) != 0) throw_errno(errno, "rename " + tmp);
    // The rename itself must reach the disk too, or a power cut could bring
    // back the older log.
    if (files_->fsync(dir_.fd()) != 0) throw_errno(errno, "fsync " + dir_.path());
  } catch (...) {
    ::close(fd);
    // A partial copy would only take room from the log it was to replace.
    ::unlinkat(dir_.fd(), tmp_name.c_str(), 0);
    throw;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  size_ = size;
  rewritten_size_ = size;
  next_room_check_ = 0;
  synced_ = appended_;
  needs_rewrite_ = false;
}

void journal::write_line(const std::string& line) {
  try {
    write_all(*files_, fd_, line, size_, log_path());
  } catch (...) {
    // Cut off what part of the line got written, so the next line does not
    // run into it.
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
    }
    throw;
  }
}

// A compaction writes the live entries into a new file beside the old one,
// so it needs that much room: once the filesystem is full it can no longer
// be done. Before an append would leave too little room, the file is
// compacted while it still can be.
void journal::keep_room_to_compact(std::uint64_t bytes) {
  if (size_ + bytes < next_room_check_) return;
  std::uint64_t live = 0;
  for (const auto& [id, line] : live_) live += line.size();
  struct statvfs disk {};
  if (::fstatvfs(fd_, &disk) != 0) {
    next_room_check_ = size_ + bytes + room_check_bytes;
    return;
  }
  const std::uint64_t block = disk.f_frsize ? disk.f_frsize : 512;
  auto rounded = [block](std::uint64_t n) { return (n + block - 1) / block * block; };
  const std::uint64_t free = static_cast<std::uint64_t>(disk.f_bavail) * block;
  // The blocks this append takes, then a new file of the live entries and
  // this line, and a block for the new file's own bookkeeping.
  const std::uint64_t needed = rounded(size_ + bytes) - rounded(size_) + rounded(live + bytes) + block;
  if (free >= needed) {
    next_room_check_ = size_ + bytes + std::min((free - needed) / 2, room_check_bytes);
    return;
  }
  next_room_check_ = 0; // short of room: look at every append
  if (size_ <= live) return; // nothing a compaction could free
  try {
    rewrite();
  } catch (const std::system_error&) {
    // The append tells whether there is room all the same.
  }
}

void journal::append(std::uint64_t key, const std::string& line, bool removal) {
  open_for_append();
  keep_room_to_compact(line.size());
  try {
    write_line(line);
  } catch (const std::system_error&) {
    // Most of the file is lines of jobs long gone: on a full disk (ENOSPC,
    // a quota) compacting it to the live entries makes the room, so the
    // router recovers by itself once those fit. A removal is done by the
    // compaction itself (the entry is left out); a new state is written
    // once more after it. If that fails too, the error stands.
    if (removal) {
      // Forgotten even if the compaction fails: a removal need not be
      // durable, and an entry the file keeps until a crash is dropped at the
      // next start, its job being gone from the broker.
      live_.erase(key);
      ++appended_;
      rewrite();
      return;
    }
    rewrite();
    write_line(line);
  }
  size_ += line.size();
  ++appended_;
  if (removal) {
    live_.erase(key);
  } else {
    live_[key] = line;
  }
}

std::uint64_t journal::save(const journal_entry& entry) {
  append(entry.key, as_line(entry_to_json(entry)), false);
  return appended_;
}

void journal::remove(std::uint64_t key) {
  open_for_append();
  if (!live_.count(key)) return; // nothing to remove
  append(key, as_line(json{{"key", key}, {"removed", true}}), true);
}

void journal::sync() {
  if (fd_ < 0 || synced_ == appended_) return;
  const auto started = std::chrono::steady_clock::now();
  // After a failed fdatasync the kernel may have dropped the pages it could
  // not write, and a later fdatasync would not know: only a rewrite from
  // memory makes the entries durable again.
  if (needs_rewrite_ || size_ - rewritten_size_ > rewrite_after_bytes) {
    rewrite();
  } else {
    if (files_->fdatasync(fd_) != 0) {
      needs_rewrite_ = true;
      throw_errno(errno, "fdatasync " + log_path());
    }
    synced_ = appended_;
  }
  ++syncs_;
  sync_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

} // namespace bs_router
