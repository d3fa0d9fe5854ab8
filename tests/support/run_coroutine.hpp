#pragma once
// Runs one coroutine on an io_context to its end, within a bound, for tests
// (and the benchmark) that drive the router's parts directly: a coroutine
// that never finishes fails its caller instead of hanging it.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <functional>

namespace bs_router::testing {

// False when `body` did not finish within `limit`; rethrows what it threw.
inline bool run_coroutine(boost::asio::io_context& io, std::function<boost::asio::awaitable<void>()> body,
                          std::chrono::seconds limit) {
  std::exception_ptr failure;
  bool finished = false;
  boost::asio::co_spawn(io, body(), [&](std::exception_ptr ep) {
    failure = ep;
    finished = true;
  });
  io.restart();
  io.run_for(limit);
  io.restart();
  if (failure) std::rethrow_exception(failure);
  return finished;
}

} // namespace bs_router::testing
