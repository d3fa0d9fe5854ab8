// Delivery guarantees under failure: real beanstalkd and router processes,
// killed with SIGKILL; the fake cbsd's records count the runs.

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>

#include "bs_router/journal.hpp"
#include "support/beanstalk_test_client.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/freezing_relay.hpp"
#include "support/loopback.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;
using body = nlohmann::ordered_json; // keeps the keys of a job body in order
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A job that runs until the test creates `gate`.
body held_job(const std::string& command, const fs::path& gate, const std::string& out = "done\n") {
  return body{{"Command", command}, {"CommandArgs", {{"fake_wait_for", gate.string()}, {"fake_stdout", out}}}};
}

// Journal entries: the jobs in flight, as the next start would read them.
std::size_t journal_entries(const test_pool& pool) { return journal::inspect(pool.statedir().string()).size(); }

void open_gate(const fs::path& gate) { std::ofstream(gate) << "go"; }

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

// Starts a job that runs until its gate opens, kills the broker, lets the run
// end, and returns once the router says the reply has to wait.
std::uint64_t finish_a_run_while_the_broker_is_down(test_pool& pool, beanstalkd_server& server,
                                                    const std::string& command, const std::string& out) {
  const fs::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(held_job(command, gate, out));
  EXPECT_TRUE(wait_until([&] { return pool.runs_of(command).size() == 1; }));
  server.kill();
  open_gate(gate);
  EXPECT_TRUE(wait_until([&] { return pool.log_text().find("cannot put the reply") != std::string::npos; }, 60s));
  return id;
}

// A binlog directory that lives as long as the test.
struct binlog_dir {
  binlog_dir() {
    char tmpl[] = "/tmp/bs_router-binlog-XXXXXX";
    if (::mkdtemp(tmpl)) path = tmpl;
  }
  ~binlog_dir() { fs::remove_all(path); }
  fs::path path;
};

beanstalkd_server::options with_binlog(const fs::path& dir) {
  fs::create_directories(dir);
  beanstalkd_server::options opts;
  opts.binlog_dir = dir.string();
  return opts;
}

// A partition freezes the router's connections while its reserve is pending
// at the broker; a job put then goes to that reserve, and its answer never
// arrives. beanstalkd may keep such a job reserved for the silent connection
// past its TTR (include/bs_router/beanstalk_stuck_jobs.hpp); a broker whose clock tells whole seconds
// always does, so here it is certain.
struct partitioned_broker {
  partitioned_broker() : server(coarse()), relay(server.host(), server.port()) {}
  static beanstalkd_server::options coarse() {
    beanstalkd_server::options opts;
    opts.coarse_clock = true;
    return opts;
  }
  // A pool served through the relay, its reserve long enough to be still
  // pending when the job comes.
  json pool_config(std::uint16_t metrics_port = 0) const {
    json extra{{"beanstalkd", {{"uri", relay.uri()}, {"reserve_timeout", 10}}}};
    if (metrics_port != 0) extra["metrics_listen"] = "127.0.0.1:" + std::to_string(metrics_port);
    return extra;
  }
  // Freezes the router's connections once its reserve is at the broker, puts
  // `job` (TTR 1 s), and returns its id once the broker keeps it reserved
  // for the frozen connection past its TTR.
  std::uint64_t put_while_the_reserve_is_frozen(test_pool& pool, const body& job) {
    EXPECT_TRUE(wait_until([&] {
      auto stats = pool.client().stats_tube(pool.tube());
      return stats && stats->at("current-waiting") == "1";
    }));
    relay.freeze();
    const auto id = pool.put_job(job, 0, 0, /*ttr=*/1);
    EXPECT_TRUE(wait_until([&] {
      auto stats = pool.client().stats_job(id);
      return stats && stats->at("state") == "reserved" && stats->at("time-left").starts_with('-');
    }));
    return id;
  }
  beanstalkd_server server;
  freezing_relay relay;
};

// The router takes it over: one run, one reply, and when the partition heals
// and the broker gives the job back, the router deletes it instead of
// running or answering it again.
TEST(Delivery, AJobTheBrokerKeepsReservedForASilentConnectionRunsOnceWithOneReply) {
  partitioned_broker broker;
  const std::uint16_t metrics_port = free_loopback_port();
  test_pool pool(broker.server, broker.pool_config(metrics_port));
  pool.start_router();
  const auto id = broker.put_while_the_reserve_is_frozen(
      pool, body{{"Command", "jcreate"}, {"CommandArgs", {{"jname", "frozen1"}}}});

  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty()) << pool.log_text();
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  EXPECT_NE(pool.log_text().find("taken over from its body"), std::string::npos) << pool.log_text();
  EXPECT_EQ(metric_sample(metrics_port, "bs_router_jobs_taken_over_total"), 1.0);

  // The partition heals: the frozen connection's close reaches the broker,
  // which gives the job back (this broker may do so earlier: its clock of
  // whole seconds also upsets its timer heap). The router deletes it
  // instead of running or answering it again.
  broker.relay.thaw();
  ASSERT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); })) << pool.log_text();
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  auto reply_tube = pool.client().stats_tube(pool.reply_tube(id));
  EXPECT_TRUE(!reply_tube || reply_tube->at("current-jobs-ready") == "0"); // no second reply
  EXPECT_TRUE(wait_until([&] { return journal_entries(pool) == 0; }));
}

