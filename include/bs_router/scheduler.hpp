#pragma once
// Which job runs when: max_jobs slots, the jobs waiting for one in the order
// they came, and one job at a time per jname, the others of that jname
// waiting behind it in the order they were put. Pure: no processes, no
// sockets; the router starts what it is told to start.
//
// A job holds its jname from admit() until finished() or withdraw(), while
// it waits for a slot too, so that the next job of that jname waits behind
// it however soon it comes.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bs_router {

class scheduler {
 public:
  using key = std::uint64_t;
  enum class placement {
    runs,            // has its slot now: start it
    waits_for_slot,  // holds its jname; starts when a slot frees
    waits_for_jname, // behind the job that holds its jname
  };

  scheduler(std::size_t slots, std::size_t max_waiting);

  // A new job; `jname` empty: it waits for no other job.
  placement admit(key job, const std::string& jname);
  // A running job ended: its slot and its jname pass on. Returns the jobs
  // that got a slot, in the order they are to start.
  std::vector<key> finished(key job);
  // A job that will not run after all, wherever it waits or runs; as
  // finished for the others.
  std::vector<key> withdraw(key job);
  // No more starts (the router is stopping); jobs keep their places.
  void stop() { stopped_ = true; }

  // Whether a job of `jname` admitted now would run or wait behind its
  // jname without passing max_waiting.
  bool room(const std::string& jname) const;
  // Whether a job of `jname` may wait behind its jname without passing
  // max_waiting (true when the jname is free: it does not wait for one).
  bool may_wait(const std::string& jname) const;
  bool busy(const std::string& jname) const { return holders_.count(jname) != 0; }

  std::size_t slots() const { return slots_; }
  std::size_t running() const { return running_.size(); }
  std::size_t waiting_for_slot() const { return ready_.size(); }
  std::size_t waiting_for_jname() const { return waiting_behind_; }
  // Slots that neither a running job nor one waiting for a slot claims.
  std::size_t free_slots() const;
  // Where a job admitted and not finished or withdrawn is now.
  std::optional<placement> where(key job) const;

 private:
  std::vector<key> start_what_can();
  void release_jname(const std::string& jname);

  std::size_t slots_;
  std::size_t max_waiting_;
  std::map<key, std::string> running_;           // running job -> its jname
  std::deque<std::pair<key, std::string>> ready_; // waiting for a slot, with jname
  std::map<std::string, std::deque<key>> holders_; // jname -> jobs waiting behind its holder
  std::size_t waiting_behind_ = 0;
  bool stopped_ = false;
};

} // namespace bs_router
