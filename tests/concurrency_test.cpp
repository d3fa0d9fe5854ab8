// Parallel jobs: the max_jobs limit, one job at a time per jname, timeouts,
// live output. Concurrency is read from the fake cbsd's recorded start and
// end times.

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <thread>

#include "support/beanstalk_test_client.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/loopback.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;
using body = nlohmann::ordered_json; // keeps the keys of a job body in order
using namespace std::chrono_literals;
namespace fs = std::filesystem;

void open_gate(const fs::path& gate) { std::ofstream(gate) << "go"; }

struct run_interval {
  std::int64_t start = 0, end = 0;
  std::string tag;
};

// Start/end of each job run (look-ups excluded), from the records, by pid.
std::vector<run_interval> job_runs(const test_pool& pool, const std::string& command) {
  std::map<long, run_interval> by_pid;
  for (const json& r : pool.records()) {
    if (r["argv"].size() < 2 || r["argv"][1] != command) continue;
    auto& interval = by_pid[r["pid"].get<long>()];
    if (r["event"] == "start") {
      interval.start = r["time_ns"];
      for (const auto& a : r["argv"])
        if (a.get<std::string>().rfind("tag=", 0) == 0) interval.tag = a.get<std::string>().substr(4);
    } else {
      interval.end = r["time_ns"];
    }
  }
  std::vector<run_interval> runs;
  for (auto& [pid, interval] : by_pid) runs.push_back(interval);
  std::sort(runs.begin(), runs.end(), [](auto& a, auto& b) { return a.start < b.start; });
  return runs;
}

std::size_t max_overlap(const std::vector<run_interval>& runs) {
  std::vector<std::pair<std::int64_t, int>> events;
  for (const auto& r : runs) {
    events.push_back({r.start, +1});
    events.push_back({r.end, -1});
  }
  std::sort(events.begin(), events.end(), [](auto& a, auto& b) {
    return a.first != b.first ? a.first < b.first : a.second < b.second; // ends before starts
  });
  int now = 0, most = 0;
  for (auto& e : events) most = std::max(most, now += e.second);
  return static_cast<std::size_t>(most);
}

TEST(Concurrency, AtMostMaxJobsRunAndTheRestWaitInTheBroker) {
  beanstalkd_server server;
  test_pool pool(server, json{{"max_jobs", 2}});
  pool.start_router();
  std::vector<fs::path> gates;
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    gates.push_back(pool.dir() / ("gate" + std::to_string(i)));
    ids.push_back(pool.put_job(body{{"Command", "jcreate"},
                                    {"CommandArgs", {{"tag", std::to_string(i)}, {"fake_wait_for", gates.back().string()}}}}));
  }
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 2; }));
  auto tube = pool.client().stats_tube(pool.tube());
  ASSERT_TRUE(tube.has_value());
  EXPECT_EQ(tube->at("current-jobs-ready"), "3"); // not taken into the router's memory
  EXPECT_EQ(tube->at("current-jobs-buried"), "2");
  for (const auto& gate : gates) open_gate(gate);
  for (auto id : ids) ASSERT_FALSE(pool.wait_final_reply(id).empty());
  auto runs = job_runs(pool, "jcreate");
  ASSERT_EQ(runs.size(), 5u);
  EXPECT_LE(max_overlap(runs), 2u);
}

TEST(Concurrency, RunsInParallelUpToTheLimit) {
  beanstalkd_server server;
  test_pool pool(server, json{{"max_jobs", 3}});
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(pool.put_job(body{{"Command", "jcreate"}, {"CommandArgs", {{"fake_wait_for", gate.string()}}}}));
  // All three run at once: each waits for the same gate.
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 3; }));
  open_gate(gate);
  for (auto id : ids) ASSERT_FALSE(pool.wait_final_reply(id).empty());
  EXPECT_EQ(max_overlap(job_runs(pool, "jcreate")), 3u);
}

