// Tests of the test infrastructure itself (the fake cbsd, the beanstalkd
// wrapper, the wire-level test client, the pool and the waits), without the
// router: when an integration test fails, these say whether to suspect it.

#include "support/beanstalk_test_client.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

namespace bs_router::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// A directory standing in for a pool when the fake runs without a router.
struct scratch_dir {
  scratch_dir() {
    std::string templ = (std::filesystem::temp_directory_path() / "bs_router_self.XXXXXX").string();
    if (mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = templ;
  }
  ~scratch_dir() {
    std::error_code ignored;
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(path, ignored);
  }
  std::vector<json> records() const {
    std::vector<json> result;
    std::ifstream in(path / "fake_cbsd.records");
    for (std::string line; std::getline(in, line);) result.push_back(json::parse(line));
    return result;
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
  }
  std::filesystem::path path;
};

const std::vector<std::string> router_like_env{
    "workdir=/pool1", "cbsd_workdir=/pool1", "NOINTER=1", "NOCOLOR=1",
    "PATH=/sbin:/bin:/usr/sbin:/usr/bin"};

struct fake_run {
  int status = -1;
  std::string out;
  std::string err;
};

fake_run run_fake(const scratch_dir& dir, const std::vector<std::string>& args,
                  const std::vector<std::string>& env = router_like_env) {
  std::vector<std::string> argv{FAKE_CBSD_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  spawn_options options;
  options.cwd = dir.path.string();
  options.env = env;
  fake_run run;
  run.status = run_captured(argv, options, &run.out, &run.err);
  return run;
}

std::string unhex(const std::string& hex) {
  std::string bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return bytes;
}

// ---------------------------------------------------------------- fake cbsd

TEST(FakeCbsd, RecordsArgvEnvironmentAndWorkingDirectoryExactly) {
  scratch_dir dir;
  const std::vector<std::string> args{"jcreate",           "jname=jail1",
                                      "note=line1\nline2", "quoted=\"q\" 'x' \\",
                                      "cmd=$(reboot); `id`", "utf8=żółw ✓",
                                      "empty=",            std::string("raw=\xff\xfe", 6)};
  const std::vector<std::string> env{"workdir=/pool1", "NOINTER=1", "EMPTY=",
                                     "WITH_EQUALS=a=b"};
  const auto run = run_fake(dir, args, env);
  EXPECT_EQ(run.status, 0);
  EXPECT_EQ(run.out, "fake cbsd: jcreate ok\n");
  EXPECT_EQ(run.err, "");

  const auto records = dir.records();
  ASSERT_EQ(records.size(), 2u);
  const json& start = records[0];
  const json& end = records[1];
  EXPECT_EQ(start["event"], "start");
  EXPECT_EQ(end["event"], "end");
  EXPECT_EQ(start["pid"], end["pid"]);
  EXPECT_EQ(end["exit"], 0);
  EXPECT_EQ(start["cwd"], std::filesystem::canonical(dir.path).string());
  EXPECT_LE(start["time_ns"].get<std::int64_t>(), end["time_ns"].get<std::int64_t>());

  std::vector<std::string> expected_argv{FAKE_CBSD_PATH};
  expected_argv.insert(expected_argv.end(), args.begin(), args.end());
  ASSERT_EQ(start["argv_hex"].size(), expected_argv.size());
  for (std::size_t i = 0; i < expected_argv.size(); ++i)
    EXPECT_EQ(unhex(start["argv_hex"][i]), expected_argv[i]) << "argv[" << i << "]";
  // Valid UTF-8 survives the JSON text as well; the invalid bytes are replaced.
  for (std::size_t i = 0; i + 1 < expected_argv.size(); ++i)
    EXPECT_EQ(start["argv"][i], expected_argv[i]) << "argv[" << i << "]";
  EXPECT_EQ(start["argv"].back(), "raw=\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(end["argv_hex"], start["argv_hex"]);

  EXPECT_EQ(start["env"], (json{{"workdir", "/pool1"},
                                {"NOINTER", "1"},
                                {"EMPTY", ""},
                                {"WITH_EQUALS", "a=b"}}));
  EXPECT_EQ(start["env_count"], 4);
}

TEST(FakeCbsd, LookUpsPrintTheirDefaults) {
  scratch_dir dir;
  for (const std::string get : {"bget", "jget", "qget", "xget"}) {
    const auto run = run_fake(dir, {get, "jname=vm1", "mode=quiet", "vm_zfs_guid"});
    EXPECT_EQ(run.status, 0);
    EXPECT_EQ(run.out, get + "-guid-vm1\n");
  }
  auto run = run_fake(dir, {"bhyve-dsk", "mode=get", "jname=vm1", "dsk_path=dsk1", "dsk_zfs_guid"});
  EXPECT_EQ(run.out, "dsk-guid-vm1\n");
  run = run_fake(dir, {"bget", "jname=vm1", "mode=quiet", "bhyve_vnc_tcp_bind"});
  EXPECT_EQ(run.out, "127.0.0.1\n");
  run = run_fake(dir, {"bget", "jname=vm1", "mode=quiet", "vnc_port"});
  EXPECT_EQ(run.out, "5901\n");
  EXPECT_EQ(run.err, "");
  // Look-ups are recorded like any run.
  EXPECT_EQ(dir.records().size(), 14u);
}

TEST(FakeCbsd, RulesReplaceTheDefaults) {
  scratch_dir dir;
  dir.write("fake_cbsd.rules.json", json{
      {"bget vm_zfs_guid", {{"stdout", "line1\nline2\n"}, {"stderr", "warning: x\n"}}},
      {"bhyve-dsk dsk_zfs_guid", {{"exit", 1}}},
      {"jget *", {{"stdout", "any jget\n"}, {"exit", 3}}},
  }.dump());
  auto run = run_fake(dir, {"bget", "jname=vm1", "mode=quiet", "vm_zfs_guid"});
  EXPECT_EQ(run.status, 0);
  EXPECT_EQ(run.out, "line1\nline2\n");
  EXPECT_EQ(run.err, "warning: x\n");
  run = run_fake(dir, {"bhyve-dsk", "mode=get", "jname=vm1", "dsk_path=dsk1", "dsk_zfs_guid"});
  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.out, "");
  run = run_fake(dir, {"jget", "jname=j1", "mode=quiet", "vm_zfs_guid"});
  EXPECT_EQ(run.status, 3);
  EXPECT_EQ(run.out, "any jget\n");
  // No rule for this one: the default stays.
  run = run_fake(dir, {"bget", "jname=vm1", "mode=quiet", "vnc_port"});
  EXPECT_EQ(run.out, "5901\n");
  const auto records = dir.records();
  ASSERT_EQ(records.size(), 8u);
  EXPECT_EQ(records[3]["exit"], 1);
}

TEST(FakeCbsd, ExitStatusAndOutputComeFromArguments) {
  scratch_dir dir;
  auto run = run_fake(dir, {"jstart", "jname=j1", "fake_exit=7"});
  EXPECT_EQ(run.status, 7);
  EXPECT_EQ(run.out, "fake cbsd: jstart ok\n");

  run = run_fake(dir, {"jstart", "fake_stdout=hello \"world\"\n", "fake_stderr=oops\n"});
  EXPECT_EQ(run.status, 0);
  EXPECT_EQ(run.out, "hello \"world\"\n");
  EXPECT_EQ(run.err, "oops\n");

  run = run_fake(dir, {"jstart", "fake_stderr=only stderr"});
  EXPECT_EQ(run.out, "");

  const std::size_t big = 300'000; // more than a pipe holds: the reader must keep up
  run = run_fake(dir, {"jstart", "fake_stdout_bytes=" + std::to_string(big)});
  ASSERT_EQ(run.out.size(), big);
  EXPECT_EQ(run.out, fake_stdout_bytes_text(big));
  EXPECT_EQ(run.out.back(), '\n');
  EXPECT_EQ(fake_stdout_bytes_text(0), "");
  EXPECT_EQ(fake_stdout_bytes_text(1), "\n");

  const auto records = dir.records();
  ASSERT_EQ(records.size(), 8u);
  EXPECT_EQ(records[1]["exit"], 7);
}

TEST(FakeCbsd, TouchCreatesTheFile) {
  scratch_dir dir;
  const auto marker = dir.path / "it ran";
  const auto run = run_fake(dir, {"jstart", "fake_touch=" + marker.string()});
  EXPECT_EQ(run.status, 0);
  EXPECT_TRUE(std::filesystem::exists(marker));
}

TEST(FakeCbsd, WaitForHoldsTheRunUntilTheFileExists) {
  scratch_dir dir;
  const auto release = dir.path / "release";
  spawn_options options;
  options.cwd = dir.path.string();
  options.env = router_like_env;
  options.output_path = (dir.path / "out").string();
  const pid_t pid = spawn_process(
      {FAKE_CBSD_PATH, "jstart", "fake_stdout=early\n", "fake_wait_for=" + release.string()},
      options);
  ASSERT_TRUE(wait_until([&] { return dir.records().size() == 1; }));
  // Output comes before the wait, so a held job has already shown it.
  ASSERT_TRUE(wait_until([&] {
    std::ifstream in(dir.path / "out");
    std::string line;
    return std::getline(in, line) && line == "early";
  }));
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, WNOHANG), 0) << "ended before it was released";
  std::ofstream(release).put('x');
  const auto ended = wait_for_exit(pid, 30s);
  ASSERT_TRUE(ended);
  EXPECT_EQ(exit_status_of(*ended), 0);
  const auto records = dir.records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1]["event"], "end");
}

