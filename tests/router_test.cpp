// The router end to end: a real beanstalkd, the real daemon, the fake cbsd.

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "support/beanstalk_test_client.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/claiming_proxy.hpp"
#include "support/loopback.hpp"
#include "support/scripted_broker.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;
using body = nlohmann::ordered_json; // keeps the keys of a job body in order
using namespace std::chrono_literals;

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string hex_of(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

class RouterTest : public ::testing::Test {
 protected:
  beanstalkd_server server;
};

TEST_F(RouterTest, RunsCbsdWithArgvEnvironmentAndWorkdirAndReplies) {
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(body::parse(
      R"({"Command":"jcreate","CommandArgs":{"jname":"jail1","jail_profile":"default","astart":"1"}})"));
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  const json& reply = replies.back();
  EXPECT_EQ(reply["ErrCode"], 0);
  EXPECT_EQ(reply["Message"], "fake cbsd: jcreate ok\n");
  EXPECT_EQ(reply["Progress"], 100);
  EXPECT_EQ(reply["Guid"], "bget-guid-jail1");
  EXPECT_EQ(reply["DskGuid"], "dsk-guid-jail1");
  EXPECT_EQ(reply["Vnc"], "");

  auto runs = pool.runs_of("jcreate");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["argv"], json::array({FAKE_CBSD_PATH, "jcreate", "jname=jail1",
                                          "jail_profile=default", "astart=1"}));
  const std::string workdir = pool.dir().string();
  EXPECT_EQ(runs[0]["env"], (json{{"PATH", "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"},
                                  {"workdir", workdir},
                                  {"cbsd_workdir", workdir},
                                  {"NOINTER", "1"},
                                  {"NOCOLOR", "1"}}));
  EXPECT_EQ(runs[0]["cwd"], workdir);

  // The look-ups through cbsd (this pool has no CBSD databases): Guid from
  // `<get> jname=J mode=quiet vm_zfs_guid`, DskGuid from
  // `bhyve-dsk mode=get jname=J dsk_path=dsk1 dsk_zfs_guid`.
  auto guid = pool.runs_of("bget");
  ASSERT_EQ(guid.size(), 1u);
  EXPECT_EQ(guid[0]["argv"], json::array({FAKE_CBSD_PATH, "bget", "jname=jail1", "mode=quiet", "vm_zfs_guid"}));
  auto dsk = pool.runs_of("bhyve-dsk");
  ASSERT_EQ(dsk.size(), 1u);
  EXPECT_EQ(dsk[0]["argv"], json::array({FAKE_CBSD_PATH, "bhyve-dsk", "mode=get", "jname=jail1",
                                         "dsk_path=dsk1", "dsk_zfs_guid"}));
  // The job is deleted from the broker right after its reply is put.
  EXPECT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); }));
}

TEST_F(RouterTest, ReplyHasPriorityOneAndPublishTimeoutAsTtr) {
  test_pool pool(server, json{{"beanstalkd", {{"publish_timeout", 7}}}});
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"jls"})");
  beanstalk_test_client watcher(server);
  auto reply = watcher.reserve(pool.reply_tube(id), 30s);
  ASSERT_TRUE(reply.has_value());
  auto stats = watcher.stats_job(reply->id);
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->at("pri"), "1");
  EXPECT_EQ(stats->at("ttr"), "7");
  EXPECT_EQ(stats->at("delay"), "0");
  EXPECT_EQ(json::parse(reply->body)["Guid"], "0"); // no jname: no look-ups
  EXPECT_TRUE(pool.runs_of("bget").empty());
}

TEST_F(RouterTest, ColorKeepsNocolorOut) {
  test_pool pool(server, json{{"cbsdcolor", true}});
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"jls"})");
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  auto runs = pool.runs_of("jls");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_FALSE(runs[0]["env"].contains("NOCOLOR"));
  EXPECT_EQ(runs[0]["env"]["NOINTER"], "1");
}

TEST_F(RouterTest, GetCommandFollowsEmulatorAndBstartAsksForVnc) {
  test_pool pool(server);
  pool.start_router();
  struct expectation {
    std::string emulator, command, guid;
  };
  for (const auto& e : {expectation{"jail", "jstart", "jget-guid-j1"}, expectation{"qemu", "qstart", "qget-guid-j1"},
                        expectation{"xen", "xstart", "xget-guid-j1"}, expectation{"bhyve", "bstop", "bget-guid-j1"}}) {
    const auto id = pool.put_job(body{{"Command", e.command}, {"CommandArgs", {{"jname", "j1"}, {"emulator", e.emulator}}}});
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty());
    EXPECT_EQ(replies.back()["Guid"], e.guid) << e.emulator;
    EXPECT_EQ(replies.back()["Vnc"], "") << e.emulator;
  }
  const auto id = pool.put_job(R"({"Command":"bstart","CommandArgs":{"jname":"vm1"}})");
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Vnc"], "127.0.0.1:5901");
  bool asked_bind = false, asked_port = false;
  for (const auto& r : pool.runs_of("bget")) {
    if (r["argv"] == json::array({FAKE_CBSD_PATH, "bget", "jname=vm1", "mode=quiet", "bhyve_vnc_tcp_bind"})) asked_bind = true;
    if (r["argv"] == json::array({FAKE_CBSD_PATH, "bget", "jname=vm1", "mode=quiet", "vnc_port"})) asked_port = true;
  }
  EXPECT_TRUE(asked_bind);
  EXPECT_TRUE(asked_port);
}

