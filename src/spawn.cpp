#include "bs_router/spawn.hpp"

#include <boost/asio/co_spawn.hpp>

namespace bs_router {

std::function<void(std::exception_ptr)> report_failure(failure_report report, std::string what,
                                                       std::function<void()> on_failure) {
  return [report = std::move(report), what = std::move(what),
          on_failure = std::move(on_failure)](std::exception_ptr ep) {
    if (!ep) return;
    std::string why = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      why = ex.what();
    } catch (...) {
    }
    if (report) report(what, why);
    if (on_failure) on_failure();
  };
}

void spawn_reported(const boost::asio::any_io_executor& executor, boost::asio::awaitable<void> work,
                    failure_report report, std::string what) {
  boost::asio::co_spawn(executor, std::move(work), report_failure(std::move(report), std::move(what)));
}

} // namespace bs_router