// Jobs for vm1 (the first one blocks) and one for vm2. With `router_first`
// the router is waiting when they are put, so it takes them one by one;
// otherwise they wait in the tube and are taken together.
void one_job_at_a_time_per_jname(bool router_first) {
  beanstalkd_server server;
  test_pool pool(server, json{{"max_jobs", 4}});
  if (router_first) pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  std::vector<std::uint64_t> vm1;
  vm1.push_back(pool.put_job(body{{"Command", "bstart"},
                                  {"CommandArgs", {{"jname", "vm1"}, {"tag", "1"}, {"fake_wait_for", gate.string()}}}}));
  for (int i = 2; i <= 3; ++i)
    vm1.push_back(pool.put_job(body{{"Command", "bstart"}, {"CommandArgs", {{"jname", "vm1"}, {"tag", std::to_string(i)}}}}));
  const auto other = pool.put_job(body{{"Command", "bstart"}, {"CommandArgs", {{"jname", "vm2"}, {"tag", "other"}}}});
  vm1.push_back(pool.put_job(body{{"Command", "bstart"}, {"CommandArgs", {{"jname", "vm1"}, {"tag", "4"}}}}));
  if (!router_first) pool.start_router();
  // vm2's job finishes while vm1's first job still blocks.
  auto other_reply = pool.wait_final_reply(other);
  ASSERT_FALSE(other_reply.empty());
  EXPECT_EQ(other_reply.back()["ErrCode"], 0);
  EXPECT_EQ(pool.runs_of("bstart").size(), 2u); // vm1's first and vm2's; the rest wait
  open_gate(gate);
  for (auto id : vm1) ASSERT_FALSE(pool.wait_final_reply(id).empty());

  std::vector<run_interval> runs;
  for (const auto& r : job_runs(pool, "bstart"))
    if (r.tag != "other") runs.push_back(r);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(max_overlap(runs), 1u);
  for (std::size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].tag, std::to_string(i + 1)); // put order
}

TEST(Concurrency, OneJobAtATimePerJnameInPutOrderOthersNotHeldUp) { one_job_at_a_time_per_jname(true); }

TEST(Concurrency, OneJobAtATimePerJnameAlsoForJobsTakenTogether) { one_job_at_a_time_per_jname(false); }

// max_jobs 2, max_waiting 1: vm-x's first job blocks, its second waits
// behind it, and the rest go back to the broker (delayed) instead of
// stopping the router from taking anything. vm-y's job, put last and at a
// less urgent priority, is answered while vm-x's first job still blocks;
// then vm-x's jobs run one at a time, in put order, each once, also after
// the jobs sent back were made ready again before their turn.
TEST(Concurrency, JobsOverMaxWaitingGoBackToTheBrokerAndOtherJnamesKeepFlowing) {
  beanstalkd_server server;
  test_pool pool(server, json{{"max_jobs", 2}, {"max_waiting", 1}});
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const int x_jobs = 8;
  std::vector<std::uint64_t> x;
  x.push_back(pool.put_job(body{{"Command", "bstart"},
                                {"CommandArgs", {{"jname", "vm-x"}, {"tag", "1"}, {"fake_wait_for", gate.string()}}}}));
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("bstart").size() == 1; }));
  for (int i = 2; i <= x_jobs; ++i)
    x.push_back(pool.put_job(body{{"Command", "bstart"}, {"CommandArgs", {{"jname", "vm-x"}, {"tag", std::to_string(i)}}}}));
  const auto y = pool.put_job(body{{"Command", "bstart"}, {"CommandArgs", {{"jname", "vm-y"}, {"tag", "y"}}}}, 100);

  auto y_reply = pool.wait_final_reply(y, 20s);
  ASSERT_FALSE(y_reply.empty());
  EXPECT_EQ(y_reply.back()["ErrCode"], 0);
  EXPECT_EQ(pool.runs_of("bstart").size(), 2u); // vm-x's first, and vm-y's
  // vm-x's first runs and its second waits, buried; the rest are in the
  // broker, delayed, not in the router.
  auto in_broker = [&](const std::string& buried, const std::string& delayed) {
    return wait_until([&] {
      auto tube = pool.client().stats_tube(pool.tube());
      return tube && tube->at("current-jobs-buried") == buried && tube->at("current-jobs-delayed") == delayed;
    });
  };
  const std::string sent_back = std::to_string(x_jobs - 2);
  EXPECT_TRUE(in_broker("2", sent_back));
  // Ready again before their turn (the last first): they go back again.
  for (auto it = x.rbegin(); it != x.rend() - 2; ++it) EXPECT_TRUE(pool.client().kick_job(*it));
  EXPECT_TRUE(wait_until([&] { return pool.client().stats_job(x[2])->at("releases") == "2"; }));
  EXPECT_TRUE(in_broker("2", sent_back));
  EXPECT_EQ(pool.runs_of("bstart").size(), 2u);

  open_gate(gate);
  for (auto id : x) ASSERT_FALSE(pool.wait_final_reply(id).empty());
  std::vector<run_interval> runs;
  for (const auto& r : job_runs(pool, "bstart"))
    if (r.tag != "y") runs.push_back(r);
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(x_jobs)); // each once
  EXPECT_EQ(max_overlap(runs), 1u);
  for (std::size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].tag, std::to_string(i + 1)); // put order
  EXPECT_EQ(pool.stop_router(), 0);
}