TEST_F(RouterTest, LookupCountsOnlyWhenItPrintsExactlyOneLine) {
  test_pool pool(server);
  // Current CBSD prints every setting for a key it does not know, and
  // warnings on stderr: neither may end up in Guid.
  pool.write_rules(json{{"bget vm_zfs_guid", {{"stdout", "jname: vm1\nvm_ram: 1g\n"}, {"exit", 0}}},
                        {"bhyve-dsk dsk_zfs_guid", {{"stdout", "1234\n"}, {"stderr", "warning: zfs\n"}, {"exit", 1}}},
                        {"bget vnc_port", {{"stdout", "5902\n"}, {"stderr", "warning: something\n"}, {"exit", 0}}}});
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"bstart","CommandArgs":{"jname":"vm1"}})");
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "0");
  EXPECT_EQ(replies.back()["DskGuid"], "0");
  EXPECT_EQ(replies.back()["Vnc"], "127.0.0.1:5902");
  // Look-up warnings go to the job's stderr file, not into the fields.
  EXPECT_NE(read_file(pool.logdir() / (std::to_string(id) + ".err")).find("warning: something"), std::string::npos);
}

TEST_F(RouterTest, ValuesReachCbsdByteForByteAndNoShellRuns) {
  // $ ` \ are refused unless let through (see ValuesCbsdWouldEvaluateAreRefused...).
  test_pool pool(server, json{{"allow_unsafe_values", true}});
  pool.start_router();
  const std::string marker = (pool.dir() / "INJECTED").string();
  const std::vector<std::string> values = {
      "\"; touch " + marker + "; \"", "$(touch " + marker + ")", "`touch " + marker + "`",
      "a\nb\r\nc", "it's \"quoted\" \\ back", "ünïcødé ✓ 日本", "  spaces  ", "a;b|c&d>e<f", "",
  };
  json args = json::object();
  for (std::size_t i = 0; i < values.size(); ++i) args["v" + std::to_string(i)] = values[i];
  const auto id = pool.put_job(body{{"Command", "jexec"}, {"CommandArgs", args}});
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  auto runs = pool.runs_of("jexec");
  ASSERT_EQ(runs.size(), 1u);
  ASSERT_EQ(runs[0]["argv_hex"].size(), values.size() + 2);
  for (std::size_t i = 0; i < values.size(); ++i)
    EXPECT_EQ(runs[0]["argv_hex"][i + 2], hex_of("v" + std::to_string(i) + "=" + values[i])) << i;
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST_F(RouterTest, NumbersAndBooleansAreRenderedAsSpecSays) {
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(std::string(
      R"({"Command":"bcreate","JobID":999,"CommandArgs":{"a":1,"b":-42,"c":1.5,"d":2.0,"e":0.1,"f":true,"g":false,"h":18446744073709551615,"i":1e21}})"));
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  auto runs = pool.runs_of("bcreate");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["argv"], json::array({FAKE_CBSD_PATH, "bcreate", "a=1", "b=-42", "c=1.5", "d=2", "e=0.1", "f=1",
                                          "g=0", "h=18446744073709551615", "i=1000000000000000000000"}));
}

TEST_F(RouterTest, NumbersReachCbsdDigitForDigit) {
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(std::string(
      R"({"Command":"bcreate","CommandArgs":{"a":123456789012345678901234567890,"b":0.10000000000000000001,)"
      R"("c":1E2,"d":-0,"e":-1.250e-3}})"));
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  auto runs = pool.runs_of("bcreate");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["argv"], json::array({FAKE_CBSD_PATH, "bcreate", "a=123456789012345678901234567890",
                                          "b=0.10000000000000000001", "c=100", "d=0", "e=-0.00125"}));
}

TEST_F(RouterTest, TimeoutsOutOfRangeGetAnErrorReplyAndNothingRuns) {
  test_pool pool(server, json{{"job_timeout", 2}});
  pool.start_router();
  for (const char* timeout : {"1e300", "0.0001", "1e10", "-1", "\"5\""}) {
    const auto id = pool.put_job(std::string(R"({"Command":"jls","Timeout":)") + timeout + "}");
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty()) << timeout;
    EXPECT_EQ(replies.back()["ErrCode"], 1000) << timeout;
    EXPECT_NE(replies.back()["Message"].get<std::string>().find("\"Timeout\" must be"), std::string::npos)
        << timeout << ": " << replies.back()["Message"];
  }
  EXPECT_TRUE(pool.records().empty());
  EXPECT_TRUE(pool.router_running());
}

