// The Asio connection against a real beanstalkd.

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <functional>

#include "bs_router/beanstalk_connection.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/run_coroutine.hpp"
#include "support/scripted_broker.hpp"
#include "support/wire_script.hpp"

namespace bs_router::beanstalk {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::beanstalkd_server;

// Runs one coroutine to its end; a bug fails the test instead of hanging it.
void run(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  ASSERT_TRUE(bs_router::testing::run_coroutine(io, std::move(body), 60s)) << "coroutine did not finish";
}

boost::system::error_code error_of(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
  boost::system::error_code ec;
  EXPECT_NO_FATAL_FAILURE(run(io, [&]() -> asio::awaitable<void> {
    try {
      co_await body();
    } catch (const boost::system::system_error& e) {
      ec = e.code();
    }
  }));
  return ec;
}

TEST(BeanstalkConnection, ProducerAndWorkerRoundTrip) {
  beanstalkd_server server;
  asio::io_context io;
  connection producer(io.get_executor());
  connection worker(io.get_executor());
  const std::string body = "line one\r\nline two\r\n\0 with a NUL";
  run(io, [&]() -> asio::awaitable<void> {
    co_await producer.connect(server.host(), server.port(), 5s);
    co_await worker.connect(server.host(), server.port(), 5s);
    co_await producer.use("cbsd_test");
    EXPECT_EQ(co_await worker.watch("cbsd_test"), 2u);
    EXPECT_EQ(co_await worker.ignore("default"), 1u);
    const std::uint64_t id = co_await producer.put(7, 0, 30, body);
    auto job = co_await worker.reserve_with_timeout(5s);
    EXPECT_TRUE(job.has_value());
    if (!job) co_return;
    EXPECT_EQ(job->id, id);
    EXPECT_EQ(job->body, body);
    co_await worker.bury(id, 3);
    auto stats = co_await producer.stats_job(id);
    EXPECT_TRUE(stats.has_value());
    EXPECT_EQ(stats->at("state"), "buried");
    EXPECT_EQ(stats->at("pri"), "3");
    auto peeked = co_await producer.peek(id);
    EXPECT_TRUE(peeked && peeked->body == body);
    // Any connection may delete a buried job: the publisher does.
    EXPECT_TRUE(co_await producer.remove(id));
    EXPECT_FALSE(co_await producer.remove(id));
    EXPECT_FALSE((co_await producer.stats_job(id)).has_value());
    EXPECT_FALSE((co_await producer.peek(id)).has_value());
    auto all = co_await producer.stats();
    EXPECT_EQ(all.at("max-job-size"), "65535");
  });
}

TEST(BeanstalkConnection, ReserveTimesOutWithNothing) {
  beanstalkd_server server;
  asio::io_context io;
  connection worker(io.get_executor());
  run(io, [&]() -> asio::awaitable<void> {
    co_await worker.connect(server.host(), server.port(), 5s);
    co_await worker.watch("empty_tube");
    EXPECT_FALSE((co_await worker.reserve_with_timeout(0s)).has_value());
    EXPECT_TRUE(worker.is_open());
  });
}

// A producer that puts on `tube` and a worker that reserves from it only.
asio::awaitable<void> connect_on_tube(const beanstalkd_server& server, connection& producer, connection& worker,
                                      std::string tube) {
  co_await producer.connect(server.host(), server.port(), 5s);
  co_await worker.connect(server.host(), server.port(), 5s);
  co_await producer.use(tube);
  co_await worker.watch(tube);
  co_await worker.ignore("default");
}

// Several reserves and buries in one write each: the jobs waiting are got in
// put order, the rest of the requests answer TIMED_OUT, and each bury says
// whether that job was this connection's to bury.
TEST(BeanstalkConnection, PipelinedReservesAndBuriesAnswerEachRequest) {
  beanstalkd_server server;
  asio::io_context io;
  connection producer(io.get_executor());
  connection worker(io.get_executor());
  run(io, [&]() -> asio::awaitable<void> {
    co_await connect_on_tube(server, producer, worker, "cbsd_batch");
    std::vector<std::uint64_t> put;
    for (int i = 0; i < 3; ++i) put.push_back(co_await producer.put(0, 0, 30, "job " + std::to_string(i)));

    co_await worker.request_ready(5);
    // Other work may happen here; the answers wait in the socket.
    std::vector<job> got = co_await worker.collect_ready();
    EXPECT_EQ(got.size(), 3u);
    for (std::size_t i = 0; i < got.size() && i < put.size(); ++i) {
      EXPECT_EQ(got[i].id, put[i]);
      EXPECT_EQ(got[i].body, "job " + std::to_string(i));
    }

    const std::uint64_t not_reserved = co_await producer.put(0, 0, 30, "somebody else's");
    const std::vector<std::uint64_t> to_bury{put[0], not_reserved, put[2], put[1]};
    const std::vector<bool> buried = co_await worker.bury_each(to_bury, 0);
    const std::vector<bool> expected{true, false, true, true};
    EXPECT_EQ(buried, expected);
    // In step afterwards: the next command gets its own answer.
    auto stats = co_await worker.stats_job(put[1]);
    EXPECT_TRUE(stats && stats->at("state") == "buried");
    EXPECT_TRUE(worker.is_open());
  });
}

// With nothing ready, a reserved job whose TTR is about to run out makes the
// broker answer further reserves DEADLINE_SOON: that is no job, not an error.
TEST(BeanstalkConnection, PipelinedReservesStopShortOfADeadline) {
  beanstalkd_server server;
  asio::io_context io;
  connection producer(io.get_executor());
  connection worker(io.get_executor());
  run(io, [&]() -> asio::awaitable<void> {
    co_await connect_on_tube(server, producer, worker, "cbsd_ttr");
    const std::uint64_t first = co_await producer.put(0, 0, 1, "ttr 1");
    auto reserved = co_await worker.reserve_with_timeout(5s);
    EXPECT_TRUE(reserved && reserved->id == first);
    co_await worker.request_ready(2);
    EXPECT_TRUE((co_await worker.collect_ready()).empty());
    EXPECT_TRUE(worker.is_open());
  });
}

// Another command while pipelined answers are still unread would read the
// wrong answer: it fails and the connection is closed instead.
TEST(BeanstalkConnection, ACommandBeforeTheAnswersAreCollectedFails) {
  beanstalkd_server server;
  asio::io_context io;
  connection worker(io.get_executor());
  run(io, [&]() -> asio::awaitable<void> {
    co_await worker.connect(server.host(), server.port(), 5s);
    co_await worker.request_ready(1);
  });
  EXPECT_TRUE(error_of(io, [&]() -> asio::awaitable<void> { co_await worker.stats(); }));
  EXPECT_FALSE(worker.is_open());
}

TEST(BeanstalkConnection, ServerErrorWordsBecomeErrorCodes) {
  beanstalkd_server::options opts;
  opts.max_job_size = 100;
  beanstalkd_server server(opts);
  asio::io_context io;
  connection conn(io.get_executor());
  run(io, [&]() -> asio::awaitable<void> { co_await conn.connect(server.host(), server.port(), 5s); });
  EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.put(0, 0, 5, std::string(200, 'x')); }),
            errc::job_too_big);
  // The connection stays in step after an error word.
  run(io, [&]() -> asio::awaitable<void> { EXPECT_GT(co_await conn.put(0, 0, 5, "small"), 0u); });
  EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.ignore("default"); }), errc::not_ignored);
  EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.bury(424242, 0); }), errc::not_found);
}

