#include "bs_router/client.hpp"

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>

#include <nlohmann/json.hpp>

#include "bs_router/async_event.hpp"
#include "bs_router/beanstalk_connection.hpp"
#include "bs_router/config.hpp"
#include "bs_router/signature.hpp"

namespace bs_router {

namespace asio = boost::asio;
using namespace std::chrono_literals;

int exit_status_for(long long err_code) {
  if (err_code >= 0 && err_code <= 255) return static_cast<int>(err_code);
  return client_exit::router_error;
}

reply_reading read_reply(std::string_view body) {
  reply_reading r;
  nlohmann::json parsed = nlohmann::json::parse(body, nullptr, false);
  if (!parsed.is_object()) {
    r.problem = "it is not a JSON object";
    return r;
  }
  auto field = parsed.find("Progress");
  if (field == parsed.end()) {
    r.problem = "it has no Progress";
    return r;
  }
  if (!field->is_number()) {
    r.problem = "its Progress is not a number";
    return r;
  }
  const double progress = field->get<double>();
  if (!(progress >= 0 && progress <= 100)) {
    r.problem = "its Progress is not between 0 and 100";
    return r;
  }
  field = parsed.find("Message");
  if (field == parsed.end()) {
    r.problem = "it has no Message";
    return r;
  }
  if (!field->is_string()) {
    r.problem = "its Message is not a string";
    return r;
  }
  r.message = field->get<std::string>();
  field = parsed.find("ErrCode");
  if (field != parsed.end()) {
    // An unsigned number too large for long long is an integer, but no
    // ErrCode anyone sends.
    if (!field->is_number_integer() ||
        (field->is_number_unsigned() &&
         field->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<long long>::max()))) {
      r.problem = "its ErrCode is not an integer";
      return r;
    }
    r.err_code = field->get<long long>();
  } else if (progress == 100) {
    r.problem = "it has no ErrCode";
    return r;
  }
  r.what = progress == 100 ? reply_reading::kind::final_reply : reply_reading::kind::progress;
  r.reply = std::move(parsed);
  return r;
}

namespace {

using clock = std::chrono::steady_clock;
using boost::system::error_code;

// The time a broker gets to accept the connection; a --timeout that ends
// sooner cuts it short.
constexpr clock::duration connect_deadline = 10s;
// Between attempts to reach the broker again while waiting for the reply.
constexpr clock::duration retry_pause = 1s;

struct client_run {
  client_run(const asio::any_io_executor& ex, const client_options& o, const config& c,
             std::ostream& so, std::ostream& se)
      : options(o), cfg(c), out(so), err(se), conn(ex), pause(ex), give_up(ex) {}

  const client_options& options;
  const config& cfg;
  std::ostream& out;
  std::ostream& err;
  int status = client_exit::unavailable;
  std::string shown; // live output printed so far

  beanstalk::connection conn;
  asio::steady_timer pause;
  // --timeout: one timer for the whole run. When it fires it closes the
  // connection, which ends whatever the broker was asked (a silent broker
  // included), and cuts the pause between retries short.
  asio::steady_timer give_up;
  bool timed_out = false;

  // How far the job got, for the message when the time runs out.
  enum class stage { before_put, put_sent, waiting } at = stage::before_put;
  std::uint64_t id = 0;
  std::string reply_tube;

  void start_clock() {
    if (!options.timeout) return;
    give_up.expires_after(std::chrono::duration_cast<clock::duration>(
        std::chrono::duration<double>(*options.timeout)));
    give_up.async_wait([this](error_code ec) {
      if (ec) return; // cancelled: the run ended in time
      timed_out = true;
      conn.close();
      pause.cancel();
    });
  }
  void stop_clock() { give_up.cancel(); }
  // Also true in the instant between the expiry and the timer's handler,
  // when a deadline of the connection cut short by connect_within() may
  // already have failed an operation.
  bool out_of_time() const {
    return timed_out || (options.timeout && clock::now() >= give_up.expiry());
  }

  clock::duration connect_within() const {
    if (!options.timeout) return connect_deadline;
    return std::min(connect_deadline, std::max(clock::duration::zero(), give_up.expiry() - clock::now()));
  }

  void report_timeout() {
    const auto& b = cfg.beanstalkd;
    err << "bs_router-client: ";
    switch (at) {
      case stage::before_put:
        err << "the broker at " << b.uri << " did not answer within " << *options.timeout
            << " s; the job was not put\n";
        break;
      case stage::put_sent:
        err << "the broker at " << b.uri << " did not confirm the job within " << *options.timeout
            << " s; it may have been put, and then runs anyway\n";
        break;
      case stage::waiting:
        err << "no final reply to job " << id << " on " << reply_tube << " within "
            << *options.timeout << " s\n";
        break;
    }
    status = client_exit::timed_out;
  }

