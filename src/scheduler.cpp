#include "bs_router/scheduler.hpp"

#include <algorithm>

namespace bs_router {

scheduler::scheduler(std::size_t slots, std::size_t max_waiting) : slots_(slots), max_waiting_(max_waiting) {}

scheduler::placement scheduler::admit(key job, const std::string& jname) {
  if (!jname.empty()) {
    auto holder = holders_.find(jname);
    if (holder != holders_.end()) {
      holder->second.push_back(job);
      ++waiting_behind_;
      return placement::waits_for_jname;
    }
    holders_[jname]; // from now on, this jname is held
  }
  ready_.emplace_back(job, jname);
  std::vector<key> started = start_what_can();
  return std::find(started.begin(), started.end(), job) != started.end() ? placement::runs
                                                                          : placement::waits_for_slot;
}

// The jname's next job, if any, waits for a slot now; else the jname is free.
void scheduler::release_jname(const std::string& jname) {
  if (jname.empty()) return;
  auto holder = holders_.find(jname);
  if (holder == holders_.end()) return;
  if (holder->second.empty()) {
    holders_.erase(holder);
    return;
  }
  ready_.emplace_back(holder->second.front(), jname);
  holder->second.pop_front();
  --waiting_behind_;
}

std::vector<scheduler::key> scheduler::start_what_can() {
  std::vector<key> started;
  while (!stopped_ && !ready_.empty() && running_.size() < slots_) {
    running_.emplace(ready_.front().first, std::move(ready_.front().second));
    started.push_back(ready_.front().first);
    ready_.pop_front();
  }
  return started;
}

std::vector<scheduler::key> scheduler::finished(key job) {
  auto it = running_.find(job);
  if (it == running_.end()) return {};
  const std::string jname = std::move(it->second);
  running_.erase(it);
  release_jname(jname);
  return start_what_can();
}

std::vector<scheduler::key> scheduler::withdraw(key job) {
  if (running_.count(job)) return finished(job);
  auto ready = std::find_if(ready_.begin(), ready_.end(), [job](const auto& r) { return r.first == job; });
  if (ready != ready_.end()) {
    const std::string jname = std::move(ready->second);
    ready_.erase(ready);
    release_jname(jname);
    return start_what_can();
  }
  for (auto& [jname, behind] : holders_) {
    auto it = std::find(behind.begin(), behind.end(), job);
    if (it == behind.end()) continue;
    behind.erase(it);
    --waiting_behind_;
    break;
  }
  return {};
}

bool scheduler::room(const std::string& jname) const {
  if (!jname.empty() && busy(jname)) return waiting_behind_ < max_waiting_;
  return running_.size() + ready_.size() < slots_;
}

bool scheduler::may_wait(const std::string& jname) const {
  return jname.empty() || !busy(jname) || waiting_behind_ < max_waiting_;
}

std::size_t scheduler::free_slots() const {
  const std::size_t claimed = running_.size() + ready_.size();
  return claimed < slots_ ? slots_ - claimed : 0;
}

std::optional<scheduler::placement> scheduler::where(key job) const {
  if (running_.count(job)) return placement::runs;
  if (std::any_of(ready_.begin(), ready_.end(), [job](const auto& r) { return r.first == job; }))
    return placement::waits_for_slot;
  for (const auto& [jname, behind] : holders_)
    if (std::find(behind.begin(), behind.end(), job) != behind.end()) return placement::waits_for_jname;
  return std::nullopt;
}

} // namespace bs_router