// A numeric address is used as it is; a name goes through the resolver.
TEST(BeanstalkConnection, ConnectsByAddressAndByName) {
  beanstalkd_server server;
  asio::io_context io;
  for (const std::string& host : {server.host(), std::string("localhost")}) {
    connection conn(io.get_executor());
    run(io, [&]() -> asio::awaitable<void> {
      co_await conn.connect(host, server.port(), 5s);
      EXPECT_GT(co_await conn.put(0, 0, 5, "hello"), 0u) << host;
    });
  }
}

TEST(BeanstalkConnection, ASilentServerIsNoticedByTheDeadline) {
  beanstalkd_server server;
  asio::io_context io;
  connection conn(io.get_executor());
  conn.set_command_deadline(1s);
  run(io, [&]() -> asio::awaitable<void> { co_await conn.connect(server.host(), server.port(), 5s); });
  server.suspend();
  EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.reserve_with_timeout(1s); }), errc::timed_out);
  EXPECT_FALSE(conn.is_open());
  server.resume();
}

TEST(BeanstalkConnection, AKilledServerFailsTheCallAndAllowsReconnecting) {
  beanstalkd_server server;
  asio::io_context io;
  connection conn(io.get_executor());
  run(io, [&]() -> asio::awaitable<void> { co_await conn.connect(server.host(), server.port(), 5s); });
  server.kill();
  EXPECT_TRUE(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.reserve_with_timeout(5s); }));
  EXPECT_FALSE(conn.is_open());
  EXPECT_TRUE(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.connect(server.host(), server.port(), 5s); }));
  server.restart();
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.connect(server.host(), server.port(), 5s);
    EXPECT_GT(co_await conn.put(0, 0, 5, "again"), 0u);
  });
}