// The broker gives the job back while the run it was taken over for goes on:
// the router buries it, as any job it holds, and answers it once.
TEST(Delivery, AJobTakenOverThatComesBackWhileItRunsIsBuriedAndAnsweredOnce) {
  partitioned_broker broker;
  test_pool pool(broker.server, broker.pool_config());
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto id = broker.put_while_the_reserve_is_frozen(pool, held_job("jcreate", gate));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }, 60s)) << pool.log_text();
  broker.relay.thaw();
  ASSERT_TRUE(wait_until([&] {
    auto stats = pool.client().stats_job(id);
    return stats && stats->at("state") == "buried";
  })) << pool.log_text();
  open_gate(gate);
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty()) << pool.log_text();
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); }));
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  EXPECT_TRUE(wait_until([&] { return journal_entries(pool) == 0; }));
}

// Killed while it runs a job it took over, the router finds the entry at the
// next start with the job still reserved for the frozen connection: the
// entry is the journal's, so the job is answered 1003 and never run again,
// also once the broker gives it back.
TEST(Delivery, ARouterKilledWhileItRunsAJobTakenOverAnswers1003AfterRestartAndRunsItNoMore) {
  partitioned_broker broker;
  test_pool pool(broker.server, broker.pool_config());
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto id = broker.put_while_the_reserve_is_frozen(pool, held_job("jcreate", gate));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }, 60s)) << pool.log_text();
  pool.kill_router();
  pool.start_router();
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty()) << pool.log_text();
  EXPECT_EQ(replies.back()["ErrCode"], 1003);
  broker.relay.thaw();
  ASSERT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); })) << pool.log_text();
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  EXPECT_TRUE(wait_until([&] { return journal_entries(pool) == 0; }));
  open_gate(gate); // the orphaned run ends
}

TEST(Delivery, AJobThatOutlivesItsTtrRunsOnce) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(held_job("jcreate", gate), 0, 0, /*ttr=*/1);
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  // Buried while it runs: no TTR can send it back to the ready queue.
  auto stats = pool.client().stats_job(id);
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->at("state"), "buried");
  // Let the broker's clock pass the TTR several times over.
  ASSERT_TRUE(wait_until([&] {
    auto s = pool.client().stats_job(id);
    return s && std::stoi(s->at("age")) >= 4;
  }));
  EXPECT_EQ(pool.client().stats_job(id)->at("reserves"), "1");
  open_gate(gate);
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
}

TEST(Delivery, RouterKilledDuringARunRepliesInterruptedAfterRestartAndDoesNotRunAgain) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(held_job("jcreate", gate));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  pool.kill_router();
  open_gate(gate); // the orphaned cbsd may finish now; nobody records it

  pool.start_router();
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 1003);
  EXPECT_NE(replies.back()["Message"].get<std::string>().find("outcome is unknown"), std::string::npos);
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  EXPECT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); }));
  // Exactly one final reply: nothing more waits on the reply tube.
  EXPECT_FALSE(pool.client().reserve(pool.reply_tube(id), 1s).has_value());
  ASSERT_TRUE(wait_until([&] { return journal_entries(pool) == 0; }));
}

TEST(Delivery, HeldJobsNotStartedBeforeACrashRunAfterRestart) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto first = pool.put_job(body{{"Command", "bstart"},
                                       {"CommandArgs", {{"jname", "vm1"}, {"fake_wait_for", gate.string()}}}});
  const auto second = pool.put_job(body{{"Command", "bstop"}, {"CommandArgs", {{"jname", "vm1"}}}});
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("bstart").size() == 1; }));
  // The second job waits behind the first (same jname), buried.
  ASSERT_TRUE(wait_until([&] {
    auto s = pool.client().stats_job(second);
    return s && s->at("state") == "buried";
  }));
  pool.kill_router();
  open_gate(gate);
  pool.start_router();
  auto r1 = pool.wait_final_reply(first);
  auto r2 = pool.wait_final_reply(second);
  ASSERT_FALSE(r1.empty());
  ASSERT_FALSE(r2.empty());
  EXPECT_EQ(r1.back()["ErrCode"], 1003);
  EXPECT_EQ(r2.back()["ErrCode"], 0); // never started before: it runs now, once
  EXPECT_EQ(pool.runs_of("bstart").size(), 1u);
  EXPECT_EQ(pool.runs_of("bstop").size(), 1u);
}

