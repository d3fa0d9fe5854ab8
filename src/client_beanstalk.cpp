// bs_router-client over beanstalkd: puts the job on the pool's tube and
// reserves its replies from <reply_tube_prefix><job id>.

#include "bs_router/client_session.hpp"

#include <utility>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>

#include "bs_router/async_event.hpp"
#include "bs_router/beanstalk_connection.hpp"

namespace bs_router {

namespace asio = boost::asio;

asio::awaitable<void> run_beanstalk_client(client_session& s) {
  const auto& b = s.cfg.beanstalkd;
  const auto ex = co_await asio::this_coro::executor;
  beanstalk::connection conn(ex);
  asio::steady_timer pause(ex);
  s.on_timeout = [&] {
    conn.close();
    pause.cancel();
  };
  struct forget {
    client_session& s;
    ~forget() { s.on_timeout = nullptr; }
  } forget_on_exit{s};

  // How far the job got, for the message when the time runs out.
  enum class stage { before_put, put_sent, waiting } at = stage::before_put;
  std::uint64_t id = 0;
  std::string reply_tube;
  auto report_timeout = [&] {
    std::ostringstream what;
    what << *s.options.timeout;
    switch (at) {
      case stage::before_put:
        s.timed_out_with("the broker at " + b.uri + " did not answer within " + what.str() +
                         " s; the job was not put");
        break;
      case stage::put_sent:
        s.timed_out_with("the broker at " + b.uri + " did not confirm the job within " + what.str() +
                         " s; it may have been put, and then runs anyway");
        break;
      case stage::waiting:
        s.timed_out_with("no final reply to job " + std::to_string(id) + " on " + reply_tube + " within " +
                         what.str() + " s");
        break;
    }
  };

  try {
    co_await conn.connect(b.host, b.port, s.connect_within());
    co_await conn.use(b.tube);
    at = stage::put_sent;
    id = co_await conn.put(0, 0, static_cast<std::uint32_t>(b.publish_timeout), s.options.body);
  } catch (const boost::system::system_error& e) {
    if (s.out_of_time()) {
      report_timeout();
      co_return;
    }
    s.err << "bs_router-client: cannot put the job on " << b.uri << " tube " << b.tube << ": "
          << e.code().message() << "\n";
    s.status = client_exit::unavailable;
    co_return;
  }
  at = stage::waiting;
  reply_tube = b.reply_tube_prefix + std::to_string(id);
  const std::chrono::seconds wait(std::max(1, b.reserve_timeout));
  bool watching = false;
  for (;;) {
    if (s.out_of_time()) {
      report_timeout();
      co_return;
    }
    bool failed = false;
    try {
      if (!conn.is_open()) {
        co_await conn.connect(b.host, b.port, s.connect_within());
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
      if (s.handle_reply(reply->body, std::to_string(id), reply_tube)) co_return;
    } catch (const boost::system::system_error& e) {
      if (s.out_of_time()) continue; // reported at the top
      // The job is in the broker; its reply will be too. Keep waiting.
      conn.close();
      s.err << "bs_router-client: " << b.uri << ": " << e.code().message() << "; retrying\n";
      failed = true;
    }
    if (failed) co_await sleep_on(pause, client_retry_pause);
  }
}

} // namespace bs_router