TEST(FakeCbsd, IgnoreTermSurvivesSigterm) {
  scratch_dir dir;
  const auto release = dir.path / "release";
  spawn_options options;
  options.cwd = dir.path.string();
  options.env = router_like_env;
  const pid_t pid = spawn_process({FAKE_CBSD_PATH, "jstart", "fake_ignore_term=1",
                                   "fake_stdout=", "fake_wait_for=" + release.string()},
                                  options);
  ASSERT_TRUE(wait_until([&] { return dir.records().size() == 1; }));
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  // A pending SIGTERM is acted on before the fake can see the file, so if it
  // were not ignored the run would end by the signal, not by the release.
  std::ofstream(release).put('x');
  const auto ended = wait_for_exit(pid, 30s);
  ASSERT_TRUE(ended);
  EXPECT_TRUE(WIFEXITED(*ended));
  EXPECT_EQ(exit_status_of(*ended), 0);
}

TEST(FakeCbsd, SpawnChildLeavesAGrandchildInItsProcessGroup) {
  scratch_dir dir;
  const auto release = dir.path / "release";
  spawn_options options;
  options.cwd = dir.path.string();
  options.env = router_like_env;
  const pid_t pid = spawn_process({FAKE_CBSD_PATH, "jstart", "fake_spawn_child=1",
                                   "fake_stdout=", "fake_wait_for=" + release.string()},
                                  options);
  ASSERT_TRUE(wait_until([&] { return dir.records().size() == 1; }));
  const auto start = dir.records()[0];
  ASSERT_TRUE(start.contains("grandchild_pid"));
  const pid_t grandchild = start["grandchild_pid"].get<pid_t>();
  EXPECT_EQ(getpgid(grandchild), getpgid(pid));
  std::ofstream(release).put('x');
  ASSERT_TRUE(wait_for_exit(pid, 30s));
  // The fake is gone; its grandchild lives on until its group is killed.
  EXPECT_EQ(getpgid(grandchild), pid);
  EXPECT_EQ(kill(-pid, SIGKILL), 0);
}