TEST_F(RouterTest, BadInputGetsAnErrorReplyAndNothingRuns) {
  test_pool pool(server);
  pool.start_router();
  const std::vector<std::string> bodies = {
      "not json",
      "[1,2]",
      R"({"CommandArgs":{}})",
      R"({"Command":42})",
      R"({"Command":"-rf"})",
      R"({"Command":"jls; reboot"})",
      R"({"Command":""})",
      R"({"Command":"jls","CommandArgs":{"a b":"1"}})",
      R"({"Command":"jls","CommandArgs":{"x":null}})",
      R"({"Command":"jls","CommandArgs":{"x":[1]}})",
      R"({"Command":"jls","CommandArgs":{"x":{"y":1}}})",
      R"({"Command":"jls","CommandArgs":{"x":"a\u0000b"}})",
      R"({"Command":"jls","CommandArgs":"jname=x"})",
      std::string(200, '[') + std::string(200, ']'),
      std::string("{\"Command\":\"jls\",\"x\":\"\xff\xfe\"}"),
  };
  for (const std::string& body : bodies) {
    const auto id = pool.put_job(body);
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty()) << body;
    EXPECT_EQ(replies.back()["ErrCode"], 1000) << body;
    EXPECT_NE(replies.back()["Message"].get<std::string>().find("bad job"), std::string::npos) << body;
    EXPECT_EQ(replies.back()["Progress"], 100);
    EXPECT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); })) << body;
  }
  EXPECT_TRUE(pool.records().empty());
  // Still serving.
  const auto id = pool.put_job(R"({"Command":"jls"})");
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_TRUE(pool.router_running());
}

TEST_F(RouterTest, ExitStatusAndStderrAreReported) {
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"jstart","CommandArgs":{"fake_exit":3,"fake_stdout":"out\n","fake_stderr":"oops\n"}})");
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 3);
  EXPECT_EQ(replies.back()["Message"], "out\n");
  EXPECT_EQ(replies.back()["Stderr"], "oops\n");
  // The per-job files: the command line, stdout and stderr.
  const std::string base = (pool.logdir() / std::to_string(id)).string();
  EXPECT_EQ(read_file(base + ".out"), "out\n");
  EXPECT_EQ(read_file(base + ".err"), "oops\n");
  const std::string cmd = read_file(base + ".cmd");
  EXPECT_NE(cmd.find("jstart"), std::string::npos);
  EXPECT_NE(cmd.find("fake_exit=3"), std::string::npos);
}

TEST_F(RouterTest, LargeOutputIsCutToTheBrokersJobSizeAndKeptWhole) {
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"jls","CommandArgs":{"fake_stdout_bytes":300000}})");
  beanstalk_test_client watcher(server);
  auto raw = watcher.reserve(pool.reply_tube(id), 30s);
  ASSERT_TRUE(raw.has_value());
  const std::size_t max_job_size = std::stoul(watcher.stats().at("max-job-size"));
  EXPECT_LE(raw->body.size(), max_job_size);
  json reply = json::parse(raw->body);
  EXPECT_EQ(reply["ErrCode"], 0);
  EXPECT_EQ(reply["Truncated"], true);
  EXPECT_EQ(reply["MessageBytes"], 300000);
  const std::string full = read_file(pool.logdir() / (std::to_string(id) + ".out"));
  EXPECT_EQ(full, fake_stdout_bytes_text(300000));
  const std::string message = reply["Message"];
  EXPECT_GT(message.size(), 0u);
  EXPECT_EQ(full.compare(0, message.size(), message), 0); // the beginning is kept
}

TEST(RouterSmallBroker, ReplyFitsASmallerMaxJobSize) {
  beanstalkd_server::options opts;
  opts.max_job_size = 4096;
  beanstalkd_server server(opts);
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"jls","CommandArgs":{"fake_stdout_bytes":20000,"fake_stderr":"e"}})");
  beanstalk_test_client watcher(server);
  auto raw = watcher.reserve(pool.reply_tube(id), 30s);
  ASSERT_TRUE(raw.has_value());
  EXPECT_LE(raw->body.size(), 4096u);
  EXPECT_EQ(json::parse(raw->body)["Truncated"], true);
}

// A broker that answers every reserve at once with TIMED_OUT. The window is
// the run of the one job it hands out (cbsd sleeps 3 s): from its bury to the
// put of its reply. docs/GUARANTEES.md promises at most 5 + t reserves in t
// seconds of such answers (without the back-off: thousands).
TEST(RouterScriptedBroker, BacksOffFromABrokerThatAnswersEveryReserveAtOnce) {
  beanstalkd_server unused; // the pool wants one; the router talks to the scripted broker
  scripted_broker broker({R"({"Command":"jcreate","CommandArgs":{"fake_sleep_ms":3000}})", 0});
  test_pool pool(unused, json{{"beanstalkd", {{"uri", broker.uri()}}}});
  pool.start_router();
  ASSERT_TRUE(wait_until([&] { return broker.count("delete") == 1; }, 60s)) << pool.log_text();
  std::optional<std::chrono::steady_clock::time_point> bury, put;
  std::size_t reserves = 0;
  for (const auto& c : broker.commands()) {
    if (c.word == "bury" && !bury) bury = c.at;
    if (c.word == "put" && !put) put = c.at;
    if (bury && !put && c.word == "reserve-with-timeout") ++reserves;
  }
  ASSERT_TRUE(bury && put);
  const double window = std::chrono::duration<double>(*put - *bury).count();
  EXPECT_GE(window, 3.0);
  EXPECT_GE(reserves, 2u); // it goes on asking
  EXPECT_LE(static_cast<double>(reserves), 5 + std::ceil(window)) << "over " << window << " s";
  EXPECT_EQ(pool.stop_router(), 0); // SIGTERM ends the pause
}