  // Signing: the key the job was signed with; only replies signed with it
  // for this job count.
  std::string key_id, key;

  // Prints one reply; true when it was the final one.
  bool handle_reply(const std::string& body) {
    std::string_view payload = body;
    if (!key.empty()) {
      std::string problem;
      std::optional<std::string_view> opened = open_reply(body, key_id, key, std::to_string(id), &problem);
      if (!opened) {
        err << "bs_router-client: ignoring a forged reply on " << reply_tube << ": " << problem
            << "; still waiting for the final reply\n";
        return false;
      }
      payload = *opened;
    }
    reply_reading reply = read_reply(payload);
    if (reply.what == reply_reading::kind::malformed) {
      err << "bs_router-client: ignoring a malformed reply on " << reply_tube << ": "
          << reply.problem << "; still waiting for the final reply\n";
      return false;
    }
    if (reply.what == reply_reading::kind::progress) {
      if (!options.quiet_progress && !options.json) {
        out << reply.message << std::flush;
        shown += reply.message;
      }
      return false;
    }
    const std::string& message = reply.message;
    if (options.json)
      out << reply.reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    else if (!shown.empty() && message.compare(0, shown.size(), shown) == 0)
      out << message.substr(shown.size()); // the live output already showed its beginning
    else
      out << message;
    out.flush();
    status = exit_status_for(reply.err_code);
    if (reply.err_code != 0 && status != reply.err_code)
      err << "bs_router-client: ErrCode " << reply.err_code << "\n";
    return true;
  }

  asio::awaitable<void> run() {
    const auto& b = cfg.beanstalkd;
    try {
      co_await conn.connect(b.host, b.port, connect_within());
      co_await conn.use(b.tube);
      at = stage::put_sent;
      id = co_await conn.put(0, 0, static_cast<std::uint32_t>(b.publish_timeout), options.body);
    } catch (const boost::system::system_error& e) {
      if (out_of_time()) {
        report_timeout();
        co_return;
      }
      err << "bs_router-client: cannot put the job on " << b.uri << " tube " << b.tube << ": "
          << e.code().message() << "\n";
      status = client_exit::unavailable;
      co_return;
    }
    at = stage::waiting;
    reply_tube = b.reply_tube_prefix + std::to_string(id);
    const std::chrono::seconds wait(std::max(1, b.reserve_timeout));
    bool watching = false;
    for (;;) {
      if (out_of_time()) {
        report_timeout();
        co_return;
      }
      bool failed = false;
      try {
        if (!conn.is_open()) {
          co_await conn.connect(b.host, b.port, connect_within());
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
        if (out_of_time()) continue; // reported at the top
        // The job is in the broker; its reply will be too. Keep waiting.
        conn.close();
        err << "bs_router-client: " << b.uri << ": " << e.code().message() << "; retrying\n";
        failed = true;
      }
      if (failed) co_await sleep_on(pause, retry_pause);
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
  if (cfg.uses_rabbitmq()) {
    // The AMQP client (rabbitmq_broker.hpp) is not wired into this program yet.
    err << "bs_router-client: " << cfg.source << ": broker: rabbitmq is not served by this build yet\n";
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
  // The key: --key-file, or a key of the config's job_keys (--key-id, or
  // the config's client_key).
  std::string key_id = !opts.key_id.empty() ? opts.key_id : cfg.client_key;
  std::string key;
  if (!key_id.empty()) {
    try {
      if (!opts.key_file.empty()) {
        key = load_key_file(opts.key_file);
      } else if (!cfg.job_key_files.count(key_id)) {
        err << "bs_router-client: " << cfg.source << ": job_keys has no key \"" << key_id << "\"\n";
        return client_exit::config;
      } else {
        load_job_keys(cfg, key_id);
        key = cfg.job_keys.at(key_id);
      }
    } catch (const std::exception& ex) {
      err << "bs_router-client: " << ex.what() << "\n";
      return client_exit::config;
    }
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    opts.body = sign_job(key_id, key, now + opts.lifetime, opts.body);
  }
  asio::io_context io(1);
  client_run run(io.get_executor(), opts, cfg, out, err);
  run.key_id = key_id;
  run.key = key;
  std::exception_ptr failure;
  run.start_clock();
  asio::co_spawn(io, run.run(), [&](std::exception_ptr ep) {
    failure = ep;
    run.stop_clock();
  });
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
