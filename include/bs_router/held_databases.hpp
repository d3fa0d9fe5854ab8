#pragma once
// Read-only SQLite connections to CBSD's files, kept open between reads.
//
// Opening a CBSD database costs far more than the read itself: SQLite parses
// the schema, opens the -wal and -shm files and, being the only connection,
// rebuilds the WAL index (about 0.1 ms each, with some 80 system calls).
// A burst of jname jobs reads the global inventory once per job, and a VM's
// own database again for each of its jobs, so the connections are kept:
//
// - each one is tied to the file it was opened on, by (device, inode) as
//   lstat saw the path just before the open and again after the read. A path
//   that names another file now (CBSD replaced the database, or removed the
//   VM and created it again under its name) gets a new connection; the old
//   one is closed. While a connection is held its file cannot be freed, so
//   its inode number cannot pass to a new file.
// - a held connection is idle between reads: every statement is finalized
//   when its read ends, so it holds no read transaction, never holds back a
//   checkpoint and never blocks a writer.
// - at most `max_held`, the least recently used closed first, and the owner
//   closes them all once reads stop for a while (cbsd_runner), so that an
//   idle router keeps no file of CBSD's open.
//
// Not thread-safe: one thread uses it (the database thread of cbsd_runner).

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <list>
#include <string>

struct sqlite3;

namespace bs_router {

// Which file a path named when it was looked at.
struct file_identity {
  dev_t device = 0;
  ino_t inode = 0;
  bool operator==(const file_identity&) const = default;
};

class held_databases {
 public:
  static constexpr std::size_t default_max_held = 16;

  explicit held_databases(std::chrono::milliseconds busy_timeout, std::size_t max_held = default_max_held);
  ~held_databases();
  held_databases(const held_databases&) = delete;
  held_databases& operator=(const held_databases&) = delete;

  // A connection to `path`, which lstat has just shown to be `seen`: the
  // held one when it was opened on that file, else a new one (read-only,
  // never created, the last component never followed). Null when SQLite
  // cannot open it; `error` then has SQLite's code and `message` its text.
  sqlite3* get(const std::string& path, file_identity seen, int& error, std::string& message);

  // After a read through get(path, seen): `now` is what lstat shows of the
  // path after the read. When it differs, the file was replaced meanwhile
  // and the connection is not kept (the next read opens the file anew).
  void confirm(const std::string& path, file_identity seen, file_identity now);

  // Closes the connection to `path`, if one is held (its read failed).
  void drop(const std::string& path);

  // Closes them all.
  void close_all();

  std::size_t size() const { return held_.size(); }

 private:
  struct held {
    std::string path;
    file_identity identity;
    sqlite3* db = nullptr;
  };
  using list = std::list<held>;
  list::iterator find(const std::string& path);
  void close(list::iterator it);

  std::chrono::milliseconds busy_timeout_;
  std::size_t max_held_;
  list held_; // most recently used first
};

} // namespace bs_router
