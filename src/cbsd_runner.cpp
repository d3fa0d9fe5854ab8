#include "bs_router/cbsd_runner.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <unistd.h>

#include "bs_router/escape.hpp"
#include "bs_router/lookup.hpp"

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;
using namespace std::chrono_literals;

namespace {

// A look-up prints one short value; more than this is not a value anyway.
constexpr std::size_t lookup_capture_limit = 4096;
constexpr auto lookup_timeout = 60s;
// Reads of a burst come milliseconds apart; after this long without one the
// database connections are closed.
constexpr auto connections_idle_close = 10s;

// 1500 ms as "1.5", 2000 ms as "2": the exact value in the fewest digits.
std::string seconds_text(std::chrono::milliseconds ms) {
  return *render_number(std::to_string(ms.count()) + "e-3");
}

// Closes a file descriptor when the run is over, however it ends.
struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

// Tells the live output watcher that the run is over, however it ends: the
// descriptor it reads is closed right after.
struct run_over_flag {
  std::shared_ptr<bool> over = std::make_shared<bool>(false);
  ~run_over_flag() { *over = true; }
};

// One output stream of a run as the router drains it from cbsd: written into
// the job's file (capped there), and its beginning kept for the reply. Only
// what was read is held, never more than the reply can carry.
struct run_output {
  run_output(int fd, std::string path, std::uint64_t cap, std::size_t head_limit)
      : file(fd, std::move(path), cap), head_limit(head_limit) {}

  void append(std::string_view data) noexcept {
    file.append(data);
    try {
      if (head.size() < head_limit) head.append(data.substr(0, head_limit - head.size()));
    } catch (const std::exception&) {
      head_limit = head.size(); // out of memory: the reply carries what it has
    }
  }
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view data) { append(data); };
  }

  capped_output file;
  std::string head;
  std::size_t head_limit;
};

} // namespace

std::vector<std::string> cbsd_environment(const config& cfg) {
  std::vector<std::string> env = {
      "PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin",
      "workdir=" + cfg.cbsdenv,
      "cbsd_workdir=" + cfg.cbsdenv,
      "NOINTER=1",
  };
  if (!cfg.cbsdcolor) env.push_back("NOCOLOR=1");
  return env;
}

cbsd_runner::cbsd_runner(asio::io_context& io, const config& cfg, job_files& files,
                         std::shared_ptr<spdlog::logger> log)
    : io_(io), cfg_(cfg), files_(files), log_(std::move(log)), runner_(io) {
  choose_lookup_source();
}

cbsd_runner::~cbsd_runner() {
  if (!database_thread_) return;
  // The timer's wait is dropped with the thread's work; the timer itself
  // goes before the pool whose services it uses.
  database_thread_->stop();
  database_thread_->join();
  connections_idle_.reset();
  database_thread_.reset();
}

void cbsd_runner::choose_lookup_source() {
  if (cfg_.lookups == lookup_source::cbsd) {
    log_->info("Guid, DskGuid and Vnc: asked of cbsd (lookups \"cbsd\")");
    return;
  }
  auto database = std::make_unique<cbsd_database>(cfg_.cbsdenv);
  const std::optional<std::string> problem = database->check_inventory();
  if (!problem) {
    log_->info("Guid, DskGuid and Vnc: read from CBSD's databases ({})", loggable(database->inventory_path()));
    database_ = std::move(database);
  } else if (cfg_.lookups == lookup_source::database) {
    // Kept: each job reads again, and falls back to cbsd while it fails.
    log_->warn("Guid, DskGuid and Vnc: lookups \"database\", but {}; jobs ask cbsd while it is so",
               loggable(*problem));
    database_ = std::move(database);
  } else {
    log_->info("Guid, DskGuid and Vnc: asked of cbsd ({})", loggable(*problem));
  }
  if (database_) {
    database_thread_ = std::make_unique<asio::thread_pool>(1);
    connections_idle_ = std::make_unique<asio::steady_timer>(database_thread_->get_executor());
  }
}

// Runs on database_thread_ and hands the outcome back on the event loop
// (where the coroutine that waits for it resumes). Nothing but the read runs
// on that thread.
awaitable<database_read> cbsd_runner::read_database(std::string jname, bool want_vnc) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(database_read)>(
      [this, jname = std::move(jname), want_vnc](auto handler) mutable {
        asio::post(*database_thread_, [this, jname = std::move(jname), want_vnc, handler = std::move(handler)]() mutable {
          database_read read = database_->read(jname, want_vnc);
          last_read_ = std::chrono::steady_clock::now();
          if (!idle_watch_armed_) watch_idle_connections(connections_idle_close);
          asio::post(io_, [handler = std::move(handler), read = std::move(read)]() mutable {
            std::move(handler)(std::move(read));
          });
        });
      },
      asio::use_awaitable);
}

// On the database thread. Armed once, not by every read: when it fires
// before reads have stopped for connections_idle_close, it waits for the rest.
void cbsd_runner::watch_idle_connections(std::chrono::steady_clock::duration after) {
  idle_watch_armed_ = true;
  connections_idle_->expires_after(after);
  connections_idle_->async_wait([this](boost::system::error_code ec) {
    idle_watch_armed_ = false;
    if (ec) return;
    const auto idle = std::chrono::steady_clock::now() - last_read_;
    if (idle >= connections_idle_close) database_->close_connections();
    else watch_idle_connections(connections_idle_close - idle);
  });
}