// A broker that sends lines nobody asked for (here, more TIMED_OUT after
// each answer to a reserve, which would answer the next reserves before
// they are sent): the router closes the connection and connects again
// after reconnect_timeout, rather than spinning on the lines.
TEST(RouterScriptedBroker, ClosesAConnectionThatSendsLinesNobodyAskedFor) {
  beanstalkd_server unused;
  scripted_broker broker({"", 100});
  test_pool pool(unused, json{{"beanstalkd", {{"uri", broker.uri()}}}});
  pool.start_router();
  ASSERT_TRUE(wait_until([&] { return broker.closed_by_peer() >= 2; })) << broker.count("reserve-with-timeout");
  std::map<std::size_t, std::size_t> reserves; // per connection
  for (const auto& c : broker.commands())
    if (c.word == "reserve-with-timeout") ++reserves[c.connection];
  for (std::size_t connection = 1; connection <= 2; ++connection) EXPECT_LE(reserves[connection], 2u);
  EXPECT_NE(pool.log_text().find("more than the answers to the commands sent"), std::string::npos);
  EXPECT_TRUE(pool.router_running());
}

// A bury answered NOT_FOUND (the job's TTR ran out before the bury came) is
// not a broken connection: the job is settled on the same connection (the
// broker has it ready again, so the entry is dropped and nothing runs), and
// the router neither reconnects nor pauses.
TEST(RouterScriptedBroker, ABuryAnsweredNotFoundIsSettledWithoutAReconnect) {
  beanstalkd_server unused;
  scripted_broker::options opts;
  opts.job_body = R"({"Command":"jls"})";
  opts.bury_not_found = true;
  scripted_broker broker(opts);
  test_pool pool(unused, json{{"beanstalkd", {{"uri", broker.uri()}}}});
  pool.start_router();
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("the journal entry is dropped") != std::string::npos; }))
      << pool.log_text();
  // The worker goes on reserving on its first connection.
  const std::size_t reserves = broker.count("reserve-with-timeout");
  ASSERT_TRUE(wait_until([&] { return broker.count("reserve-with-timeout") > reserves; })) << pool.log_text();
  std::set<std::size_t> reserving;
  for (const auto& c : broker.commands())
    if (c.word == "reserve-with-timeout") reserving.insert(c.connection);
  EXPECT_EQ(reserving.size(), 1u) << pool.log_text();
  EXPECT_EQ(pool.log_text().find("reconnecting"), std::string::npos) << pool.log_text();
  EXPECT_EQ(broker.count("put"), 0u); // nothing ran, nothing to answer
  EXPECT_EQ(pool.stop_router(), 0);
}

// A broker that takes a gigabyte per job does not make the router hold one:
// replies, progress ones too, stay within max_reply_bytes.
TEST(RouterHugeBroker, RepliesStayWithinMaxReplyBytes) {
  beanstalkd_server::options opts;
  opts.max_job_size = 1073741824; // beanstalkd's own ceiling
  beanstalkd_server server(opts);
  const std::size_t max_reply_bytes = 65536;
  test_pool pool(server, json{{"progress", true}, {"max_reply_bytes", max_reply_bytes}});
  pool.start_router();
  const std::filesystem::path gate = pool.dir() / "gate";
  const std::size_t printed = 3000000;
  const auto id = pool.put_job(body{{"Command", "jls"},
                                    {"CommandArgs", {{"fake_stdout_bytes", printed}, {"fake_wait_for", gate.string()}}}});
  beanstalk_test_client watcher(server);
  auto first = watcher.reserve(pool.reply_tube(id), 30s);
  ASSERT_TRUE(first.has_value());
  EXPECT_LE(first->body.size(), max_reply_bytes);
  EXPECT_LT(json::parse(first->body)["Progress"].get<int>(), 100);
  watcher.delete_job(first->id);
  std::ofstream(gate) << "go";
  for (;;) {
    auto raw = watcher.reserve(pool.reply_tube(id), 30s);
    ASSERT_TRUE(raw.has_value());
    EXPECT_LE(raw->body.size(), max_reply_bytes);
    watcher.delete_job(raw->id);
    const json reply = json::parse(raw->body);
    if (reply["Progress"] != 100) continue;
    EXPECT_EQ(reply["Truncated"], true);
    EXPECT_EQ(reply["MessageBytes"], printed);
    EXPECT_EQ(fake_stdout_bytes_text(printed).compare(0, reply["Message"].get<std::string>().size(),
                                                      reply["Message"].get<std::string>()), 0);
    break;
  }
}

// A broker may claim any max-job-size: the replies, progress ones included,
// still fit max_reply_bytes (and its binlog), and progress goes on.
TEST(RouterHugeBroker, AnyClaimOfMaxJobSizeGivesRepliesWithinMaxReplyBytes) {
  for (const char* claim : {"18446744073709551615", "-1"}) {
    SCOPED_TRACE(claim);
    beanstalkd_server::options opts;
    opts.max_job_size = 1073741824; // would take what the claim allows
    beanstalkd_server server(opts);
    claiming_proxy proxy(server.port(), claim);
    const std::size_t max_reply_bytes = 65536;
    test_pool pool(server, json{{"progress", true}, {"max_reply_bytes", max_reply_bytes}, {"beanstalkd", {{"uri", proxy.uri()}}}});
    pool.start_router();
    const std::filesystem::path gate = pool.dir() / "gate";
    const auto id = pool.put_job(body{{"Command", "jls"},
                                      {"CommandArgs", {{"fake_stdout_bytes", 3000000}, {"fake_wait_for", gate.string()}}}});
    beanstalk_test_client watcher(server);
    std::size_t progress = 0;
    for (;;) {
      auto raw = watcher.reserve(pool.reply_tube(id), 30s);
      ASSERT_TRUE(raw.has_value()) << "after " << progress << " progress replies";
      EXPECT_LE(raw->body.size(), max_reply_bytes);
      watcher.delete_job(raw->id);
      if (json::parse(raw->body)["Progress"] == 100) break;
      if (++progress == 2) std::ofstream(gate) << "go"; // live output goes on past the first
    }
    EXPECT_EQ(progress, 2u);
    EXPECT_EQ(pool.log_text().find("stopped"), std::string::npos) << pool.log_text();
  }
}

