#include "bs_router/journal.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace bs_router {

namespace {

using nlohmann::json;

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}


const char* state_names[] = {"accepted", "running", "finished"};

json reply_to_json(const reply& r) {
  return json{{"job_id", r.job_id},           {"err_code", r.err_code},
              {"message", r.message},         {"progress", r.progress},
              {"guid", r.guid},               {"dsk_guid", r.dsk_guid},
              {"vnc", r.vnc},                 {"stderr", r.stderr_text},
              {"message_bytes", r.message_bytes}, {"stderr_bytes", r.stderr_bytes},
              {"duration", r.duration_seconds}};
}

reply reply_from_json(const json& j) {
  reply r;
  r.job_id = j.at("job_id").get<std::uint64_t>();
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

} // namespace

void make_private_directories(const std::string& dir) {
  std::string partial;
  std::stringstream parts(dir);
  std::string part;
  if (!dir.empty() && dir[0] == '/') partial = "/";
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    partial += part;
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir " + partial);
    partial += '/';
  }
}

const char* to_string(journal_state s) { return state_names[static_cast<int>(s)]; }

journal::journal(std::string dir, bool sync) : dir_(std::move(dir)), sync_(sync) { make_private_directories(dir_); }

std::string journal::path_for(std::uint64_t job_id) const {
  return dir_ + "/" + std::to_string(job_id) + ".json";
}

void journal::save(const journal_entry& entry) const {
  json j{{"job_id", entry.job_id},
         {"state", to_string(entry.state)},
         {"body", entry.body},
         {"reserved_at", entry.reserved_at}};
  if (entry.result) j["result"] = reply_to_json(*entry.result);
  // Bodies and outputs may hold bytes that are not UTF-8: keep them readable.
  const std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";

  const std::string path = path_for(entry.job_id);
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw_errno("open " + tmp);
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      errno = saved;
      throw_errno("write " + tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (sync_ && ::fsync(fd) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    throw_errno("fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp);
  if (sync_) {
    // The rename itself must reach the disk too, or a power cut could bring
    // back the previous state.
    int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_CLOEXEC);
    if (dir_fd >= 0) {
      ::fsync(dir_fd);
      ::close(dir_fd);
    }
  }
}

void journal::remove(std::uint64_t job_id) const {
  const std::string path = path_for(job_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("unlink " + path);
}

std::vector<journal_entry> journal::load(std::vector<std::string>* problems) const {
  std::vector<journal_entry> entries;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) throw_errno("opendir " + dir_);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);

  for (const std::string& name : names) {
    const std::string path = dir_ + "/" + name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      ::unlink(path.c_str()); // a write that never reached its rename
      continue;
    }
    std::uint64_t id = 0;
    if (!parse_job_file_name(name, &id)) continue;
    try {
      std::ifstream in(path);
      json j = json::parse(in);
      journal_entry entry;
      entry.job_id = j.at("job_id").get<std::uint64_t>();
      if (entry.job_id != id) throw std::invalid_argument("job_id does not match the file name");
      entry.state = state_from_string(j.at("state").get<std::string>());
      entry.body = j.at("body").get<std::string>();
      entry.reserved_at = j.at("reserved_at").get<std::int64_t>();
      if (j.contains("result")) entry.result = reply_from_json(j.at("result"));
      if (entry.state == journal_state::finished && !entry.result)
        throw std::invalid_argument("finished without a result");
      entries.push_back(std::move(entry));
    } catch (const std::exception& ex) {
      const std::string aside = dir_ + "/" + std::to_string(id) + ".corrupt";
      ::rename(path.c_str(), aside.c_str());
      if (problems) problems->push_back(path + ": unreadable (" + ex.what() + "), moved to " + aside);
    }
  }
  std::sort(entries.begin(), entries.end(),
            [](const journal_entry& a, const journal_entry& b) { return a.job_id < b.job_id; });
  return entries;
}

} // namespace bs_router
