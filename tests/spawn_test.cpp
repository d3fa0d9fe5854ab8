// Coroutines nothing waits for: their failure is reported, never lost.

#include "bs_router/spawn.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;

asio::awaitable<void> fails() {
  throw std::runtime_error("out of room");
  co_return;
}

asio::awaitable<void> succeeds() { co_return; }

TEST(SpawnReported, AFailureIsReportedWithWhatDiedAndWhy) {
  asio::io_context io;
  std::vector<std::string> reports;
  const bs_router::failure_report report = [&](const std::string& what, const std::string& why) {
    reports.push_back(what + ": " + why);
  };
  bs_router::spawn_reported(io.get_executor(), fails(), report, "job 7 live output");
  bs_router::spawn_reported(io.get_executor(), succeeds(), report, "job 8 live output");
  io.run();
  EXPECT_EQ(reports, std::vector<std::string>{"job 7 live output: out of room"});
}

TEST(SpawnReported, OnFailureRunsAfterTheReport) {
  std::vector<std::string> events;
  auto handler = bs_router::report_failure([&](const std::string& what, const std::string&) { events.push_back(what); },
                                           "worker", [&] { events.push_back("stop"); });
  handler(nullptr);
  EXPECT_TRUE(events.empty());
  handler(std::make_exception_ptr(std::logic_error("x")));
  EXPECT_EQ(events, (std::vector<std::string>{"worker", "stop"}));
}

} // namespace