// What each job keeps on disk is capped as it is written, with a marker where
// it was cut; the reply still says how much cbsd printed.
TEST_F(RouterTest, PerJobFilesAreCutAtTheirCapWithAMarker) {
  const std::size_t cap = 20000;
  test_pool pool(server, json{{"joblog_max_output_bytes", cap}});
  pool.start_router();
  const auto id = pool.put_job(
      body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout_bytes", 300000}, {"fake_stderr", std::string(30000, 'e')}}}});
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["MessageBytes"], 300000);
  EXPECT_EQ(replies.back()["StderrBytes"], 30000);
  const std::string marker = "\n[bs_router: output cut here: only the first 20000 bytes are kept (joblog_max_output_bytes)]\n";
  EXPECT_EQ(read_file(pool.logdir() / (std::to_string(id) + ".out")), fake_stdout_bytes_text(300000).substr(0, cap) + marker);
  EXPECT_EQ(read_file(pool.logdir() / (std::to_string(id) + ".err")), std::string(cap, 'e') + marker);
}

// The count and byte bounds of logdir hold after every job, not only at the
// next periodic pass.
TEST_F(RouterTest, PerJobFileCountAndBytesHoldAfterEachJob) {
  const std::uint64_t max_bytes = 250000;
  test_pool pool(server, json{{"joblog_max_files", 3}, {"joblog_max_bytes", max_bytes}});
  pool.start_router();
  const auto on_disk = [&] {
    std::set<std::string> jobs;
    std::uint64_t bytes = 0;
    for (const auto& entry : std::filesystem::directory_iterator(pool.logdir())) {
      jobs.insert(entry.path().stem().string());
      bytes += entry.file_size();
    }
    return std::pair(jobs.size(), bytes);
  };
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(pool.put_job(body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout_bytes", i % 2 ? 100000 : 10}}}}));
    ASSERT_FALSE(pool.wait_final_reply(ids.back()).empty());
    const auto [jobs, bytes] = on_disk();
    EXPECT_LE(jobs, 3u) << "after job " << i;
    EXPECT_LE(bytes, max_bytes) << "after job " << i;
    EXPECT_TRUE(std::filesystem::exists(pool.logdir() / (std::to_string(ids.back()) + ".out")));
  }
  EXPECT_FALSE(std::filesystem::exists(pool.logdir() / (std::to_string(ids[0]) + ".cmd")));
}

TEST_F(RouterTest, WatchesOnlyItsOwnTube) {
  test_pool pool(server);
  pool.start_router();
  const auto stray = pool.client().put("default", R"({"Command":"jls"})");
  const auto id = pool.put_job(R"({"Command":"jls"})");
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  auto stats = pool.client().stats_job(stray);
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->at("state"), "ready");
  EXPECT_EQ(pool.runs_of("jls").size(), 1u);
}

TEST_F(RouterTest, LogsOneLineAtStartAndEndOfAJobAndNothingWhenIdle) {
  test_pool pool(server);
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"jstart","CommandArgs":{"jname":"web1"}})");
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("finished") != std::string::npos; }));
  const std::string log = pool.log_text();
  EXPECT_NE(log.find("job " + std::to_string(id) + " jstart jname=web1: started"), std::string::npos) << log;
  EXPECT_NE(log.find("job " + std::to_string(id) + " jstart jname=web1: finished, ErrCode 0"), std::string::npos) << log;

  // Several idle reserve cycles (reserve_timeout is 1 s) leave the log alone.
  auto reserves = [&] { return std::stoul(pool.client().stats().at("cmd-reserve-with-timeout")); };
  const auto before = reserves();
  ASSERT_TRUE(wait_until([&] { return reserves() >= before + 3; }));
  EXPECT_EQ(pool.log_text(), log);
}

TEST_F(RouterTest, JobTextReachesTheLogEscapedOnItsOwnLine) {
  test_pool pool(server);
  pool.start_router();
  const std::string forged = "\n2026-01-01T00:00:00.000+0000 bs_router[1] critical: worker stopped: FORGED";
  const auto id = pool.put_job(body{{"Command", "jstart"}, {"CommandArgs", {{"jname", "vm1" + forged + "\x1b[2J"}}}});
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  // Refusals quote the body: a C1 CSI and an OSC title sequence in a Command.
  const auto bad = pool.put_job(std::string("{\"Command\":\"\\u009b2J\\u001b]0;FORGED\\u0007\"}"));
  ASSERT_FALSE(pool.wait_final_reply(bad).empty());
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("job " + std::to_string(bad) + ": refused") != std::string::npos; }));

  const std::string log = pool.log_text();
  for (unsigned char c : log) ASSERT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << "byte " << int(c) << " in\n" << log;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("FORGED") == std::string::npos) continue;
    EXPECT_TRUE(line.find("job " + std::to_string(id) + " jstart jname=vm1\\n") != std::string::npos ||
                line.find("job " + std::to_string(bad) + ": refused") != std::string::npos)
        << line;
  }
  EXPECT_NE(log.find("jname=vm1\\n2026-01-01T00:00:00.000+0000 bs_router[1] critical: worker stopped: FORGED\\x1b[2J: "
                     "started"),
            std::string::npos)
      << log;
}