// ---------------------------------------------------------------- waits and processes

TEST(Wait, WaitUntilIsFalseWhenTheConditionNeverHolds) {
  int asked = 0;
  EXPECT_FALSE(wait_until([&] { return ++asked < 0; }, 50ms, 10ms));
  EXPECT_GE(asked, 2); // asked at the start and again at the deadline
}

TEST(Wait, WaitUntilIsTrueAsSoonAsTheConditionHolds) {
  int asked = 0;
  EXPECT_TRUE(wait_until([&] { return ++asked == 3; }, 30s, 1ms));
  EXPECT_EQ(asked, 3);
}

TEST(Processes, SpawnReportsAnExecFailure) {
  EXPECT_THROW(spawn_process({"/nonexistent/program"}), std::runtime_error);
}

TEST(Processes, ExitStatusOfASignalIs128PlusIt) {
  scratch_dir dir;
  spawn_options options;
  options.cwd = dir.path.string();
  const pid_t pid = spawn_process(
      {FAKE_CBSD_PATH, "jstart", "fake_stdout=", "fake_wait_for=/nonexistent/x"}, options);
  kill(pid, SIGKILL);
  const auto status = wait_for_exit(pid, 30s);
  ASSERT_TRUE(status);
  EXPECT_EQ(exit_status_of(*status), 128 + SIGKILL);
}

// ---------------------------------------------------------------- beanstalkd and the client

class Broker : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!beanstalkd_server::available()) GTEST_SKIP() << beanstalkd_server::executable << " missing";
  }
};