// Jobs already waiting when slots are free are taken in one go: one reserve
// that waits, the others asked for together, one fdatasync for all their
// journal entries, one round trip to bury them. Still no more than max_jobs.
TEST(Concurrency, JobsWaitingForFreeSlotsAreTakenTogether) {
  beanstalkd_server server;
  const std::uint16_t port = free_loopback_port();
  test_pool pool(server, json{{"max_jobs", 4}, {"metrics_listen", "127.0.0.1:" + std::to_string(port)}});
  const fs::path gate = pool.dir() / "gate";
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 6; ++i)
    ids.push_back(pool.put_job(body{{"Command", "jcreate"},
                                    {"CommandArgs", {{"tag", std::to_string(i)}, {"fake_wait_for", gate.string()}}}}));
  pool.start_router();
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 4; }));
  auto tube = pool.client().stats_tube(pool.tube());
  ASSERT_TRUE(tube.has_value());
  EXPECT_EQ(tube->at("current-jobs-ready"), "2");
  EXPECT_EQ(tube->at("current-jobs-buried"), "4");
  // The first job's entry is synced while the others are asked for, then
  // theirs: two syncs for four jobs (one each before).
  const auto syncs = metric_sample(port, "bs_router_journal_syncs_total");
  ASSERT_TRUE(syncs.has_value());
  EXPECT_LE(*syncs, 2.0);
  open_gate(gate);
  for (auto id : ids) ASSERT_FALSE(pool.wait_final_reply(id).empty());
  auto runs = job_runs(pool, "jcreate");
  ASSERT_EQ(runs.size(), 6u);
  EXPECT_LE(max_overlap(runs), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(runs[i].tag.size(), 1u);
}

// Jobs with the shortest TTR (1 s) taken together are all buried before it
// runs out: each runs once and gets one final reply.
TEST(Concurrency, JobsWithTheShortestTtrTakenTogetherRunOnce) {
  beanstalkd_server server;
  test_pool pool(server, json{{"max_jobs", 4}});
  const fs::path gate = pool.dir() / "gate";
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(pool.put_job(body{{"Command", "jcreate"},
                                    {"CommandArgs", {{"tag", std::to_string(i)}, {"fake_wait_for", gate.string()}}}},
                               0, 0, 1));
  pool.start_router();
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 3; }));
  // Well past the TTR: had a job not been buried, the broker would have
  // given it back and the router would hold it twice.
  for (auto id : ids) {
    ASSERT_TRUE(wait_until([&] {
      auto stats = pool.client().stats_job(id);
      return stats && stats->at("state") == "buried" && std::stoi(stats->at("age")) >= 2;
    }));
    EXPECT_EQ(pool.client().stats_job(id)->at("reserves"), "1");
  }
  open_gate(gate);
  for (auto id : ids) {
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty());
    EXPECT_EQ(replies.back()["ErrCode"], 0);
  }
  EXPECT_EQ(pool.runs_of("jcreate").size(), 3u);
  EXPECT_EQ(pool.log_text().find("came back"), std::string::npos);
}