TEST_F(RouterTest, ComesBackAfterTheBrokerIsKilledAndRestarted) {
  test_pool pool(server);
  pool.start_router();
  server.kill();
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("reconnecting") != std::string::npos; }));
  server.restart();
  pool.client().connect(server.host(), server.port());
  const auto id = pool.put_job(R"({"Command":"jls"})");
  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
}

TEST_F(RouterTest, NoticesABrokerThatGoesSilent) {
  test_pool pool(server);
  pool.start_router();
  server.suspend();
  // The reserve's deadline passes and the router reconnects on its own.
  ASSERT_TRUE(wait_until([&] { return pool.log_text().find("did not answer in time") != std::string::npos; }, 60s))
      << pool.log_text();
  server.resume();
  const auto id = pool.put_job(R"({"Command":"jls"})");
  auto replies = pool.wait_final_reply(id, 60s);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
}

TEST_F(RouterTest, TwoPoolsOnOneBrokerKeepTheirWorkdirs) {
  test_pool pool1(server);
  test_pool pool2(server);
  pool1.start_router();
  pool2.start_router();
  const auto id1 = pool1.put_job(R"({"Command":"jls"})");
  const auto id2 = pool2.put_job(R"({"Command":"bls"})");
  ASSERT_FALSE(pool1.wait_final_reply(id1).empty());
  ASSERT_FALSE(pool2.wait_final_reply(id2).empty());
  ASSERT_EQ(pool1.records().size(), 2u); // start and end of jls
  ASSERT_EQ(pool2.records().size(), 2u);
  EXPECT_EQ(pool1.runs_of("jls")[0]["env"]["workdir"], pool1.dir().string());
  EXPECT_EQ(pool2.runs_of("bls")[0]["env"]["workdir"], pool2.dir().string());
  EXPECT_TRUE(pool1.runs_of("bls").empty());
  EXPECT_TRUE(pool2.runs_of("jls").empty());
}

TEST_F(RouterTest, MissingCbsdGivesAnErrorReply) {
  test_pool pool(server, json{{"cbsd_path", "/nonexistent/cbsd"}});
  pool.start_router();
  const auto id = pool.put_job(R"({"Command":"jls"})");
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 1001);
  EXPECT_NE(replies.back()["Message"].get<std::string>().find("/nonexistent/cbsd"), std::string::npos);
}

// --- start-up refusals ----------------------------------------------------

TEST_F(RouterTest, ConfigErrorsExitBeforeConnectingNamingFileAndKey) {
  test_pool pool(server, json{{"beanstalkd", {{"reserve_timeout", "five"}}}});
  const std::string connections_before = pool.client().stats().at("total-connections");
  pool.spawn_router({"-config", pool.config_path().string()});
  auto status = pool.wait_router_exit();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(exit_status_of(*status), 78);
  const std::string out = pool.output_text();
  EXPECT_NE(out.find("router.json: beanstalkd.reserve_timeout: expected an integer"), std::string::npos) << out;
  // It never connected.
  EXPECT_EQ(pool.client().stats().at("total-connections"), connections_before);
}

TEST_F(RouterTest, RefusesAWorkdirWithoutInventory) {
  test_pool pool(server);
  std::filesystem::remove(pool.dir() / "nc.inventory");
  pool.spawn_router({"-config", pool.config_path().string()});
  auto status = pool.wait_router_exit();
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(exit_status_of(*status), 0);
  EXPECT_NE(pool.output_text().find((pool.dir() / "nc.inventory").string()), std::string::npos);
}

TEST_F(RouterTest, CommandLineCbsdenvIsUsedWhenTheConfigHasNone) {
  test_pool pool(server, json{{"cbsdenv", ""}});
  pool.start_router({"-cbsdenv", pool.dir().string()});
  const auto id = pool.put_job(R"({"Command":"jls"})");
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  EXPECT_EQ(pool.runs_of("jls")[0]["cwd"], pool.dir().string());
}

TEST_F(RouterTest, ASecondRouterForThePoolRefusesToStartAndACrashLeavesNoStaleLock) {
  test_pool pool(server);
  const pid_t first = pool.start_router();
  const std::string output = (pool.dir() / "second.out").string();
  spawn_options opts;
  opts.output_path = output;
  const pid_t second = spawn_process({BS_ROUTER_PATH, "-config", pool.config_path().string()}, opts);
  auto status = wait_for_exit(second, 30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(exit_status_of(*status), 0);
  std::ifstream in(output);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("pid " + std::to_string(first)), std::string::npos) << text;
  EXPECT_TRUE(pool.router_running());

  pool.kill_router();
  pool.start_router(); // the kernel dropped the dead router's lock
  const auto id = pool.put_job(R"({"Command":"jls"})");
  EXPECT_FALSE(pool.wait_final_reply(id).empty());
}