TEST_F(Broker, ServerListensOnLoopbackAndAnswersAsItself) {
  beanstalkd_server server;
  EXPECT_NE(server.port(), 0);
  EXPECT_EQ(server.uri(), "127.0.0.1:" + std::to_string(server.port()));
  beanstalk_test_client client(server);
  EXPECT_EQ(client.stats().at("pid"), std::to_string(server.pid()));
}

TEST_F(Broker, TwoServersGetTwoPorts) {
  beanstalkd_server first;
  beanstalkd_server second;
  EXPECT_NE(first.port(), second.port());
}

TEST_F(Broker, PutReserveDeleteRoundTripKeepsBodyBytes) {
  beanstalkd_server server;
  beanstalk_test_client client(server);
  const std::string body("line1\r\nline2\0end \xff", 19);
  const auto id = client.put("selftest_tube", body, 7, 0, 30);
  const auto stats = client.stats_job(id);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->at("tube"), "selftest_tube");
  EXPECT_EQ(stats->at("state"), "ready");
  EXPECT_EQ(stats->at("pri"), "7");
  EXPECT_EQ(stats->at("ttr"), "30");

  const auto job = client.reserve("selftest_tube", 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->body, body);
  EXPECT_EQ(client.stats_job(id)->at("state"), "reserved");
  EXPECT_TRUE(client.delete_job(id));
  EXPECT_FALSE(client.stats_job(id));
  EXPECT_FALSE(client.delete_job(id));
}

TEST_F(Broker, ReserveWatchesOnlyTheGivenTubes) {
  beanstalkd_server server;
  beanstalk_test_client client(server);
  client.put("other_tube", "not for us");
  EXPECT_FALSE(client.reserve("empty_tube", 0s));
  const auto id = client.put("wanted_tube", "for us");
  const auto job = client.reserve(std::vector<std::string>{"empty_tube", "wanted_tube"}, 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(client.stats_tube("other_tube")->at("current-jobs-ready"), "1");
}

TEST_F(Broker, BuryKickAndStatsTube) {
  beanstalkd_server server;
  beanstalk_test_client client(server);
  const auto id = client.put("t1", "x");
  ASSERT_TRUE(client.reserve("t1", 5s));
  EXPECT_TRUE(client.bury(id));
  EXPECT_EQ(client.stats_job(id)->at("state"), "buried");
  EXPECT_EQ(client.stats_tube("t1")->at("current-jobs-buried"), "1");
  EXPECT_TRUE(client.kick_job(id));
  EXPECT_EQ(client.stats_job(id)->at("state"), "ready");
  EXPECT_FALSE(client.stats_tube("never_used"));
  const auto tubes = client.list_tubes();
  EXPECT_NE(std::find(tubes.begin(), tubes.end(), "t1"), tubes.end());
  const auto peeked = client.peek_ready("t1");
  ASSERT_TRUE(peeked);
  EXPECT_EQ(peeked->body, "x");
}

TEST_F(Broker, RawCommandsReturnTheFirstLineAndKeepTheBody) {
  beanstalkd_server server;
  beanstalk_test_client client(server);
  EXPECT_EQ(client.command("no-such-command\r\n"), "UNKNOWN_COMMAND");
  EXPECT_EQ(client.command("use raw_tube\r\n"), "USING raw_tube");
  EXPECT_EQ(client.command("put 0 0 5 3\r\nabc\r\n").rfind("INSERTED ", 0), 0u);
  EXPECT_EQ(client.command("peek-ready\r\n").rfind("FOUND ", 0), 0u);
  EXPECT_EQ(client.last_body(), "abc");
  // The connection is still in step afterwards.
  EXPECT_EQ(client.command("list-tube-used\r\n"), "USING raw_tube");
}

TEST_F(Broker, MaxJobSizeOption) {
  beanstalkd_server::options options;
  options.max_job_size = 100;
  beanstalkd_server server(options);
  beanstalk_test_client client(server);
  EXPECT_NO_THROW(client.put("t", std::string(100, 'a')));
  EXPECT_THROW(client.put("t", std::string(101, 'a')), std::runtime_error);
  EXPECT_EQ(client.stats().at("max-job-size"), "100");
}

TEST_F(Broker, KilledServerRestartsOnTheSamePortAndKeepsJobsInItsBinlog) {
  scratch_dir binlog;
  beanstalkd_server::options options;
  options.binlog_dir = binlog.path.string();
  beanstalkd_server server(options);
  const auto port = server.port();
  const pid_t first_pid = server.pid();
  std::uint64_t id = 0;
  {
    beanstalk_test_client client(server);
    id = client.put("durable", "survives");
  }
  server.kill();
  EXPECT_FALSE(server.running());
  EXPECT_THROW(beanstalk_test_client(server.host(), port), connection_lost);
  server.restart();
  EXPECT_EQ(server.port(), port);
  EXPECT_NE(server.pid(), first_pid);
  beanstalk_test_client client(server);
  const auto job = client.reserve("durable", 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->body, "survives");
}

TEST_F(Broker, StoppedServerWithoutBinlogForgetsJobs) {
  beanstalkd_server server;
  std::uint64_t id = 0;
  {
    beanstalk_test_client client(server);
    id = client.put("volatile", "gone");
  }
  server.stop();
  server.restart();
  beanstalk_test_client client(server);
  EXPECT_FALSE(client.stats_job(id));
}

TEST_F(Broker, SuspendedServerKeepsTheConnectionButDoesNotAnswer) {
  beanstalkd_server server;
  beanstalk_test_client client(server);
  client.set_read_timeout(200ms);
  server.suspend();
  try {
    client.stats();
    ADD_FAILURE() << "a suspended server answered";
  } catch (const connection_lost& e) {
    ADD_FAILURE() << "the connection was lost: " << e.what();
  } catch (const std::runtime_error&) {
    // expected: no reply before the read deadline
  }
  server.resume();
  beanstalk_test_client fresh(server);
  EXPECT_EQ(fresh.stats().at("pid"), std::to_string(server.pid()));
}

TEST_F(Broker, WaitReplyParsesAndDeletes) {
  beanstalkd_server server;
  beanstalk_test_client client(server);
  const auto id = client.put("reply_tube1", R"({"ErrCode":0,"Message":"ok\n","Progress":100})", 1);
  const auto reply = client.wait_reply("reply_tube1", 5s);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["Message"], "ok\n");
  EXPECT_FALSE(client.stats_job(id));
  EXPECT_FALSE(client.wait_reply("reply_tube1", 0s));
  client.put("reply_tube1", "not json");
  EXPECT_THROW(client.wait_reply("reply_tube1", 5s), std::runtime_error);
}

