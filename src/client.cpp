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

#include "bs_router/client_session.hpp"
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
// The time a broker gets to accept the connection; a --timeout that ends
// sooner cuts it short.
constexpr client_session::clock::duration connect_deadline = 10s;
} // namespace

void client_session::start_clock() {
  if (!options.timeout) return;
  give_up_.expires_after(std::chrono::duration_cast<clock::duration>(
      std::chrono::duration<double>(*options.timeout)));
  give_up_.async_wait([this](boost::system::error_code ec) {
    if (ec) return; // cancelled: the run ended in time
    timed_out_ = true;
    if (on_timeout) on_timeout();
  });
}

void client_session::stop_clock() { give_up_.cancel(); }

bool client_session::out_of_time() const {
  return timed_out_ || (options.timeout && clock::now() >= give_up_.expiry());
}

client_session::clock::duration client_session::connect_within() const {
  if (!options.timeout) return connect_deadline;
  return std::min<clock::duration>(connect_deadline,
                                   std::max(clock::duration::zero(), give_up_.expiry() - clock::now()));
}

void client_session::timed_out_with(const std::string& what) {
  err << "bs_router-client: " << what << "\n";
  status = client_exit::timed_out;
}

bool client_session::handle_reply(const std::string& body, const std::string& job_id, const std::string& where) {
  std::string_view payload = body;
  if (!key.empty()) {
    std::string problem;
    std::optional<std::string_view> opened = open_reply(body, key_id, key, job_id, &problem);
    if (!opened) {
      err << "bs_router-client: ignoring a forged reply on " << where << ": " << problem
          << "; still waiting for the final reply\n";
      return false;
    }
    payload = *opened;
  }
  reply_reading reply = read_reply(payload);
  if (reply.what == reply_reading::kind::malformed) {
    err << "bs_router-client: ignoring a malformed reply on " << where << ": " << reply.problem
        << "; still waiting for the final reply\n";
    return false;
  }
  if (reply.what == reply_reading::kind::progress) {
    if (!options.quiet_progress && !options.json) {
      out << reply.message << std::flush;
      shown_ += reply.message;
    }
    return false;
  }
  const std::string& message = reply.message;
  if (options.json)
    out << reply.reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  else if (!shown_.empty() && message.compare(0, shown_.size(), shown_) == 0)
    out << message.substr(shown_.size()); // the live output already showed its beginning
  else
    out << message;
  out.flush();
  status = exit_status_for(reply.err_code);
  if (reply.err_code != 0 && status != reply.err_code)
    err << "bs_router-client: ErrCode " << reply.err_code << "\n";
  return true;
}

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
  client_session session(io.get_executor(), opts, cfg, out, err);
  session.key_id = key_id;
  session.key = key;
  std::exception_ptr failure;
  session.start_clock();
  asio::co_spawn(io, cfg.uses_rabbitmq() ? run_rabbitmq_client(session) : run_beanstalk_client(session),
                 [&](std::exception_ptr ep) {
                   failure = ep;
                   session.stop_clock();
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
  return session.status;
}

} // namespace bs_router
