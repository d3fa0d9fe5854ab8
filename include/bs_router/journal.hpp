#pragma once
// The durable record of every job the router has taken from the broker and
// not yet answered. One small file per job in statedir, replaced atomically
// (write, fsync, rename), so a crash at any instant leaves each entry either
// in its old or its new state. Entries are removed once the reply is put and
// the job deleted, so the journal holds at most the jobs in flight.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bs_router/reply.hpp"

namespace bs_router {

enum class journal_state {
  accepted, // buried in the broker, waiting for its jname; cbsd not started
  running,  // cbsd started: if the router dies now, the outcome is unknown
  finished, // reply recorded, waiting to be put
};

struct journal_entry {
  std::uint64_t job_id = 0;
  journal_state state = journal_state::accepted;
  std::string body;          // the job's body as reserved
  std::int64_t reserved_at = 0; // unix seconds; tells a reused job id from this job
  std::optional<reply> result;  // finished only
};

class journal {
 public:
  // Creates dir (mode 0700) if needed; throws std::system_error.
  explicit journal(std::string dir, bool sync = true);

  // Atomically writes the entry (replacing the previous state). Throws
  // std::system_error.
  void save(const journal_entry& entry) const;
  void remove(std::uint64_t job_id) const;

  // Every readable entry, by job id. Leftover temporary files are removed;
  // unreadable entries are renamed to <id>.corrupt and reported in `problems`.
  std::vector<journal_entry> load(std::vector<std::string>* problems = nullptr) const;

  const std::string& dir() const { return dir_; }

 private:
  std::string path_for(std::uint64_t job_id) const;
  std::string dir_;
  bool sync_;
};

const char* to_string(journal_state s);

// Creates dir and its missing parents with mode 0700 (the state of a pool is
// the router's alone); throws std::system_error.
void make_private_directories(const std::string& dir);

} // namespace bs_router