TEST_F(Broker, WaitFinalReplyCollectsProgressUntil100) {
  beanstalkd_server server;
  beanstalk_test_client client(server);
  client.put("progress_tube", R"({"Progress":10,"Message":"a"})", 1);
  client.put("progress_tube", R"({"Progress":50,"Message":"b"})", 1);
  client.put("progress_tube", R"({"Progress":100,"ErrCode":0})", 1);
  client.put("progress_tube", R"({"Progress":100,"ErrCode":9})", 1);
  const auto replies = client.wait_final_reply("progress_tube", 10s);
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_EQ(replies[0]["Message"], "a");
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  // Stops at the first final reply and leaves the rest.
  EXPECT_EQ(client.stats_tube("progress_tube")->at("current-jobs-ready"), "1");
}

// ---------------------------------------------------------------- the pool

TEST_F(Broker, PoolIsAnInitialisedWorkspaceWithItsOwnTube) {
  beanstalkd_server server;
  std::filesystem::path dir;
  {
    test_pool pool(server, json{{"max_jobs", 2}, {"beanstalkd", {{"reserve_timeout", 3}}}});
    test_pool other(server);
    dir = pool.dir();
    EXPECT_TRUE(std::filesystem::exists(dir / "nc.inventory"));
    EXPECT_TRUE(std::filesystem::is_directory(pool.logdir()));
    EXPECT_TRUE(std::filesystem::is_directory(pool.statedir()));
    EXPECT_NE(pool.tube(), other.tube());
    EXPECT_EQ(pool.tube().rfind("cbsd_", 0), 0u);
    EXPECT_EQ(pool.reply_tube(42), pool.tube() + "_result_id42");

    const auto cfg = json::parse(std::ifstream(pool.config_path()));
    EXPECT_EQ(cfg, pool.config());
    EXPECT_EQ(cfg["cbsdenv"], dir.string());
    EXPECT_EQ(cfg["broker"], "beanstalkd");
    EXPECT_EQ(cfg["cbsd_path"], FAKE_CBSD_PATH);
    EXPECT_EQ(cfg["max_jobs"], 2);
    EXPECT_EQ(cfg["logfile"], (dir / "router.log").string());
    EXPECT_EQ(cfg["statedir"], (dir / "state").string());
    const auto& bs = cfg["beanstalkd"];
    EXPECT_EQ(bs["uri"], server.uri());
    EXPECT_EQ(bs["tube"], pool.tube());
    EXPECT_EQ(bs["reply_tube_prefix"], pool.tube() + "_result_id");
    EXPECT_EQ(bs["reserve_timeout"], 3); // merged, not replaced
    EXPECT_EQ(bs["reconnect_timeout"], 1);
    EXPECT_EQ(bs["publish_timeout"], 5);
    EXPECT_EQ(bs["logdir"], (dir / "logdir").string());

    pool.write_config(json{{"beanstalkd", {{"tube", nullptr}}}});
    EXPECT_FALSE(pool.config()["beanstalkd"].contains("tube"));
    EXPECT_FALSE(pool.config().contains("max_jobs"));
  }
  EXPECT_FALSE(std::filesystem::exists(dir)) << "a passing test's pool is removed";
}

