// bs_router: one per CBSD pool. main only wires the parts together.

#include <utility> // before Asio: its awaitable.hpp needs std::exchange under g++ 12
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <cstdio>
#include <iostream>

#include <sys/stat.h>

#include "bs_router/command_line.hpp"
#include "bs_router/config.hpp"
#include "bs_router/escape.hpp"
#include "bs_router/journal.hpp"
#include "bs_router/logging.hpp"
#include "bs_router/pool_lock.hpp"
#include "bs_router/router.hpp"
#include "bs_router/safe_files.hpp"

namespace {
constexpr int exit_config = 78; // EX_CONFIG of sysexits(3)
constexpr int exit_failure = 1;
} // namespace

int main(int argc, char** argv) {
  // Nothing the router creates is writable by group or others, whatever mask
  // it was started with. Not stricter: cbsd inherits it, and CBSD expects
  // the usual 022 for what it creates in jails.
  ::umask(::umask(0) | 022);

  auto parsed = bs_router::parse_router_command_line(argc, argv);
  if (!parsed.options) {
    (parsed.output_is_error ? std::cerr : std::cout) << parsed.output;
    return parsed.exit_code;
  }
  const bs_router::router_options& options = *parsed.options;

  bs_router::config cfg;
  try {
    cfg = bs_router::load_config(options.config_path, {options.cbsdenv, options.broker});
    bs_router::check_workspace(cfg);
  } catch (const bs_router::config_error& ex) {
    std::cerr << "bs_router: " << ex.what() << "\n";
    return exit_config;
  }
  try {
    bs_router::check_log_file(cfg.logfile);
  } catch (const std::exception& ex) {
    std::cerr << "bs_router: " << cfg.source << ": logfile: " << ex.what() << "\n";
    return exit_config;
  }
  for (const std::string& w : cfg.warnings) std::cerr << "bs_router: warning: " << w << "\n";
  if (options.check_only) {
    // What a start would refuse, said before daemon(8) restarts it in a
    // loop; nothing is created.
    try {
      bs_router::open_existing_private_directory(cfg.statedir);
      bs_router::open_existing_private_directory(cfg.logdir());
    } catch (const std::exception& ex) {
      std::cerr << "bs_router: " << cfg.cbsdenv << ": " << ex.what() << "\n";
      return exit_failure;
    }
    std::cout << options.config_path << ": ok\n";
    return 0;
  }
  if (options.list_journal) {
    // Reads only: safe while the pool's router runs.
    try {
      std::cout << bs_router::journal_listing(bs_router::journal::inspect(cfg.statedir));
    } catch (const std::exception& ex) {
      std::cerr << "bs_router: " << cfg.statedir << ": " << ex.what() << "\n";
      return exit_failure;
    }
    return 0;
  }

  // Before the log is opened: a second router must not write into the
  // first one's log, only say who serves the pool.
  // The statedir is opened once, checked on its descriptor, and every file
  // in it is opened relative to that: its path may sit in a directory that
  // CBSD's own user can write in (<cbsdenv>/.bs_router), and what is renamed
  // or planted there afterwards is never followed.
  bs_router::directory statedir;
  std::unique_ptr<bs_router::pool_lock> lock;
  try {
    statedir = bs_router::open_state_directory(cfg.statedir);
    lock = std::make_unique<bs_router::pool_lock>(statedir);
  } catch (const std::exception& ex) {
    std::cerr << "bs_router: " << cfg.cbsdenv << ": " << ex.what() << "\n";
    return exit_failure;
  }

  std::shared_ptr<spdlog::logger> log;
  try {
    log = bs_router::make_file_logger("bs_router", cfg.logfile);
  } catch (const std::exception& ex) {
    std::cerr << "bs_router: " << cfg.source << ": logfile: " << ex.what() << "\n";
    return exit_config;
  }
  for (const std::string& w : cfg.warnings) log->warn("{}", w);

  // Writes to a socket the broker closed must fail, not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);

  boost::asio::io_context io(1);
  try {
    bs_router::router router(io, cfg, log, std::move(statedir));
    boost::asio::signal_set stop_signals(io, SIGTERM, SIGINT);
    boost::asio::signal_set hup(io, SIGHUP);
    std::function<void(boost::system::error_code, int)> on_stop = [&](boost::system::error_code ec, int sig) {
      if (ec) return;
      log->info("signal {}: draining", sig);
      router.request_stop();
      stop_signals.async_wait(on_stop);
    };
    std::function<void(boost::system::error_code, int)> on_hup = [&](boost::system::error_code ec, int) {
      if (ec) return;
      const std::vector<std::string> problems = bs_router::reopen_log_files();
      if (problems.empty()) log->info("SIGHUP: log file reopened");
      for (const std::string& problem : problems)
        log->error("SIGHUP: log file not reopened: {}; still writing to the file opened before", problem);
      hup.async_wait(on_hup);
    };
    stop_signals.async_wait(on_stop);
    hup.async_wait(on_hup);

    log->info("bs_router {} starting for pool {} (config {})", BS_ROUTER_VERSION, cfg.cbsdenv, cfg.source);
    router.start([&] { io.stop(); });
    io.run();
  } catch (const std::exception& ex) {
    // What stopped the router may quote a job or the broker.
    log->critical("{}", bs_router::loggable(ex.what()));
    std::cerr << "bs_router: " << bs_router::loggable(ex.what()) << "\n";
    return exit_failure;
  }
  log->info("exiting");
  return 0;
}