// A delayed job and a buried one are reserved by id; an unknown id is not.
TEST(BeanstalkConnection, ReserveJobTakesADelayedOrBuriedJobById) {
  beanstalkd_server server;
  asio::io_context io;
  connection producer(io.get_executor());
  connection worker(io.get_executor());
  run(io, [&]() -> asio::awaitable<void> {
    co_await producer.connect(server.host(), server.port(), 5s);
    co_await worker.connect(server.host(), server.port(), 5s);
    const std::uint64_t delayed = co_await producer.put(0, 600, 30, "later");
    const std::uint64_t buried = co_await producer.put(0, 0, 30, "buried");
    auto job = co_await worker.reserve_job(delayed);
    EXPECT_TRUE(job && job->id == delayed && job->body == "later");
    job = co_await worker.reserve_with_timeout(1s);
    EXPECT_TRUE(job && job->id == buried);
    co_await worker.bury(buried, 0);
    job = co_await worker.reserve_job(buried);
    EXPECT_TRUE(job && job->body == "buried");
    EXPECT_FALSE((co_await worker.reserve_job(delayed)).has_value()); // reserved already
    EXPECT_FALSE((co_await worker.reserve_job(buried + 100)).has_value());
  });
}

// A line after the answer, which nobody asked for, fails the call and
// closes the connection: it must not answer the next command.
TEST(BeanstalkConnection, LinesNobodyAskedForCloseTheConnection) {
  testing::scripted_broker broker({"", 1});
  asio::io_context io;
  connection conn(io.get_executor());
  const std::string uri = broker.uri();
  const auto port = static_cast<std::uint16_t>(std::stoi(uri.substr(uri.find(':') + 1)));
  run(io, [&]() -> asio::awaitable<void> { co_await conn.connect("127.0.0.1", port, 5s); });
  const auto ec = error_of(io, [&]() -> asio::awaitable<void> {
    // The extra line comes with the answer, or just after: then the next
    // command finds it waiting.
    for (int i = 0; i < 2; ++i) co_await conn.reserve_with_timeout(1s);
  });
  EXPECT_EQ(ec, errc::unrequested_response);
  EXPECT_FALSE(conn.is_open());
}



// Tests against a peer that plays exact bytes (tests/support/wire_script.hpp):
// every byte the connection writes is compared, and the answers are canned,
// so they show cases a real beanstalkd gives only by chance.
using testing::wire_script;