// Operators list what a pool's router holds, while it runs.
TEST_F(RouterTest, JournalOptionListsTheJobsHeld) {
  test_pool pool(server);
  pool.start_router();
  const std::filesystem::path gate = pool.dir() / "gate";
  const auto id = pool.put_job(json{{"Command", "jstart"}, {"CommandArgs", {{"fake_wait_for", gate.string()}}}});
  ASSERT_TRUE(wait_until([&] { return pool.runs_of("jstart").size() == 1; }));
  const auto list = [&] {
    const std::string output = (pool.dir() / "journal.out").string();
    std::filesystem::remove(output);
    spawn_options opts;
    opts.output_path = output;
    const pid_t pid = spawn_process({BS_ROUTER_PATH, "-config", pool.config_path().string(), "--journal"}, opts);
    auto status = wait_for_exit(pid, 30s);
    EXPECT_TRUE(status.has_value() && exit_status_of(*status) == 0);
    std::ifstream in(output);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string held = list();
  EXPECT_EQ(held.rfind("JOB STATE TAKEN BODY\n" + std::to_string(id) + " running ", 0), 0u) << held;
  EXPECT_NE(held.find(R"(\"Command\":\"jstart\")"), std::string::npos) << held;
  std::ofstream(gate) << "go";
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  ASSERT_TRUE(wait_until([&] { return list() == "JOB STATE TAKEN BODY\n"; }));
}

TEST_F(RouterTest, PerJobFilesAreKeptWithinTheConfiguredCount) {
  test_pool pool(server, json{{"joblog_max_files", 2}});
  pool.start_router();
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(pool.put_job(R"({"Command":"jls"})"));
    ASSERT_FALSE(pool.wait_final_reply(ids.back()).empty());
  }
  EXPECT_EQ(pool.stop_router(), 0);
  pool.start_router(); // prunes when it starts, then every 10 minutes
  ASSERT_TRUE(wait_until([&] { return !std::filesystem::exists(pool.logdir() / (std::to_string(ids[1]) + ".out")); }));
  EXPECT_FALSE(std::filesystem::exists(pool.logdir() / (std::to_string(ids[0]) + ".cmd")));
  EXPECT_TRUE(std::filesystem::exists(pool.logdir() / (std::to_string(ids[2]) + ".out")));
  EXPECT_TRUE(std::filesystem::exists(pool.logdir() / (std::to_string(ids[3]) + ".out")));
}

TEST_F(RouterTest, ServesPrometheusMetrics) {
  const std::uint16_t port = free_loopback_port();
  test_pool pool(server, json{{"metrics_listen", "127.0.0.1:" + std::to_string(port)}});
  pool.start_router();
  for (const char* body : {R"({"Command":"jls"})", R"({"Command":"jls","CommandArgs":{"fake_exit":2}})", "nonsense"}) {
    const auto id = pool.put_job(body);
    ASSERT_FALSE(pool.wait_final_reply(id).empty());
  }
  const std::string response = http_get(port, "/metrics");
  EXPECT_EQ(response.rfind("HTTP/1.0 200", 0), 0u) << response;
  EXPECT_NE(response.find("bs_router_jobs_total{outcome=\"ok\"} 1\n"), std::string::npos) << response;
  EXPECT_NE(response.find("bs_router_jobs_total{outcome=\"failed\"} 1\n"), std::string::npos);
  EXPECT_NE(response.find("bs_router_jobs_total{outcome=\"bad_input\"} 1\n"), std::string::npos);
  EXPECT_NE(response.find("bs_router_job_duration_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(response.find("bs_router_broker_connected 1\n"), std::string::npos);
  EXPECT_NE(response.find("bs_router_jobs_running 0\n"), std::string::npos);
  EXPECT_EQ(http_get(port, "/").rfind("HTTP/1.0 404", 0), 0u);
}

TEST_F(RouterTest, SigtermExitsZero) {
  test_pool pool(server);
  pool.start_router();
  EXPECT_EQ(pool.stop_router(), 0);
}

// --- who may run what --------------------------------------------------------

// Every cbsd the router started, job runs and look-ups alike.
std::size_t cbsd_starts(const test_pool& pool) {
  std::size_t n = 0;
  for (const json& record : pool.records())
    if (record.value("event", "") == "start") ++n;
  return n;
}

TEST_F(RouterTest, CommandsOutsideTheAllowListGet1005AndNothingRuns) {
  test_pool pool(server, json{{"commands", {"jstart", "jls"}}});
  pool.start_router();
  for (const char* body : {R"({"Command":"jexec","CommandArgs":{"jname":"j1","cmd":"/bin/sh -c 'id; reboot'"}})",
                           R"({"Command":"jremove","CommandArgs":{"jname":"j1"}})",
                           R"({"Command":"initenv"})", R"({"Command":"JSTART","CommandArgs":{"jname":"j1"}})"}) {
    const auto id = pool.put_job(std::string(body));
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty()) << body;
    const json& reply = replies.back();
    EXPECT_EQ(reply["ErrCode"], 1005) << body;
    const std::string command = json::parse(body)["Command"];
    EXPECT_EQ(reply["Message"], "bs_router: command \"" + command + "\" is not allowed on this pool (not in commands)");
    EXPECT_EQ(reply["Progress"], 100);
    EXPECT_EQ(reply["Guid"], "0");
    EXPECT_EQ(reply["DskGuid"], "0");
    EXPECT_TRUE(wait_until([&] { return !pool.client().stats_job(id).has_value(); })) << body;
  }
  EXPECT_EQ(cbsd_starts(pool), 0u); // neither the jobs nor their look-ups
  EXPECT_NE(pool.log_text().find("refused: command \"jexec\" is not allowed on this pool"), std::string::npos);

  // Still serving, and what is listed runs.
  const auto id = pool.put_job(R"({"Command":"jstart","CommandArgs":{"jname":"j1"}})");
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(pool.runs_of("jstart").size(), 1u);
  EXPECT_EQ(cbsd_starts(pool), 3u); // jstart and its two look-ups
}

TEST_F(RouterTest, DeniedCommandsGet1005AndNothingRuns) {
  test_pool pool(server, json{{"deny_commands", {"jexec", "initenv"}}});
  pool.start_router();
  for (const char* body : {R"({"Command":"jexec","CommandArgs":{"jname":"j1","cmd":"id"}})", R"({"Command":"initenv"})"}) {
    const auto id = pool.put_job(std::string(body));
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty()) << body;
    EXPECT_EQ(replies.back()["ErrCode"], 1005) << body;
    const std::string command = json::parse(body)["Command"];
    EXPECT_EQ(replies.back()["Message"],
              "bs_router: command \"" + command + "\" is not allowed on this pool (deny_commands)");
  }
  EXPECT_EQ(cbsd_starts(pool), 0u);
  const auto id = pool.put_job(R"({"Command":"jls"})"); // not denied: runs, as without the key
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  EXPECT_EQ(pool.runs_of("jls").size(), 1u);
}