TEST_F(Broker, PoolPutsJobsOnItsTubeAndReadsReplies) {
  beanstalkd_server server;
  test_pool pool(server);
  const auto id = pool.put_job(json{{"Command", "jstart"}, {"CommandArgs", {{"jname", "j1"}}}});
  const auto raw_id = pool.put_job(std::string("{not json"));
  const auto literal_id = pool.put_job("{\"Command\":\"jstop\"}");
  beanstalk_test_client worker(server);
  auto job = worker.reserve(pool.tube(), 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(json::parse(job->body)["CommandArgs"]["jname"], "j1");
  job = worker.reserve(pool.tube(), 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, raw_id);
  EXPECT_EQ(job->body, "{not json");
  job = worker.reserve(pool.tube(), 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, literal_id);
  EXPECT_EQ(job->body, "{\"Command\":\"jstop\"}");

  worker.put(pool.reply_tube(id), R"({"Progress":100,"ErrCode":0})", 1);
  const auto replies = pool.wait_final_reply(id, 5s);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0]["ErrCode"], 0);
}

TEST_F(Broker, PoolKeepsTheKeyOrderOfABodyWrittenInPlace) {
  beanstalkd_server server;
  test_pool pool(server);
  const auto written = pool.put_job({{"Command", "jcreate"},
                                     {"CommandArgs", {{"jname", "j1"}, {"astart", "1"}}}});
  const json sorted = {{"Command", "jcreate"}, {"CommandArgs", {{"jname", "j1"}, {"astart", "1"}}}};
  const auto from_json = pool.put_job(sorted);
  beanstalk_test_client worker(server);
  auto job = worker.reserve(pool.tube(), 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, written);
  EXPECT_EQ(job->body, R"({"Command":"jcreate","CommandArgs":{"jname":"j1","astart":"1"}})");
  job = worker.reserve(pool.tube(), 5s);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, from_json);
  EXPECT_EQ(job->body, R"({"Command":"jcreate","CommandArgs":{"astart":"1","jname":"j1"}})");
}

TEST_F(Broker, PoolClientReconnectsAfterTheBrokerRestarts) {
  scratch_dir binlog;
  beanstalkd_server::options options;
  options.binlog_dir = binlog.path.string();
  beanstalkd_server server(options);
  test_pool pool(server);
  pool.put_job(json{{"Command", "a"}});
  server.kill();
  server.restart();
  const auto id = pool.put_job(json{{"Command", "b"}});
  EXPECT_TRUE(pool.client().stats_job(id));
}

TEST_F(Broker, PoolSeesTheFakesRecordsAndRules) {
  beanstalkd_server server;
  test_pool pool(server);
  pool.write_rules(json{{"bget vm_zfs_guid", {{"stdout", "custom\n"}}}});
  spawn_options options;
  options.cwd = pool.dir().string();
  options.env = router_like_env;
  std::string out;
  EXPECT_EQ(run_captured({FAKE_CBSD_PATH, "bget", "jname=v", "mode=quiet", "vm_zfs_guid"},
                         options, &out, nullptr),
            0);
  EXPECT_EQ(out, "custom\n");
  EXPECT_EQ(run_captured({FAKE_CBSD_PATH, "jstart", "jname=v"}, options, nullptr, nullptr), 0);
  EXPECT_EQ(pool.records().size(), 4u);
  const auto runs = pool.runs_of("jstart");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["argv"][2], "jname=v");
  EXPECT_EQ(runs[0]["env"]["workdir"], "/pool1");
  EXPECT_TRUE(pool.runs_of("jstop").empty());
}

} // namespace
} // namespace bs_router::testing
