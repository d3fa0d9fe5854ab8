#pragma once
// A wake-up for coroutines on one strand: wait() suspends until notify().
// Waiters re-check their condition after waking, and the loop is single
// threaded, so a notify with nobody waiting needs no memory.

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace bs_router {

class async_event {
 public:
  explicit async_event(const boost::asio::any_io_executor& executor)
      : timer_(executor, boost::asio::steady_timer::time_point::max()) {}

  boost::asio::awaitable<void> wait() {
    boost::system::error_code ignored; // cancellation is the wake-up
    co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ignored));
  }

  void notify() { timer_.cancel(); }

 private:
  boost::asio::steady_timer timer_;
};

// Sleeps for `d`, or less if `timer` is cancelled (used to cut waits short on
// shutdown).
inline boost::asio::awaitable<void> sleep_on(boost::asio::steady_timer& timer,
                                             boost::asio::steady_timer::duration d) {
  timer.expires_after(d);
  boost::system::error_code ignored;
  co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ignored));
}

} // namespace bs_router