TEST(Delivery, BrokerKilledDuringARunGetsTheReplyWhenBack) {
  binlog_dir binlog;
  beanstalkd_server server(with_binlog(binlog.path / "binlog"));
  test_pool pool(server);
  pool.start_router();
  // The run ends while the broker is away; the reply waits in the journal.
  const auto id = finish_a_run_while_the_broker_is_down(pool, server, "jcreate", "created\n");
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("attempt 3") != std::string::npos; }, 60s));
  EXPECT_EQ(count_of(pool.log_text(), "cannot put the reply"), 1u); // once, not per attempt
  EXPECT_GT(journal_entries(pool), 0u);

  server.restart();
  pool.client().connect(server.host(), server.port());
  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(replies.back()["Message"], "created\n");
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  ASSERT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); }));
}

TEST(Delivery, ReplyRecordedBeforeACrashIsPutAfterRestart) {
  binlog_dir binlog;
  beanstalkd_server server(with_binlog(binlog.path / "binlog"));
  test_pool pool(server);
  pool.start_router();
  const auto id = finish_a_run_while_the_broker_is_down(pool, server, "jcreate", "real result\n");
  pool.kill_router(); // the result is only in the journal now
  server.restart();
  pool.client().connect(server.host(), server.port());
  pool.start_router();
  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(replies.back()["Message"], "real result\n");
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
}

TEST(Delivery, AReusedJobIdIsNotMistakenForTheOldJob) {
  beanstalkd_server server; // no binlog: a restart starts ids from 1 again
  test_pool pool(server);
  pool.start_router();
  const auto old_id = finish_a_run_while_the_broker_is_down(pool, server, "jcreate", "old\n");
  server.restart();
  pool.client().connect(server.host(), server.port());
  const auto new_id = pool.put_job(body{{"Command", "jstart"}, {"CommandArgs", {{"fake_stdout", "new\n"}}}});
  ASSERT_EQ(new_id, old_id);
  auto replies = pool.wait_final_reply(new_id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Message"], "new\n"); // not the old job's reply
  EXPECT_EQ(pool.runs_of("jstart").size(), 1u);
  EXPECT_FALSE(pool.client().reserve(pool.reply_tube(new_id), 1s).has_value());
  ASSERT_TRUE(wait_until([&] { return journal_entries(pool) == 0; }));
}

// A crash after the journal write and before the bury: the entry says
// "running" but the broker never buried the job, so cbsd never started.
TEST(Delivery, AJournalEntryWhoseJobWasNeverBuriedRunsTheJobOnce) {
  beanstalkd_server server;
  test_pool pool(server);
  const std::string body_text = R"({"Command":"jcreate","CommandArgs":{"fake_stdout":"ran\n"}})";
  const auto id = pool.put_job(body_text);
  const auto gone = pool.put_job(R"({"Command":"jremove"})");
  ASSERT_TRUE(pool.client().delete_job(gone));
  fs::create_directories(pool.statedir());
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  // Written by hand, in the one-file-per-job layout of older versions, which
  // a start takes over.
  for (auto [job, state, text] : {std::tuple{id, "running", body_text},
                                  std::tuple{gone, "accepted", std::string(R"({"Command":"jremove"})")}})
    std::ofstream(pool.statedir() / (std::to_string(job) + ".json"))
        << json{{"job_id", job}, {"state", state}, {"body", text}, {"reserved_at", now}}.dump();
  pool.start_router();
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(replies.back()["Message"], "ran\n");
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
  EXPECT_TRUE(pool.runs_of("jremove").empty()); // its job is gone from the broker
  ASSERT_TRUE(wait_until([&] { return journal_entries(pool) == 0; }));
}

TEST(Delivery, SigtermLetsRunningJobsFinishAndTakesNoMore) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(held_job("jcreate", gate));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  ::kill(pool.router_pid(), SIGTERM);
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("stopping") != std::string::npos; }));
  const auto later = pool.put_job(R"({"Command":"jls"})");
  EXPECT_TRUE(pool.router_running());
  open_gate(gate);
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  auto status = pool.wait_router_exit();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(exit_status_of(*status), 0);
  EXPECT_TRUE(pool.runs_of("jls").empty());
  auto stats = pool.client().stats_job(later);
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->at("state"), "ready");
}