TEST(Concurrency, ConfigTimeoutKillsTheWholeProcessGroup) {
  beanstalkd_server server;
  test_pool pool(server, json{{"job_timeout", 1}, {"kill_grace", 1}});
  pool.start_router();
  const auto id = pool.put_job(body{{"Command", "jcreate"},
                                    {"CommandArgs", {{"fake_sleep_ms", 120000}, {"fake_spawn_child", 1}, {"fake_stdout", "partial\n"}}}});
  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 1002);
  const std::string message = replies.back()["Message"];
  EXPECT_NE(message.find("timed out"), std::string::npos) << message;
  EXPECT_NE(message.find("partial\n"), std::string::npos) << message;
  auto runs = pool.runs_of("jcreate");
  ASSERT_EQ(runs.size(), 1u);
  const pid_t grandchild = runs[0]["grandchild_pid"];
  auto gone = [&] {
    if (::kill(grandchild, 0) != 0) return true;
    std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
    std::string pid, name, state;
    return stat >> pid >> name >> state && state == "Z"; // ended, not yet reaped by init
  };
  EXPECT_TRUE(wait_until(gone, 30s));
}

TEST(Concurrency, BodyTimeoutOverridesAndIgnoredSigtermEndsInSigkill) {
  beanstalkd_server server;
  test_pool pool(server, json{{"kill_grace", 1}});
  pool.start_router();
  const auto id = pool.put_job(body{{"Command", "jcreate"},
                                    {"Timeout", 1},
                                    {"CommandArgs", {{"fake_sleep_ms", 120000}, {"fake_ignore_term", 1}}}});
  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 1002);
  EXPECT_TRUE(pool.router_running());
}

TEST(Concurrency, BodyTimeoutCannotRaiseJobTimeout) {
  beanstalkd_server server;
  test_pool pool(server, json{{"job_timeout", 1}, {"kill_grace", 1}});
  pool.start_router();
  const auto id = pool.put_job(
      body{{"Command", "jcreate"}, {"Timeout", 600}, {"CommandArgs", {{"fake_sleep_ms", 120000}}}});
  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 1002);
  EXPECT_EQ(replies.back()["Message"].get<std::string>().rfind("bs_router: timed out after 1 s;", 0), 0u)
      << replies.back()["Message"];
}

TEST(Concurrency, ProgressRepliesCarryOutputWhileTheJobRuns) {
  beanstalkd_server server;
  test_pool pool(server, json{{"progress", true}});
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(body{{"Command", "jcreate"},
                                    {"CommandArgs", {{"fake_stdout", "early output\n"}, {"fake_wait_for", gate.string()}}}});
  auto live = pool.wait_reply(id);
  ASSERT_TRUE(live.has_value());
  EXPECT_LT((*live)["Progress"].get<int>(), 100);
  EXPECT_EQ((*live)["Message"], "early output\n");
  EXPECT_EQ(pool.records().size(), 1u); // still running: only its start record
  open_gate(gate);
  auto rest = pool.wait_final_reply(id);
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.back()["Progress"], 100);
  EXPECT_EQ(rest.back()["Message"], "early output\n"); // the final reply is unchanged
}

// Live output is read from the descriptor the run's output goes to: a .out
// replaced by a link meanwhile (to a file only root may read) is not followed.
TEST(Concurrency, LiveOutputReadsTheRunsDescriptorNotItsPath) {
  beanstalkd_server server;
  test_pool pool(server, json{{"progress", true}});
  pool.start_router();
  const fs::path gate = pool.dir() / "gate", second_gate = pool.dir() / "gate2";
  const fs::path secret = pool.dir() / "secret";
  std::ofstream(secret) << std::string(200, 'S') << "\n";
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write);
  const auto id = pool.put_job(body{{"Command", "jcreate"},
                                    {"CommandArgs", {{"fake_stdout", "early output\n"},
                                                     {"fake_wait_for", gate.string()},
                                                     {"fake_then_stdout", "late output\n"},
                                                     {"fake_then_wait_for", second_gate.string()}}}});
  auto early = pool.wait_reply(id);
  ASSERT_TRUE(early.has_value());
  EXPECT_EQ((*early)["Message"], "early output\n");

  const fs::path out = pool.logdir() / (std::to_string(id) + ".out");
  fs::remove(out);
  fs::create_symlink(secret, out);
  open_gate(gate);
  auto late = pool.wait_reply(id);
  ASSERT_TRUE(late.has_value());
  EXPECT_LT((*late)["Progress"].get<int>(), 100);
  EXPECT_EQ((*late)["Message"], "late output\n");

  open_gate(second_gate);
  auto rest = pool.wait_final_reply(id);
  ASSERT_FALSE(rest.empty());
  for (const json& reply : rest) EXPECT_EQ(reply["Message"].get<std::string>().find('S'), std::string::npos) << reply;
  EXPECT_EQ(rest.back()["Message"], "early output\nlate output\n");
}

