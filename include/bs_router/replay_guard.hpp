#pragma once
// The router's memory of the signed jobs it has taken, so that a signed job
// put again (by anyone who saw it on the tube) is refused, also after a
// restart. One file in the statedir, <statedir>/signatures: a line
// "<hmac> <expires> <job id>" per job taken, appended, and made durable by
// sync() before the job is buried (before it can run).
//
// Bounded: an entry is kept until its job's Expires has passed (after which
// the job is refused as expired anyway), and at most max_entries are kept.
// When that many live entries are remembered, new signed jobs are refused
// (`full`) rather than anything forgotten: forgetting would let a replay in.
//
// The same HMAC seen again under the same job id is the same broker job
// coming back (its bury never happened, so it never ran): not a replay.
//
// Every file operation is relative to the statedir's descriptor, never
// follows a link, and refuses a file that is not a regular file of the
// router's own user with one link. The file is rewritten (to a temporary
// file, synced, renamed over it) at start and whenever it has grown to twice
// its live entries, so it stays within twice the bound.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>

namespace bs_router {

class replay_guard {
 public:
  static constexpr const char* file_name = "signatures";

  // `dir_fd`: the statedir (the guard keeps a duplicate of it). Reads the
  // file, drops what expired by `now`, rewrites it. Throws std::system_error
  // or std::runtime_error (a file that is not ours).
  replay_guard(int dir_fd, std::size_t max_entries, std::int64_t now);
  ~replay_guard();
  replay_guard(const replay_guard&) = delete;
  replay_guard& operator=(const replay_guard&) = delete;

  enum class verdict { fresh, same_job, replayed, full };
  // Whether the job with this HMAC may be taken under `job_id`; a fresh one
  // is remembered at once (durable after the next sync()).
  verdict admit(std::string_view hmac, std::int64_t expires, std::string_view job_id, std::int64_t now);

  // Whether something was remembered since the last sync.
  bool unsynced() const { return !pending_.empty(); }
  // Appends what was remembered and fdatasyncs it. Throws std::system_error;
  // what was not written stays pending (and is written by the next sync).
  void sync();

  std::size_t size() const { return entries_.size(); }
  std::size_t max_entries() const { return max_entries_; }

 private:
  struct entry {
    std::int64_t expires = 0;
    std::string job_id;
  };
  void forget_expired(std::int64_t now);
  void load();
  void rewrite();
  std::string line_of(const std::string& hmac, const entry& e) const;

  int dir_fd_ = -1;
  int fd_ = -1; // the file, open for appending
  std::size_t max_entries_;
  std::unordered_map<std::string, entry> entries_;     // hmac -> entry
  std::multimap<std::int64_t, std::string> by_expiry_; // expires -> hmac
  std::string pending_;                                // lines not yet appended
  std::size_t lines_in_file_ = 0;
  bool needs_rewrite_ = false; // an fdatasync failed
};

} // namespace bs_router
