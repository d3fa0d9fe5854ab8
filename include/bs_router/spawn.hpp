#pragma once
// Starting a coroutine whose failure is never lost. co_spawn with `detached`
// drops an exception silently: the coroutine is gone and nothing says so
// (progress replies that stop, a prune that never runs again).

#include <utility> // before Asio: awaitable.hpp uses std::exchange without it
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <exception>
#include <functional>
#include <string>

namespace bs_router {

// Called with what died and why, e.g. ("job 7 live output", "std::bad_alloc").
using failure_report = std::function<void(const std::string& what, const std::string& why)>;

// The completion handler for co_spawn: on an exception, report(what, its
// text), then on_failure() if given. Does nothing when the coroutine returned.
std::function<void(std::exception_ptr)> report_failure(failure_report report, std::string what,
                                                       std::function<void()> on_failure = {});

// co_spawn(executor, work, report_failure(report, what)).
void spawn_reported(const boost::asio::any_io_executor& executor, boost::asio::awaitable<void> work,
                    failure_report report, std::string what);

} // namespace bs_router
