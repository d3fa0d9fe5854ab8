#pragma once
// The durable record of every job the router has taken from the broker and
// not yet answered: one append-only file, <statedir>/jobs.journal, one line
// per change of a job's state (or its removal), each line checksummed.
//
// Appending is cheap and sync() makes everything appended so far durable with
// one fdatasync, however many jobs changed: the router appends as jobs move
// and syncs once per turn of its loop where an order must hold (recorded
// before the bury, before cbsd starts, before the reply is put). A crash
// leaves the file ending anywhere; a torn last line is ignored on reading.
//
// The file is rewritten with only the live entries (to a temporary file,
// synced, renamed) when it is opened and whenever it has grown past a bound,
// so it holds at most the jobs in flight plus that bound.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bs_router/journal_files.hpp"
#include "bs_router/reply.hpp"
#include "bs_router/safe_files.hpp"

namespace bs_router {

enum class journal_state {
  accepted, // buried in the broker, waiting for its jname; cbsd not started
  running,  // cbsd started: if the router dies now, the outcome is unknown
  finished, // reply recorded, waiting to be put
};

struct journal_entry {
  // The router's own name for the entry, never reused within a statedir.
  // (Journals of earlier versions were keyed by the beanstalkd job id: read
  // back, that id becomes the key, and broker_id its decimal digits.)
  std::uint64_t key = 0;
  // The broker's name for the job (beanstalkd: the job id in decimal; AMQP:
  // the message id), opaque to the journal; the reply's JobID.
  std::string broker_id;
  bool numeric_id = true; // JobID a JSON number (beanstalkd), else a string
  std::string reply_to;   // where the replies go; empty: the broker's default
  journal_state state = journal_state::accepted;
  std::string body;          // the job's body as reserved
  std::int64_t taken_at = 0; // unix seconds; tells a reused job id from this job
  std::optional<reply> result;  // finished only
  // Taken over from its body while another connection kept the broker's job
  // reserved past its TTR (see router::take_over): the broker's job is not
  // buried for the router, and comes back to it some day.
  bool taken_over = false;
  // Taken over, and its final reply is put: the broker's job is only to be
  // deleted once it comes back, never answered or run again.
  bool replied = false;
};

class journal {
 public:
  // Creates dir (mode 0700) if needed and holds it open; throws
  // std::system_error, or unsafe_path_error when it is not a directory of
  // the router's user that nobody else can write in. Opens no file yet:
  // load() or the first save() does. `files` makes the writes, syncs,
  // renames and creations (journal_files.hpp), and must outlive the journal.
  explicit journal(std::string dir, journal_files& files = posix_journal_files());
  // A directory opened already (open_state_directory): every file of the
  // journal is opened relative to it.
  explicit journal(directory dir, journal_files& files = posix_journal_files());
  // Syncs what was appended since the last sync (errors are ignored).
  ~journal();
  journal(const journal&) = delete;
  journal& operator=(const journal&) = delete;

  // Reads every entry (the log, and the one-file-per-job <id>.json entries
  // an older version wrote), then rewrites the log with just those, synced,
  // and removes the older files. Unreadable lines are reported in `problems`
  // and the log that held them is kept as jobs.journal.corrupt-<time>;
  // unreadable <id>.json files are renamed <id>.corrupt. Ordered by key.
  // Throws std::system_error when the directory cannot be read or written.
  std::vector<journal_entry> load(std::vector<std::string>* problems = nullptr);

  // Appends the entry's new state. Durable once sync() has returned; returns
  // the number to give synced() to learn whether it is. A failed write
  // (a full disk) compacts the file to the live entries and tries once more.
  // Throws std::system_error (and then nothing was appended).
  std::uint64_t save(const journal_entry& entry);
  // Appends the entry's removal; nothing needs to wait for it to be durable
  // (a removal lost in a crash leaves an entry whose job the broker no longer
  // has, which the router drops). Throws std::system_error; the entry is
  // forgotten all the same, and gone from the file at the next compaction.
  void remove(std::uint64_t key);

  // One fdatasync for everything appended so far (or a rewrite: past the
  // size bound, and after a failed fdatasync). Throws std::system_error.
  void sync();
  // Whether the append numbered `sequence` (from save) is durable.
  bool synced(std::uint64_t sequence) const { return sequence <= synced_; }
  // Entries live now (saved and not removed).
  std::size_t size() const { return live_.size(); }
  // Syncs made since this object was created, and the time they took.
  std::uint64_t syncs() const { return syncs_; }
  double sync_seconds() const { return sync_seconds_; }

  const std::string& dir() const { return dir_.path(); }
  // The statedir held open, for other files of the pool's state.
  const directory& state_directory() const { return dir_; }
  const std::string& log_path() const { return log_path_; }

  // The entries a journal directory holds, read without changing anything
  // (for inspection while a router owns it).
  static std::vector<journal_entry> inspect(const std::string& dir);

 private:
  void append(std::uint64_t key, const std::string& line, bool removal);
  void write_line(const std::string& line);
  void keep_room_to_compact(std::uint64_t bytes);
  void open_for_append();
  void rewrite();

  directory dir_;
  journal_files* files_;
  std::string log_path_; // <dir>/jobs.journal
  int fd_ = -1;
  std::uint64_t size_ = 0;          // bytes in the log file
  std::uint64_t rewritten_size_ = 0; // its size right after the last rewrite
  std::uint64_t appended_ = 0;      // appends so far
  std::uint64_t synced_ = 0;        // appends known durable
  bool needs_rewrite_ = false;      // an fdatasync failed
  std::uint64_t next_room_check_ = 0; // size_ at which to look at the free space again
  std::uint64_t syncs_ = 0;
  double sync_seconds_ = 0;
  std::map<std::uint64_t, std::string> live_; // key -> its latest line
};

const char* to_string(journal_state s);

// For people: one line per entry, "<id> <state> <taken, UTC> <body as a JSON
// string>", under a header line.
std::string journal_listing(const std::vector<journal_entry>& entries);

// Opens a pool's statedir for journal and pool_lock alike, creating it and
// its missing parents with mode 0700 (the state of a pool is the router's
// alone); throws std::system_error or unsafe_path_error (see
// open_private_directory).
directory open_state_directory(const std::string& dir);

} // namespace bs_router
