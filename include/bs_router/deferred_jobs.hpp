#pragma once
// Jobs given back to the broker until their jname has room (the router's
// max_waiting), remembered by broker id in the order the router first got
// them, per jname: only the first of a jname is taken again, when its turn
// comes, so the order per jname holds however often a job comes back. The
// jnames take turns. Pure: the router gives back and takes again.

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <string>

namespace bs_router {

class deferred_jobs {
 public:
  explicit deferred_jobs(std::size_t most) : most_(most) {}

  // Remembers `id` at the end of its jname's line, unless it is there
  // already. True when it was not.
  bool remember(const std::string& jname, const std::string& id);
  bool contains(const std::string& id) const;
  // Whether jobs of `jname` wait in the broker.
  bool waiting(const std::string& jname) const { return lines_.count(jname) != 0; }
  // The first job of `jname`'s line (the one whose turn comes next).
  const std::string* first(const std::string& jname) const;
  // `jname`'s first job is taken (or given up on).
  void pop_first(const std::string& jname);

  // The jname whose first job has its turn now: the first, after the one
  // served last, for which `room` holds. It counts as served.
  const std::string* next_turn(const std::function<bool(const std::string&)>& room);

  std::size_t size() const { return count_; }
  // At most this many are remembered: the router takes no new job meanwhile.
  bool full() const { return count_ >= most_; }
  void clear();

 private:
  std::size_t most_;
  std::map<std::string, std::deque<std::string>> lines_;
  std::size_t count_ = 0;
  std::string last_turn_;
};

} // namespace bs_router
