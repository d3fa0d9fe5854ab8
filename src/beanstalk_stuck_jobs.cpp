#include "bs_router/beanstalk_stuck_jobs.hpp"

#include <algorithm>
#include <limits>

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

// stats-job answers asked for in one write.
constexpr std::size_t search_batch = 64;

std::int64_t number_in(const beanstalk::stats_map& stats, const char* key) {
  auto it = stats.find(key);
  if (it == stats.end()) return 0;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    return 0;
  }
}

} // namespace

awaitable<std::vector<reserved_elsewhere>> find_reserved_elsewhere(
    beanstalk::connection& conn, const std::string& tube, const std::function<bool(std::uint64_t)>& known) {
  std::vector<reserved_elsewhere> found;
  std::optional<beanstalk::stats_map> tube_stats = co_await conn.stats_tube(tube);
  const std::int64_t reserved = tube_stats ? number_in(*tube_stats, "current-jobs-reserved") : 0;
  if (reserved <= 0) co_return found;

  // Every job in the broker has an id below the one a put gets now.
  co_await conn.use(id_probe_tube);
  const std::uint64_t newest =
      co_await conn.put(std::numeric_limits<std::uint32_t>::max(), 0, 1, std::string_view{});
  co_await conn.remove(newest);

  std::int64_t seen = 0;
  const std::uint64_t lowest = newest > reserved_search_limit ? newest - reserved_search_limit : 1;
  std::uint64_t next = newest - 1;
  while (next >= lowest && next > 0 && seen < reserved) {
    std::vector<std::uint64_t> ids;
    for (; ids.size() < search_batch && next >= lowest && next > 0; --next) ids.push_back(next);
    std::vector<std::optional<beanstalk::stats_map>> answers = co_await conn.stats_jobs(ids);
    for (std::size_t i = 0; i < answers.size() && i < ids.size(); ++i) {
      const auto& stats = answers[i];
      if (!stats || !stats->count("tube") || stats->at("tube") != tube) continue;
      if (!stats->count("state") || stats->at("state") != "reserved") continue;
      ++seen;
      if (known(ids[i])) continue;
      found.push_back({ids[i], number_in(*stats, "ttr"), number_in(*stats, "time-left")});
    }
  }
  co_return found;
}

} // namespace bs_router
