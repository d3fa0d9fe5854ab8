#include "bs_router/journal.hpp"

#include "bs_router/journal_format.hpp"
#include "bs_router/posix_io.hpp"
#include "bs_router/safe_files.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <system_error>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>

namespace bs_router {

namespace {

// The journal is the router's alone: owner only.
constexpr mode_t journal_file_mode = 0600;
constexpr mode_t journal_dir_mode = 0700;

// The log is rewritten with only the live entries once it has grown this much.
constexpr std::uint64_t rewrite_after_bytes = 4 * 1024 * 1024;
// The free space of the journal's filesystem is looked at again after at
// most this much growth (sooner when it is short).
constexpr std::uint64_t room_check_bytes = 64 * 1024;

void write_all(journal_files& files, int fd, const std::string& data, std::uint64_t offset,
               const std::string& path) {
  const int error = write_fully(data, [&](const char* bytes, std::size_t size, std::size_t done) {
    return files.pwrite(fd, bytes, size, static_cast<off_t>(offset + done));
  });
  if (error) throw_errno(error, "write " + path);
}

} // namespace

directory open_state_directory(const std::string& dir) { return open_private_directory(dir, journal_dir_mode); }

journal::journal(std::string dir, journal_files& files) : journal(open_state_directory(dir), files) {}

journal::journal(directory dir, journal_files& files)
    : dir_(std::move(dir)), files_(&files), log_path_(dir_.path_of(journal_log_name)) {}

journal::~journal() {
  if (fd_ < 0) return;
  if (synced_ < appended_) files_->fdatasync(fd_);
  ::close(fd_);
}

std::vector<journal_entry> journal::inspect(const std::string& dir) {
  journal_directory_contents contents = read_journal_directory(open_existing_private_directory(dir));
  std::vector<journal_entry> entries;
  for (auto& [id, entry] : contents.entries) entries.push_back(std::move(entry));
  return entries;
}

std::vector<journal_entry> journal::load(std::vector<std::string>* problems) {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  journal_directory_contents contents = read_journal_directory(dir_);
  if (problems) problems->insert(problems->end(), contents.problems.begin(), contents.problems.end());

  for (const auto& [name, id] : contents.unreadable_files) {
    const std::string aside = std::to_string(id) + ".corrupt";
    ::renameat(dir_.fd(), name.c_str(), dir_.fd(), aside.c_str());
    if (problems) problems->push_back(dir_.path_of(name) + " moved to " + dir_.path_of(aside));
  }
  if (contents.log_damaged) {
    // Kept for whoever wants to look; the rewrite below replaces the log.
    const std::string aside = std::string(journal_log_name) + ".corrupt-" + std::to_string(std::time(nullptr));
    if (::linkat(dir_.fd(), journal_log_name, dir_.fd(), aside.c_str(), 0) == 0 && problems)
      problems->push_back(log_path() + " as it was is kept as " + dir_.path_of(aside));
  }

  live_.clear();
  std::vector<journal_entry> entries;
  for (auto& [id, entry] : contents.entries) {
    live_[id] = journal_line(entry);
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
  const std::string tmp_name = std::string(journal_log_name) + ".tmp";
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
    if (files_->renameat(dir_.fd(), tmp_name.c_str(), dir_.fd(), journal_log_name) != 0) throw_errno(errno, "rename " + tmp);
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
  append(entry.key, journal_line(entry), false);
  return appended_;
}

void journal::remove(std::uint64_t key) {
  open_for_append();
  if (!live_.count(key)) return; // nothing to remove
  append(key, journal_removal_line(key), true);
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
