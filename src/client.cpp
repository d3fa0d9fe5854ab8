#include "bs_router/client.hpp"

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <chrono>
#include <ostream>

#include <nlohmann/json.hpp>

#include "bs_router/async_event.hpp"
#include "bs_router/beanstalk_connection.hpp"
#include "bs_router/config.hpp"

namespace bs_router {

namespace asio = boost::asio;
using namespace std::chrono_literals;

int exit_status_for(long long err_code) {
  if (err_code >= 0 && err_code <= 255) return static_cast<int>(err_code);
  return client_exit::router_error;
}

namespace {

using clock = std::chrono::steady_clock;

struct client_run {
  client_run(const client_options& o, const config& c, std::ostream& so, std::ostream& se)
      : options(o), cfg(c), out(so), err(se) {}

  const client_options& options;
  const config& cfg;
  std::ostream& out;
  std::ostream& err;
  int status = client_exit::unavailable;
  std::string shown; // live output printed so far

  std::optional<clock::time_point> deadline() const {
    if (!options.timeout) return std::nullopt;
    return start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(*options.timeout));
  }
  clock::time_point start = clock::now();

  // Prints one reply; true when it was the final one.
  bool handle_reply(const std::string& body) {
    nlohmann::json reply = nlohmann::json::parse(body, nullptr, false);
    if (!reply.is_object()) {
      err << "bs_router-client: ignoring a reply that is not a JSON object\n";
      return false;
    }
    const int progress = reply.value("Progress", 100);
    const std::string message = reply.contains("Message") && reply["Message"].is_string()
                                    ? reply["Message"].get<std::string>()
                                    : std::string();
    if (progress < 100) {
      if (!options.quiet_progress && !options.json) {
        out << message << std::flush;
        shown += message;
      }
      return false;
    }
    long long code = 0;
    if (reply.contains("ErrCode") && reply["ErrCode"].is_number()) code = reply["ErrCode"].get<long long>();
    if (options.json)
      out << reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    else if (!shown.empty() && message.compare(0, shown.size(), shown) == 0)
      out << message.substr(shown.size()); // the live output already showed its beginning
    else
      out << message;
    out.flush();
    status = exit_status_for(code);
    if (code != 0 && status != code) err << "bs_router-client: ErrCode " << code << "\n";
    return true;
  }

  asio::awaitable<void> run() {
    auto ex = co_await asio::this_coro::executor;
    beanstalk::connection conn(ex);
    const auto& b = cfg.beanstalkd;
    std::uint64_t id = 0;
    try {
      co_await conn.connect(b.host, b.port, 10s);
      co_await conn.use(b.tube);
      id = co_await conn.put(0, 0, static_cast<std::uint32_t>(b.publish_timeout), options.body);
    } catch (const boost::system::system_error& e) {
      err << "bs_router-client: cannot put the job on " << b.uri << " tube " << b.tube << ": "
          << e.code().message() << "\n";
      status = client_exit::unavailable;
      co_return;
    }
    const std::string reply_tube = b.reply_tube_prefix + std::to_string(id);
    asio::steady_timer pause(ex);
    bool watching = false;
    for (;;) {
      auto limit = deadline();
      std::chrono::seconds wait = std::chrono::seconds(std::max(1, b.reserve_timeout));
      if (limit) {
        auto left = std::chrono::duration_cast<std::chrono::seconds>(*limit - clock::now());
        if (*limit <= clock::now()) {
          err << "bs_router-client: no final reply to job " << id << " on " << reply_tube << " within "
              << *options.timeout << " s\n";
          status = client_exit::timed_out;
          co_return;
        }
        wait = std::clamp(left, std::chrono::seconds(0), wait);
      }
      bool failed = false;
      try {
        if (!conn.is_open()) {
          co_await conn.connect(b.host, b.port, 10s);
          watching = false;
        }
        if (!watching) {
          co_await conn.watch(reply_tube);
          co_await conn.ignore("default");
          watching = true;
        }
        std::optional<beanstalk::job> reply = co_await conn.reserve_with_timeout(wait);
        if (!reply) continue;
        co_await conn.remove(reply->id);
        if (handle_reply(reply->body)) co_return;
      } catch (const boost::system::system_error& e) {
        // The job is in the broker; its reply will be too. Keep waiting.
        conn.close();
        err << "bs_router-client: " << b.uri << ": " << e.code().message() << "; retrying\n";
        failed = true;
      }
      if (failed) co_await sleep_on(pause, 1s);
    }
  }
};

} // namespace

int run_client(const client_options& options, std::ostream& out, std::ostream& err) {
  config cfg;
  try {
    cfg = load_client_config(options.config_path);
  } catch (const config_error& ex) {
    err << "bs_router-client: " << ex.what() << "\n";
    return client_exit::config;
  }
  client_options opts = options;
  if (opts.body.empty()) {
    try {
      opts.body = body_from_words(opts.command);
    } catch (const std::exception& ex) {
      err << "bs_router-client: " << ex.what() << "\n";
      return client_exit::usage;
    }
  }
  asio::io_context io(1);
  client_run run(opts, cfg, out, err);
  std::exception_ptr failure;
  asio::co_spawn(io, run.run(), [&](std::exception_ptr ep) { failure = ep; });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& ex) {
      err << "bs_router-client: " << ex.what() << "\n";
      return client_exit::router_error;
    }
  }
  return run.status;
}

} // namespace bs_router