// Live output is read in chunks; a character split by a chunk waits for its
// rest instead of going out as U+FFFD.
TEST(Concurrency, ProgressRepliesNeverSplitACharacter) {
  beanstalkd_server server;
  test_pool pool(server, json{{"progress", true}});
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  std::string printed;
  for (int i = 0; i < 19000; ++i) printed += "\u2713"; // three bytes each
  const auto id = pool.put_job(
      body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", printed}, {"fake_wait_for", gate.string()}}}});
  std::string live;
  while (live.size() < printed.size()) {
    auto reply = pool.wait_reply(id);
    ASSERT_TRUE(reply.has_value()) << live.size() << " of " << printed.size();
    ASSERT_LT((*reply)["Progress"].get<int>(), 100);
    live += (*reply)["Message"].get<std::string>();
  }
  EXPECT_EQ(live.find("\uFFFD"), std::string::npos);
  EXPECT_EQ(live, printed);
  open_gate(gate);
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
}

TEST(Concurrency, NoProgressRepliesUnlessAskedFor) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(body{{"Command", "jcreate"}, {"CommandArgs", {{"fake_stdout", "x\n"}, {"fake_sleep_ms", 1200}}}});
  auto replies = pool.wait_final_reply(id);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0]["Progress"], 100);
}

TEST(Concurrency, ClientPrintsLiveOutputOnce) {
  beanstalkd_server server;
  test_pool pool(server, json{{"progress", true}});
  pool.start_router();
  const fs::path gate = pool.dir() / "gate";
  std::string out, err;
  int status = -1;
  std::thread client([&] {
    status = run_client({"-config", pool.config_path().string(), "jcreate", "fake_stdout=live line\n",
                         "fake_wait_for=" + gate.string()},
                        &out, &err);
  });
  // Wait until the progress reply was put and taken by the client.
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jcreate").size() == 1; }));
  std::string reply_tube;
  ASSERT_TRUE(wait_until([&] {
    for (const auto& t : pool.client().list_tubes())
      if (t.rfind(pool.reply_tube_prefix(), 0) == 0) reply_tube = t;
    if (reply_tube.empty()) return false;
    auto s = pool.client().stats_tube(reply_tube);
    return s && s->at("total-jobs") == "1" && s->at("current-jobs-ready") == "0";
  }));
  open_gate(gate);
  client.join();
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(out, "live line\n");
}

TEST(Concurrency, TenThousandWaitingJobsStayInTheBroker) {
  beanstalkd_server server;
  test_pool pool(server, json{{"max_jobs", 1}});
  const int total = 10000;
  // The first job holds the only slot until its gate opens: meanwhile the
  // router takes nothing more, whatever the speed of the machine.
  const fs::path gate = pool.dir() / "gate";
  pool.put_job(body{{"Command", "jls"}, {"CommandArgs", {{"n", 0}, {"fake_wait_for", gate.string()}}}});
  for (int i = 1; i < total; ++i) pool.put_job(body{{"Command", "jls"}, {"CommandArgs", {{"n", i}}}});
  pool.start_router();
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jls").size() == 1; }));
  auto tube = pool.client().stats_tube(pool.tube());
  ASSERT_TRUE(tube.has_value());
  // Buried: the one running; the thousands waiting are all in the broker.
  EXPECT_EQ(tube->at("current-jobs-buried"), "1");
  EXPECT_EQ(tube->at("current-jobs-ready"), std::to_string(total - 1));
  open_gate(gate);
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jls").size() >= 20; }));
#ifdef __linux__
  // No thread per job: children are reaped by the event loop. The broker's
  // address is numeric, so there is not even Asio's resolver thread.
  std::size_t threads = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator("/proc/" + std::to_string(pool.router_pid()) + "/task")) ++threads;
  EXPECT_EQ(threads, 1u);
#endif
  EXPECT_EQ(pool.stop_router(), 0);
}

} // namespace
} // namespace bs_router::testing