// A connection to `peer`, whose deadlines are long enough that an error
// seen is the peer's doing and never a deadline's.
void connect_to(asio::io_context& io, connection& conn, const wire_script& peer) {
  conn.set_command_deadline(60s);
  run(io, [&]() -> asio::awaitable<void> { co_await conn.connect("127.0.0.1", peer.port(), 5s); });
}

// The peer hangs up after the bury is sent, before its answer: whether the
// job was buried cannot be known. The call fails at once, not at its
// deadline, and the connection is closed, never left to read a later answer
// as this one's.
TEST(BeanstalkScripted, ABuryWhoseAnswerIsLostFailsAndClosesTheConnection) {
  wire_script peer({wire_script::expect("bury 7 3\r\n"), wire_script::hang_up()});
  asio::io_context io;
  connection conn(io.get_executor());
  connect_to(io, conn, peer);
  const auto ec = error_of(io, [&]() -> asio::awaitable<void> { co_await conn.bury(7, 3); });
  EXPECT_EQ(ec, asio::error::eof) << ec.message();
  EXPECT_FALSE(conn.is_open());
  EXPECT_EQ(peer.mismatch(), "");
  EXPECT_EQ(peer.received(), "bury 7 3\r\n");
}

// The same for a pipelined bury whose answers stop after the first.
TEST(BeanstalkScripted, PipelinedBuriesWhoseAnswersAreLostFailAndCloseTheConnection) {
  wire_script peer({wire_script::expect("bury 1 0\r\nbury 2 0\r\n"), wire_script::send("BURIED\r\n"),
                    wire_script::hang_up()});
  asio::io_context io;
  connection conn(io.get_executor());
  connect_to(io, conn, peer);
  const std::vector<std::uint64_t> ids{1, 2};
  const auto ec = error_of(io, [&]() -> asio::awaitable<void> { co_await conn.bury_each(ids, 0); });
  EXPECT_EQ(ec, asio::error::eof) << ec.message();
  EXPECT_FALSE(conn.is_open());
  EXPECT_EQ(peer.mismatch(), "");
}

// NOT_FOUND for one job in the middle of a pipelined bury is that job's
// answer alone: the jobs around it are buried, and the connection stays in
// step for the next command.
TEST(BeanstalkScripted, NotFoundInTheMiddleOfPipelinedBuriesIsThatJobsAnswer) {
  wire_script peer({wire_script::expect("bury 11 2\r\nbury 12 2\r\nbury 13 2\r\n"),
                    wire_script::send("BURIED\r\nNOT_FOUND\r\nBURIED\r\n"),
                    wire_script::expect("delete 12\r\n"), wire_script::send("NOT_FOUND\r\n")});
  asio::io_context io;
  connection conn(io.get_executor());
  connect_to(io, conn, peer);
  const std::vector<std::uint64_t> ids{11, 12, 13};
  run(io, [&]() -> asio::awaitable<void> {
    const std::vector<bool> buried = co_await conn.bury_each(ids, 2);
    EXPECT_EQ(buried, (std::vector<bool>{true, false, true}));
    EXPECT_FALSE(co_await conn.remove(12));
  });
  EXPECT_TRUE(conn.is_open());
  EXPECT_EQ(peer.mismatch(), "");
  EXPECT_EQ(peer.received(), "bury 11 2\r\nbury 12 2\r\nbury 13 2\r\ndelete 12\r\n");
}

// JOB_TOO_BIG is the put's error (errc::job_too_big); the connection stays
// open and in step, and the next put gets its own answer.
TEST(BeanstalkScripted, JobTooBigFailsThatPutAndKeepsTheConnection) {
  wire_script peer({wire_script::expect("put 1 0 30 5\r\nhello\r\n"), wire_script::send("JOB_TOO_BIG\r\n"),
                    wire_script::expect("put 1 0 30 2\r\nhi\r\n"), wire_script::send("INSERTED 9\r\n")});
  asio::io_context io;
  connection conn(io.get_executor());
  connect_to(io, conn, peer);
  EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.put(1, 0, 30, "hello"); }),
            errc::job_too_big);
  EXPECT_TRUE(conn.is_open());
  run(io, [&]() -> asio::awaitable<void> { EXPECT_EQ(co_await conn.put(1, 0, 30, "hi"), 9u); });
  EXPECT_EQ(peer.mismatch(), "");
  EXPECT_EQ(peer.received(), "put 1 0 30 5\r\nhello\r\nput 1 0 30 2\r\nhi\r\n");
}

