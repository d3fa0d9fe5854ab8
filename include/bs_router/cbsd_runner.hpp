#pragma once
// Running cbsd for a job: its environment, argv, the run within its timeout,
// its output into the job's files and the reply, and the look-ups of Guid,
// DskGuid and Vnc (from CBSD's databases, or by asking cbsd). Knows no
// broker and no journal: what comes out is a reply without its JobID.

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "bs_router/cbsd_database.hpp"
#include "bs_router/config.hpp"
#include "bs_router/job.hpp"
#include "bs_router/job_files.hpp"
#include "bs_router/process.hpp"
#include "bs_router/reply.hpp"

namespace bs_router {

// The whole environment of a cbsd run (nothing else is inherited).
std::vector<std::string> cbsd_environment(const config& cfg);

class cbsd_runner {
 public:
  cbsd_runner(boost::asio::io_context& io, const config& cfg, job_files& files, std::shared_ptr<spdlog::logger> log);
  ~cbsd_runner();
  cbsd_runner(const cbsd_runner&) = delete;
  cbsd_runner& operator=(const cbsd_runner&) = delete;

  // Called once cbsd runs, with the descriptor its stdout file is written
  // through (for live output) and a flag set when the run is over: the
  // descriptor is closed right after.
  using output_watch = std::function<void(int fd, std::shared_ptr<bool> over)>;

  // Runs `request` (its files named after `file_id`; `what` names it in the
  // log) and its look-ups. Each output goes into the reply up to
  // `reply_room` bytes. Throws when the run cannot even be prepared (disk
  // full, out of descriptors).
  boost::asio::awaitable<reply> run(const job_request& request, const std::string& file_id, const std::string& what,
                                    std::size_t reply_room, const output_watch& on_output);

  // Ends every run now (shutdown_timeout passed).
  void terminate_all() { runner_.terminate_all(); }

 private:
  void choose_lookup_source();
  boost::asio::awaitable<database_read> read_database(std::string jname, bool want_vnc);
  void watch_idle_connections(std::chrono::steady_clock::duration after);
  boost::asio::awaitable<std::optional<std::string>> look_up(const std::vector<std::string>& args,
                                                             std::function<void(std::string_view)> stderr_sink);

  boost::asio::io_context& io_;
  const config& cfg_;
  job_files& files_;
  std::shared_ptr<spdlog::logger> log_;
  process_runner runner_;
  // Where Guid, DskGuid and Vnc are read (lookups): null when cbsd is asked.
  std::unique_ptr<cbsd_database> database_;
  std::set<database_problem> database_problems_logged_; // each cause of falling back, once
  // Where the databases are read (cbsd_database is used by that thread
  // alone). Stopped and joined first thing in the destructor.
  std::unique_ptr<boost::asio::thread_pool> database_thread_;
  // On database_thread_: closes the connections once reads have stopped for
  // connections_idle_close, so that an idle router keeps no file of CBSD's
  // open (removing a VM, replacing a database are then no concern).
  std::unique_ptr<boost::asio::steady_timer> connections_idle_;
  std::chrono::steady_clock::time_point last_read_; // on database_thread_ only
  bool idle_watch_armed_ = false;                   // on database_thread_ only
};

} // namespace bs_router