TEST(Delivery, ShutdownTimeoutLeavesTheJobInTheJournalForTheNextStart) {
  beanstalkd_server server;
  test_pool pool(server, json{{"shutdown_timeout", 1}});
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(held_job("jcreate", gate));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  EXPECT_EQ(pool.stop_router(), 0);
  EXPECT_GT(journal_entries(pool), 0u);
  EXPECT_NE(pool.log_text().find("shutdown_timeout passed"), std::string::npos);
  open_gate(gate);
  pool.start_router();
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 1003);
  EXPECT_EQ(pool.runs_of("jcreate").size(), 1u);
}

TEST(Delivery, SighupReopensTheLogFile) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.start_router();
  const fs::path rotated = pool.dir() / "router.log.0";
  fs::rename(pool.log_path(), rotated);
  ::kill(pool.router_pid(), SIGHUP);
  ASSERT_TRUE(wait_until([&] { return fs::exists(pool.log_path()); }));
  const auto id = pool.put_job(R"({"Command":"jls"})");
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("finished") != std::string::npos; }));
  std::ifstream old(rotated);
  std::string old_text((std::istreambuf_iterator<char>(old)), std::istreambuf_iterator<char>());
  EXPECT_EQ(old_text.find("jls"), std::string::npos);
  EXPECT_TRUE(pool.router_running());
}

// beanstalkd 1.12 accepts a job of exactly max-job-size bytes but refuses it
// when it reads its binlog back, and with it every later job of that binlog
// file. Replies cut to fit, progress ones too, leave it the two bytes it
// needs: after a crash and restart of the broker, they and everybody else's
// jobs are all still there.
TEST(Delivery, CutRepliesAndLaterJobsSurviveABrokerRestartFromItsBinlog) {
  binlog_dir binlog;
  beanstalkd_server server(with_binlog(binlog.path / "binlog"));
  test_pool pool(server, json{{"progress", true}});
  pool.start_router();
  const std::size_t max_job_size = std::stoul(pool.client().stats().at("max-job-size"));
  const fs::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(
      body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout_bytes", 300000}, {"fake_wait_for", gate.string()}}}});
  const std::string reply_tube = pool.reply_tube(id);
  const auto ready = [&](const std::string& tube) -> std::size_t {
    auto stats = pool.client().stats_tube(tube);
    return stats ? std::stoul(stats->at("current-jobs-ready")) : 0;
  };
  ASSERT_TRUE(wait_until([&] { return ready(reply_tube) >= 1; })); // a progress reply
  open_gate(gate);
  ASSERT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); })); // answered
  const std::vector<std::string> others = {std::string(10, 'a'), std::string(20, 'b')};
  for (const std::string& other : others) pool.client().put("others", other);
  const std::size_t replies = ready(reply_tube);
  pool.kill_router();

  server.kill();
  server.restart();
  pool.client().connect(server.host(), server.port());
  EXPECT_EQ(ready(reply_tube), replies);
  ASSERT_EQ(ready("others"), others.size());
  for (const std::string& other : others) {
    auto job = pool.client().reserve("others", 5s);
    ASSERT_TRUE(job.has_value());
    EXPECT_EQ(job->body, other);
  }
  json last;
  for (std::size_t i = 0; i < replies; ++i) {
    auto reply = pool.client().reserve(reply_tube, 5s);
    ASSERT_TRUE(reply.has_value());
    EXPECT_LE(reply->body.size(), max_job_size - 2);
    last = json::parse(reply->body);
    pool.client().delete_job(reply->id);
  }
  EXPECT_EQ(last["Progress"], 100);
  EXPECT_EQ(last["Truncated"], true);
  EXPECT_EQ(last["MessageBytes"], 300000);
}

TEST(Delivery, PoisonBodiesGetErrorRepliesAndTheRouterGoesOn) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.start_router();
  const std::size_t max_job_size = std::stoul(pool.client().stats().at("max-job-size"));
  std::vector<std::string> bodies = {
      std::string(max_job_size, '{'),                 // the broker's maximum, all nesting
      std::string(max_job_size - 2, ' ') + "{}",      // the broker's maximum, no Command
      "[" + std::string(max_job_size - 2, '1') + "]", // one huge number
      R"({"Command":"jls","CommandArgs":{"n":1e400}})",
      R"({"Command":"jls","CommandArgs":{"n":-1e999}})",
      std::string("{\"Command\":\"jl\0s\"}", 18),
      std::string("{\"Command\":\"jls\",\"CommandArgs\":{\"k\":\"\xc3\x28\"}}"),
      std::string("\0\0\0\0", 4),
  };
  for (const std::string& body : bodies) {
    const auto id = pool.put_job(body);
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty()) << body.size();
    EXPECT_EQ(replies.back()["ErrCode"], 1000) << body.substr(0, 60);
  }
  EXPECT_TRUE(pool.records().empty());
  EXPECT_TRUE(pool.router_running());
}

} // namespace
} // namespace bs_router::testing