// DEADLINE_SOON between two jobs of a pipelined reserve is no job and no
// error: the jobs before and after it are got, in order, and the connection
// stays in step.
TEST(BeanstalkScripted, DeadlineSoonInTheMiddleOfPipelinedReservesIsNoJob) {
  const std::string reserve = "reserve-with-timeout 0\r\n";
  wire_script peer({wire_script::expect(reserve + reserve + reserve),
                    wire_script::send("RESERVED 5 3\r\nab\n\r\nDEADLINE_SOON\r\nRESERVED 6 0\r\n\r\n"),
                    wire_script::expect("touch 5\r\n"), wire_script::send("TOUCHED\r\n")});
  asio::io_context io;
  connection conn(io.get_executor());
  connect_to(io, conn, peer);
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.request_ready(3);
    const std::vector<job> got = co_await conn.collect_ready();
    EXPECT_EQ(got.size(), 2u);
    if (got.size() == 2) {
      EXPECT_EQ(got[0].id, 5u);
      EXPECT_EQ(got[0].body, "ab\n");
      EXPECT_EQ(got[1].id, 6u);
      EXPECT_EQ(got[1].body, "");
    }
    EXPECT_TRUE(co_await conn.touch(5));
  });
  EXPECT_TRUE(conn.is_open());
  EXPECT_EQ(peer.mismatch(), "");
  EXPECT_EQ(peer.received(), reserve + reserve + reserve + "touch 5\r\n");
}


// A tube name beanstalkd does not allow fails with errc::bad_tube_name and
// sends nothing: the peer sees only the commands with good names, and the
// connection stays open and in step.
TEST(BeanstalkScripted, BadTubeNamesFailWithBadTubeNameAndNeverReachTheWire) {
  const std::string longest(200, 'n');
  wire_script peer({wire_script::expect("use " + longest + "\r\n"), wire_script::send("USING " + longest + "\r\n"),
                    wire_script::expect("watch a-b+c/d;e.f$g_h(i)\r\n"), wire_script::send("WATCHING 2\r\n")});
  asio::io_context io;
  connection conn(io.get_executor());
  connect_to(io, conn, peer);
  const std::vector<std::string> bad{"", "-leading-dash", std::string(201, 'n'), "with space", "crlf\r\nstats",
                                     std::string("nul\0", 4), "star*", "caf\xc3\xa9"};
  for (const std::string& name : bad) {
    EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.use(name); }), errc::bad_tube_name)
        << name;
    EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.watch(name); }), errc::bad_tube_name)
        << name;
    EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.ignore(name); }), errc::bad_tube_name)
        << name;
    EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.stats_tube(name); }),
              errc::bad_tube_name)
        << name;
    EXPECT_TRUE(conn.is_open()) << name;
  }
  run(io, [&]() -> asio::awaitable<void> {
    co_await conn.use(longest);
    EXPECT_EQ(co_await conn.watch("a-b+c/d;e.f$g_h(i)"), 2u);
  });
  EXPECT_EQ(peer.mismatch(), "");
  EXPECT_EQ(peer.received(), "use " + longest + "\r\nwatch a-b+c/d;e.f$g_h(i)\r\n");
}

// Without a connection too: the name is checked first.
TEST(BeanstalkConnection, ABadTubeNameFailsBeforeAnythingElse) {
  asio::io_context io;
  connection conn(io.get_executor());
  EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await conn.use("-bad"); }), errc::bad_tube_name);
}

} // namespace
} // namespace bs_router::beanstalk
