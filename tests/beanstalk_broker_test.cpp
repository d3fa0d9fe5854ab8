// The beanstalkd adapter (beanstalk_broker) against a scripted peer: exact
// bytes out, canned bytes in. What the router relies on: failures name the
// operation, a hold answers per job, a reply shrinks until the broker takes
// it, and the job is deleted once its reply is out.
#include "bs_router/beanstalk_broker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "support/wire_script.hpp"
#include "support/run_coroutine.hpp"

namespace bs_router {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::wire_script;

void run(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  ASSERT_TRUE(bs_router::testing::run_coroutine(io, std::move(body), 60s)) << "coroutine did not finish";
}

// The answer to `stats` that connect() reads: the broker's limit and version.
std::string stats_answer(std::size_t max_job_size) {
  const std::string yaml = "---\nversion: \"1.12\"\nmax-job-size: " + std::to_string(max_job_size) + "\n";
  return "OK " + std::to_string(yaml.size()) + "\r\n" + yaml + "\r\n";
}

struct adapter {
  explicit adapter(const wire_script& peer) {
    cfg.beanstalkd.uri = "127.0.0.1:" + std::to_string(peer.port());
    cfg.beanstalkd.host = "127.0.0.1";
    cfg.beanstalkd.port = peer.port();
    cfg.beanstalkd.tube = "pool";
    cfg.beanstalkd.reply_tube_prefix = "r";
    cfg.beanstalkd.reconnect_timeout = 1;
    cfg.beanstalkd.publish_timeout = 7;
    broker = std::make_unique<beanstalk_broker>(io.get_executor(), cfg, counters,
                                                std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_st>()));
  }
  asio::io_context io;
  config cfg;
  metrics counters;
  std::unique_ptr<beanstalk_broker> broker;
};

journal_entry entry_of(const std::string& id) {
  journal_entry e;
  e.broker_id = id;
  return e;
}

// A reply the broker refuses as too big is made again with half the budget,
// until it fits; then the job is deleted.
TEST(BeanstalkBroker, AReplyTooBigIsShrunkUntilTheBrokerTakesItThenTheJobIsDeleted) {
  const std::string big(3000, 'a'), smaller(1500, 'a');
  wire_script peer({wire_script::expect("stats\r\n"), wire_script::send(stats_answer(4002)),
                    wire_script::expect("use r42\r\n"), wire_script::send("USING r42\r\n"),
                    wire_script::expect("put 1 0 7 3000\r\n" + big + "\r\n"), wire_script::send("JOB_TOO_BIG\r\n"),
                    wire_script::expect("put 1 0 7 1500\r\n" + smaller + "\r\n"), wire_script::send("INSERTED 5\r\n"),
                    wire_script::expect("delete 42\r\n"), wire_script::send("DELETED\r\n")});
  adapter a(peer);
  std::vector<std::size_t> budgets;
  run(a.io, [&]() -> asio::awaitable<void> {
    reply_sink& sink = a.broker->sink();
    co_await sink.open();
    EXPECT_EQ(sink.budget(), 4000u); // max-job-size less the 2 bytes the binlog needs
    const journal_entry e = entry_of("42");
    bool ready_awaited = false;
    const reply_sink::body_maker body = [&](std::size_t budget) {
      budgets.push_back(budget);
      return std::string(std::min<std::size_t>(budget * 3 / 4, 3000), 'a');
    };
    const reply_sink::before_put ready = [&]() -> asio::awaitable<void> {
      ready_awaited = true;
      co_return;
    };
    co_await sink.put(e, body, ready);
    EXPECT_TRUE(ready_awaited);
    EXPECT_TRUE(co_await sink.finish(e));
  });
  EXPECT_EQ(budgets, (std::vector<std::size_t>{4000, 2000}));
  EXPECT_EQ(peer.mismatch(), "");
}

// A hold is a pipelined bury: NOT_FOUND in the middle is that job's answer
// (not held), the others are held.
TEST(BeanstalkBroker, AHoldAnswersPerJob) {
  wire_script peer({wire_script::expect("stats\r\n"), wire_script::send(stats_answer(65535)),
                    wire_script::expect("watch pool\r\n"), wire_script::send("WATCHING 2\r\n"),
                    wire_script::expect("ignore default\r\n"), wire_script::send("WATCHING 1\r\n"),
                    wire_script::expect("bury 11 0\r\nbury 12 0\r\nbury 13 0\r\n"),
                    wire_script::send("BURIED\r\nNOT_FOUND\r\nBURIED\r\n")});
  adapter a(peer);
  std::vector<broker_job> jobs(3);
  for (std::size_t i = 0; i < jobs.size(); ++i) jobs[i].handle = 11 + i;
  const std::vector<const broker_job*> handles{&jobs[0], &jobs[1], &jobs[2]};
  run(a.io, [&]() -> asio::awaitable<void> {
    co_await a.broker->open();
    const std::vector<bool> held = co_await a.broker->hold(handles);
    EXPECT_EQ(held, (std::vector<bool>{true, false, true}));
  });
  EXPECT_EQ(peer.mismatch(), "");
  a.broker->stop();
  a.io.run_for(1s);
}

// A connection lost before the bury's answer: the hold fails as "bury", so
// the log can say which operation failed.
TEST(BeanstalkBroker, AFailureNamesTheOperation) {
  wire_script peer({wire_script::expect("stats\r\n"), wire_script::send(stats_answer(65535)),
                    wire_script::expect("watch pool\r\n"), wire_script::send("WATCHING 2\r\n"),
                    wire_script::expect("ignore default\r\n"), wire_script::send("WATCHING 1\r\n"),
                    wire_script::expect("bury 11 0\r\n"), wire_script::hang_up()});
  adapter a(peer);
  std::string op, text;
  broker_job job;
  job.handle = 11;
  const std::vector<const broker_job*> handles{&job};
  run(a.io, [&]() -> asio::awaitable<void> {
    co_await a.broker->open();
    try {
      co_await a.broker->hold(handles);
    } catch (const broker_error& ex) {
      op = ex.op();
      text = ex.what();
    }
  });
  EXPECT_EQ(op, "bury");
  EXPECT_EQ(text.rfind("bury: ", 0), 0u) << text;
  a.broker->stop();
  a.io.run_for(1s);
}

// A job taken over from another connection is not the worker's to bury: it
// counts as held without a word to the broker.
TEST(BeanstalkBroker, AJobTakenOverIsHeldWithoutABury) {
  wire_script peer({wire_script::expect("stats\r\n"), wire_script::send(stats_answer(65535)),
                    wire_script::expect("watch pool\r\n"), wire_script::send("WATCHING 2\r\n"),
                    wire_script::expect("ignore default\r\n"), wire_script::send("WATCHING 1\r\n"),
                    wire_script::expect("bury 12 0\r\n"), wire_script::send("BURIED\r\n")});
  adapter a(peer);
  std::vector<broker_job> jobs(2);
  jobs[0].handle = 11;
  jobs[0].taken_over = true;
  jobs[1].handle = 12;
  const std::vector<const broker_job*> handles{&jobs[0], &jobs[1]};
  run(a.io, [&]() -> asio::awaitable<void> {
    co_await a.broker->open();
    const std::vector<bool> held = co_await a.broker->hold(handles);
    EXPECT_EQ(held, (std::vector<bool>{true, true}));
  });
  EXPECT_EQ(peer.mismatch(), "");
  EXPECT_EQ(peer.received().find("bury 11"), std::string::npos);
  a.broker->stop();
  a.io.run_for(1s);
}

} // namespace
} // namespace bs_router
