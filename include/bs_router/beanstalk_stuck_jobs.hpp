#pragma once
// Jobs of the pool's tube that the broker keeps reserved for a connection
// that is not the router's, found with the broker's inspection commands.
//
// Why they matter: beanstalkd (1.12, and upstream to this day) can fail to
// give a reserved job back at its TTR. Its timer for the reserving
// connection may fire in the very microsecond of the job's deadline; then
// conn_timeout() (prot.c) finds the deadline not yet passed ("deadline_at >=
// now") and schedules no further timer for that connection, so the job
// stays reserved until that connection sends a command or closes. A
// connection the router dropped for silence (a network partition ate its
// reserve's answer) does neither while the broker believes it open: the job
// would never run. stats-job shows such a job with a negative time-left.
//
// The broker lists no reserved jobs, so they are looked for by id, from the
// newest id down (a job put and then reserved while the router's connection
// was silent is among the newest), until stats-tube's count of reserved
// jobs is accounted for or a bound is reached.

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bs_router/beanstalk_connection.hpp"

namespace bs_router {

struct reserved_elsewhere {
  std::uint64_t id = 0;
  std::int64_t ttr = 0;       // seconds
  std::int64_t time_left = 0; // seconds to its TTR; negative: passed, and the broker kept it
};

// How many ids below the newest one the search looks at, at most.
constexpr std::uint64_t reserved_search_limit = 100000;

// The tube the newest id is learnt from: a job is put there and deleted at once.
constexpr const char* id_probe_tube = "bs_router_probe";

// The reserved jobs of `tube` that `known` does not claim, with their TTR
// and time left. Uses `conn` for a put and delete on id_probe_tube, then
// stats-tube and stats-job. Throws on connection failures.
boost::asio::awaitable<std::vector<reserved_elsewhere>> find_reserved_elsewhere(
    beanstalk::connection& conn, const std::string& tube, const std::function<bool(std::uint64_t)>& known);

// The broker kept it reserved at least a second past its TTR: the broker
// failed to give it back, whoever reserved it.
inline bool kept_past_ttr(const reserved_elsewhere& job) { return job.time_left < 0; }

} // namespace bs_router