TEST_F(RouterTest, ValuesCbsdWouldEvaluateAreRefusedAndNothingRuns) {
  test_pool pool(server);
  pool.start_router();
  const std::string marker = (pool.dir() / "INJECTED").string();
  struct example {
    std::string key, value, why;
  };
  const std::vector<example> examples = {
      {"cmd", "$(touch " + marker + ")", "'$'"},
      {"cmd", "`touch " + marker + "`", "'`'"},
      {"comment", "back\\slash", "'\\'"},
      {"jname", "`touch " + marker + "`", "'`'"},
      {"jname", "vm$(id)", "'$'"},
      {"jname", "vm\\1", "'\\'"},
  };
  for (const example& e : examples) {
    json args = json::object();
    if (e.key != "jname") args["jname"] = "vm1";
    args[e.key] = e.value;
    const auto id = pool.put_job(body{{"Command", "bstart"}, {"CommandArgs", args}});
    auto replies = pool.wait_final_reply(id);
    ASSERT_FALSE(replies.empty()) << e.value;
    const json& reply = replies.back();
    EXPECT_EQ(reply["ErrCode"], 1000) << e.value;
    const std::string message = reply["Message"];
    EXPECT_EQ(message.rfind("bs_router: bad job: CommandArgs." + e.key + ": the value has " + e.why, 0), 0u) << message;
    EXPECT_NE(message.find("which cbsd evaluates as root"), std::string::npos) << message;
    EXPECT_EQ(reply["Guid"], "0");
    EXPECT_EQ(reply["Vnc"], "");
  }
  EXPECT_EQ(cbsd_starts(pool), 0u); // no run, no look-up
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST_F(RouterTest, WithTheOptOutValuesReachCbsdButLookUpsNeverGetSuchAJname) {
  test_pool pool(server, json{{"allow_unsafe_values", true}});
  pool.start_router();
  const std::string jname = "vm`id`";
  const auto id = pool.put_job(body{{"Command", "bstart"}, {"CommandArgs", {{"jname", jname}, {"x", "$y\\z"}}}});
  auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  const json& reply = replies.back();
  EXPECT_EQ(reply["ErrCode"], 0);
  // No look-up asked: the fields say "nothing known".
  EXPECT_EQ(reply["Guid"], "0");
  EXPECT_EQ(reply["DskGuid"], "0");
  EXPECT_EQ(reply["Vnc"], "");
  auto runs = pool.runs_of("bstart");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["argv"], json::array({FAKE_CBSD_PATH, "bstart", "jname=" + jname, "x=$y\\z"}));
  EXPECT_EQ(cbsd_starts(pool), 1u);
  EXPECT_NE(pool.log_text().find("allow_unsafe_values"), std::string::npos); // warned at start
}

TEST_F(RouterTest, TheOptOutForListedKeysLetsOnlyThoseThrough) {
  test_pool pool(server, json{{"allow_unsafe_values", {"cmd"}}});
  pool.start_router();
  const auto allowed = pool.put_job(body{{"Command", "jexec"}, {"CommandArgs", {{"jname", "j1"}, {"cmd", "echo $HOME"}}}});
  auto replies = pool.wait_final_reply(allowed);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(replies.back()["Guid"], "bget-guid-j1"); // a plain jname: look-ups as always
  auto runs = pool.runs_of("jexec");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["argv"], json::array({FAKE_CBSD_PATH, "jexec", "jname=j1", "cmd=echo $HOME"}));

  const std::size_t before = cbsd_starts(pool);
  for (const body& b : {body{{"Command", "jexec"}, {"CommandArgs", {{"jname", "$(id)"}, {"cmd", "id"}}}},
                        body{{"Command", "jexec"}, {"CommandArgs", {{"jname", "j1"}, {"user", "`id`"}}}}}) {
    const auto id = pool.put_job(b);
    auto refused = pool.wait_final_reply(id);
    ASSERT_FALSE(refused.empty());
    EXPECT_EQ(refused.back()["ErrCode"], 1000) << b.dump();
  }
  EXPECT_EQ(cbsd_starts(pool), before);
}

} // namespace
} // namespace bs_router::testing