awaitable<std::optional<std::string>> cbsd_runner::look_up(const std::vector<std::string>& args,
                                                           std::function<void(std::string_view)> stderr_sink) {
  process_spec spec;
  spec.argv.push_back(cfg_.cbsd_path);
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.env = cbsd_environment(cfg_);
  spec.cwd = cfg_.cbsdenv;
  spec.stderr_sink = std::move(stderr_sink);
  spec.capture_limit = lookup_capture_limit;
  spec.timeout = lookup_timeout;
  spec.kill_grace = std::chrono::seconds(cfg_.kill_grace);
  process_result result = co_await runner_.run(std::move(spec));
  if (result.start_failed || result.timed_out || result.stdout_truncated) co_return std::nullopt;
  co_return printed_value(result.exit_code, result.captured_stdout);
}

awaitable<reply> cbsd_runner::run(const job_request& request, const std::string& file_id, const std::string& what,
                                  std::size_t reply_room, const output_watch& on_output) {
  std::vector<std::string> argv = request.argv(cfg_.cbsd_path);
  files_.write_command(file_id, argv);
  fd_closer out_fd{files_.open_out(file_id)};
  fd_closer err_fd{files_.open_err(file_id)};
  // cbsd writes into pipes the router drains into the files, so that what a
  // job keeps on disk is capped as it is written, and live output reads the
  // very descriptor written to. The reply's texts are kept as they come.
  run_output out(out_fd.fd, files_.out_path(file_id), cfg_.joblog_max_output_bytes, reply_room);
  run_output err(err_fd.fd, files_.err_path(file_id), cfg_.joblog_max_output_bytes, reply_room);

  const std::chrono::milliseconds timeout = time_limit(request, cfg_.job_timeout);

  process_spec spec;
  spec.argv = std::move(argv);
  spec.env = cbsd_environment(cfg_);
  spec.cwd = cfg_.cbsdenv;
  spec.stdout_sink = out.sink();
  spec.stderr_sink = err.sink();
  spec.timeout = timeout;
  spec.kill_grace = std::chrono::seconds(cfg_.kill_grace);

  log_->info("{}: started", what);
  process_result result;
  {
    run_over_flag run_over;
    if (on_output) on_output(out_fd.fd, run_over.over);
    result = co_await runner_.run(std::move(spec));
  }

  reply r;
  std::string note;
  if (result.start_failed) {
    r.err_code = router_errcode::start_failed;
    note = "bs_router: cbsd could not be started: " + result.start_error + "\n";
  } else if (result.timed_out) {
    r.err_code = router_errcode::timed_out;
    note = "bs_router: timed out after " + seconds_text(timeout) + " s; cbsd was killed\n";
  } else if (result.term_signal != 0) {
    r.err_code = router_errcode::killed;
    note = "bs_router: cbsd was killed by signal " + std::to_string(result.term_signal) + "\n";
  } else {
    r.err_code = result.exit_code;
  }

  const std::vector<lookup> lookups = result.start_failed ? std::vector<lookup>{} : lookups_for(request);
  std::optional<lookup_values> from_database;
  if (!lookups.empty() && database_) {
    // Read once the run has ended; no other job of this jname runs meanwhile.
    // On a thread of its own: opening a database costs file system work, and
    // a read may wait out the busy timeout; the event loop keeps serving.
    database_read read = co_await read_database(*request.jname, request.command == "bstart");
    if (read.values)
      from_database = std::move(read.values);
    else if (database_problems_logged_.insert(read.problem).second)
      log_->warn("{}: Guid, DskGuid and Vnc asked of cbsd: {} ({}); logged once for this cause", what,
                 to_string(read.problem), loggable(read.detail));
  }
  if (from_database) {
    r.guid = std::move(from_database->guid);
    r.dsk_guid = std::move(from_database->dsk_guid);
    r.vnc = std::move(from_database->vnc);
  } else if (!result.start_failed) {
    std::optional<std::string> guid, dsk_guid, vnc_bind, vnc_port;
    for (const lookup& l : lookups) {
      std::optional<std::string> value = co_await look_up(l.args, err.sink());
      switch (l.field) {
        case lookup_field::guid: guid = value; break;
        case lookup_field::dsk_guid: dsk_guid = value; break;
        case lookup_field::vnc_bind: vnc_bind = value; break;
        case lookup_field::vnc_port: vnc_port = value; break;
      }
    }
    if (guid) r.guid = *guid;
    if (dsk_guid) r.dsk_guid = *dsk_guid;
    r.vnc = vnc_address(vnc_bind, vnc_port);
  }

  // The reply carries the beginnings; the files keep up to their cap.
  r.message = note + out.head;
  r.message_bytes = note.size() + out.file.received();
  r.stderr_text = std::move(err.head);
  r.stderr_bytes = err.file.received();
  r.duration_seconds = std::chrono::duration<double>(result.elapsed).count();
  for (const run_output* o : {&out, &err})
    if (!o->file.error().empty()) log_->warn("{}: {}; the rest of its output is not kept", what, o->file.error());
  try {
    files_.add_job(file_id);
  } catch (const std::exception& ex) {
    log_->warn("counting the files of {}: {}", what, loggable(ex.what()));
  }
  co_return r;
}

} // namespace bs_router
