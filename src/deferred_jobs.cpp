#include "bs_router/deferred_jobs.hpp"

#include <algorithm>

namespace bs_router {

bool deferred_jobs::remember(const std::string& jname, const std::string& id) {
  std::deque<std::string>& line = lines_[jname];
  if (std::find(line.begin(), line.end(), id) != line.end()) return false;
  line.push_back(id);
  ++count_;
  return true;
}

bool deferred_jobs::contains(const std::string& id) const {
  return std::any_of(lines_.begin(), lines_.end(), [&id](const auto& line) {
    return std::find(line.second.begin(), line.second.end(), id) != line.second.end();
  });
}

const std::string* deferred_jobs::first(const std::string& jname) const {
  auto line = lines_.find(jname);
  return line == lines_.end() ? nullptr : &line->second.front();
}

void deferred_jobs::pop_first(const std::string& jname) {
  auto line = lines_.find(jname);
  if (line == lines_.end()) return;
  line->second.pop_front();
  --count_;
  if (line->second.empty()) lines_.erase(line);
}

const std::string* deferred_jobs::next_turn(const std::function<bool(const std::string&)>& room) {
  auto start = lines_.upper_bound(last_turn_);
  auto pick = [&](auto from, auto to) -> const std::string* {
    for (auto it = from; it != to; ++it)
      if (room(it->first)) {
        last_turn_ = it->first;
        return &it->first;
      }
    return nullptr;
  };
  if (const std::string* jname = pick(start, lines_.end())) return jname;
  return pick(lines_.begin(), start);
}

void deferred_jobs::clear() {
  lines_.clear();
  count_ = 0;
}

} // namespace bs_router
