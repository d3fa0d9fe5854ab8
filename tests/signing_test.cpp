// Signed jobs and replies end to end: a real beanstalkd, the router, the
// client, and forged or replayed bodies put by the test.

#include <gtest/gtest.h>

#include "bs_router/client.hpp"
#include "bs_router/reply.hpp"
#include "bs_router/signature.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <sys/stat.h>

#include "support/beanstalkd_server.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const std::string key1(32, '\x11');
const std::string key2 = "a second key of at least 32 bytes";

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string write_key(const test_pool& pool, const std::string& name, const std::string& bytes, mode_t mode = 0600) {
  const std::string path = (pool.dir() / name).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  ::chmod(path.c_str(), mode);
  return path;
}

class SigningTest : public ::testing::Test {
 protected:
  // A pool with key k1 (and k2 when asked), plus `extra` config.
  std::unique_ptr<test_pool> make_pool(json extra = json::object(), bool two_keys = false) {
    auto pool = std::make_unique<test_pool>(server);
    json keys = {{"k1", write_key(*pool, "k1.key", key1)}};
    if (two_keys) keys["k2"] = write_key(*pool, "k2.key", key2);
    extra["job_keys"] = keys;
    pool->write_config(extra);
    return pool;
  }

  // The next reply to `id`, its signature checked with `key` (nullopt: not
  // signed so). `raw` gets the body as put.
  std::optional<json> signed_reply(test_pool& pool, std::uint64_t id, const std::string& key_id,
                                   const std::string& key, std::string* raw = nullptr) {
    auto reply = pool.client().reserve(pool.reply_tube(id), 30s);
    if (!reply) throw std::runtime_error("no reply to job " + std::to_string(id));
    pool.client().delete_job(reply->id);
    if (raw) *raw = reply->body;
    std::string problem;
    auto opened = open_reply(reply->body, key_id, key, std::to_string(id), &problem);
    if (!opened) return std::nullopt;
    return json::parse(*opened);
  }

  beanstalkd_server server;
};

const std::string start_a = R"({"Command":"jstart","CommandArgs":{"jname":"a","fake_stdout":"started a\n"}})";

TEST_F(SigningTest, ASignedJobRunsAndItsReplyIsSigned) {
  auto pool = make_pool();
  pool->start_router();
  const auto id = pool->put_job(sign_job("k1", key1, unix_now() + 60, start_a));
  auto reply = signed_reply(*pool, id, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], 0);
  EXPECT_EQ((*reply)["Message"], "started a\n");
  EXPECT_EQ((*reply)["JobID"], id);
  EXPECT_EQ(pool->runs_of("jstart").size(), 1u);
}

TEST_F(SigningTest, OneFlippedByteIsRefusedAndRunsNothing) {
  auto pool = make_pool();
  pool->start_router();
  std::string body = sign_job("k1", key1, unix_now() + 60, start_a);
  body[body.find("\"a\"") + 1] = 'b'; // jname a -> b
  const auto id = pool->put_job(body);
  auto replies = pool->wait_final_reply(id); // unsigned: nobody vouches for a forged job
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], router_errcode::bad_signature);
  EXPECT_NE(replies.back()["Message"].get<std::string>().find("bad signature"), std::string::npos);
  EXPECT_TRUE(pool->runs_of("jstart").empty());
}

TEST_F(SigningTest, AnExpiredJobIsRefused) {
  auto pool = make_pool();
  pool->start_router();
  const auto id = pool->put_job(sign_job("k1", key1, unix_now() - 5, start_a));
  auto reply = signed_reply(*pool, id, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], router_errcode::expired);
  // Further ahead than max_signed_job_lifetime: refused too.
  const auto far = pool->put_job(sign_job("k1", key1, unix_now() + 3600 + 120, start_a));
  reply = signed_reply(*pool, far, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], router_errcode::expired);
  EXPECT_TRUE(pool->runs_of("jstart").empty());
}

TEST_F(SigningTest, AReplayIsRefusedAlsoAfterARestart) {
  auto pool = make_pool();
  pool->start_router();
  const std::string body = sign_job("k1", key1, unix_now() + 600, start_a);
  const auto first = pool->put_job(body);
  ASSERT_TRUE(signed_reply(*pool, first, "k1", key1));
  const auto again = pool->put_job(body);
  auto reply = signed_reply(*pool, again, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], router_errcode::replayed);

  EXPECT_EQ(pool->stop_router(), 0);
  pool->start_router();
  const auto after_restart = pool->put_job(body);
  reply = signed_reply(*pool, after_restart, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], router_errcode::replayed);
  EXPECT_EQ(pool->runs_of("jstart").size(), 1u);
}

TEST_F(SigningTest, AJobInTheJournalIsNoReplayOfItselfAfterACrash) {
  auto pool = make_pool();
  pool->start_router();
  const std::string marker = (pool->dir() / "go").string();
  const std::string wait_job =
      R"({"Command":"jstart","CommandArgs":{"jname":"w","fake_wait_for":")" + marker + R"("}})";
  const auto id = pool->put_job(sign_job("k1", key1, unix_now() + 600, wait_job));
  ASSERT_TRUE(wait_until([&] { return !pool->runs_of("jstart").empty(); }));
  pool->kill_router();
  std::ofstream(marker) << "";
  pool->start_router();
  // It was running: its outcome is unknown, said by a reply signed as the job was.
  auto reply = signed_reply(*pool, id, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], router_errcode::interrupted);
}

TEST_F(SigningTest, AJobSentBackUntilItsTurnIsNotRefusedAsExpiredInItsTurn) {
  auto pool = make_pool({{"max_waiting", 0}});
  pool->start_router();
  const std::string gate = (pool->dir() / "gate").string();
  const auto first = pool->put_job(sign_job(
      "k1", key1, unix_now() + 600,
      R"({"Command":"jstart","CommandArgs":{"jname":"x","fake_wait_for":")" + gate + R"("}})"));
  ASSERT_TRUE(wait_until([&] { return pool->runs_of("jstart").size() == 1; }));
  const std::int64_t expires = unix_now() + 2;
  const auto second =
      pool->put_job(sign_job("k1", key1, expires, R"({"Command":"jstart","CommandArgs":{"jname":"x"}})"));
  // Sent back behind the busy jname while it was still valid (else it
  // would have been refused at once).
  ASSERT_TRUE(wait_until([&] {
    auto stats = pool->client().stats_job(second);
    return stats && stats->at("state") == "delayed";
  }));
  ASSERT_TRUE(wait_until([&] { return unix_now() > expires; }, 10s));
  std::ofstream(gate) << "";
  ASSERT_TRUE(signed_reply(*pool, first, "k1", key1));
  auto reply = signed_reply(*pool, second, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], 0) << (*reply)["Message"];
  EXPECT_EQ(pool->runs_of("jstart").size(), 2u);
}

TEST_F(SigningTest, AFullReplayMemoryRefusesNewSignedJobsAndForgetsNothing) {
  auto pool = make_pool({{"max_remembered_signatures", 1}});
  pool->start_router();
  const std::string body = sign_job("k1", key1, unix_now() + 600, start_a);
  ASSERT_TRUE(signed_reply(*pool, pool->put_job(body), "k1", key1));
  const auto other = pool->put_job(
      sign_job("k1", key1, unix_now() + 600, R"({"Command":"jstart","CommandArgs":{"jname":"b"}})"));
  auto reply = signed_reply(*pool, other, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], router_errcode::replay_memory_full);
  reply = signed_reply(*pool, pool->put_job(body), "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], router_errcode::replayed);
  EXPECT_EQ(pool->runs_of("jstart").size(), 1u);
}

TEST_F(SigningTest, UnsignedJobsAreRefusedOnlyWhenRequired) {
  auto pool = make_pool();
  pool->start_router();
  auto id = pool->put_job(start_a);
  auto replies = pool->wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0); // an old controller keeps working
  pool->stop_router();

  auto strict = make_pool({{"require_signed_jobs", true}});
  strict->start_router();
  id = strict->put_job(start_a);
  replies = strict->wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], router_errcode::unsigned_job);
  EXPECT_TRUE(strict->runs_of("jstart").empty());
}

TEST_F(SigningTest, AKeyFileOthersCanReadIsRefusedAtStart) {
  auto pool = make_pool();
  const std::string path = write_key(*pool, "k1.key", key1, 0644);
  pool->spawn_router({"-config", pool->config_path().string()});
  auto status = pool->wait_router_exit();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(exit_status_of(*status), 78);
  const std::string out = pool->output_text();
  EXPECT_NE(out.find("job_keys.k1: " + path), std::string::npos) << out;
  EXPECT_NE(out.find("0644"), std::string::npos) << out;
}

TEST_F(SigningTest, TwoKeysAtOnceLetAKeyBeRotated) {
  auto pool = make_pool(json::object(), true);
  pool->start_router();
  const auto old_key = pool->put_job(sign_job("k1", key1, unix_now() + 60, start_a));
  const auto new_key = pool->put_job(
      sign_job("k2", key2, unix_now() + 60, R"({"Command":"jstart","CommandArgs":{"jname":"b"}})"));
  auto reply = signed_reply(*pool, old_key, "k1", key1);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], 0);
  reply = signed_reply(*pool, new_key, "k2", key2); // each reply signed with its job's key
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], 0);
  EXPECT_EQ(pool->runs_of("jstart").size(), 2u);

  // k1 retired: its jobs are refused, k2's still run.
  pool->stop_router();
  pool->write_config({{"job_keys", {{"k2", (pool->dir() / "k2.key").string()}}}});
  pool->start_router();
  const auto retired = pool->put_job(sign_job("k1", key1, unix_now() + 60, start_a));
  auto replies = pool->wait_final_reply(retired);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], router_errcode::bad_signature);
  const auto current = pool->put_job(
      sign_job("k2", key2, unix_now() + 60, R"({"Command":"jstart","CommandArgs":{"jname":"c"}})"));
  reply = signed_reply(*pool, current, "k2", key2);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ErrCode"], 0);
}

TEST_F(SigningTest, ClientSignsWithAKeyOfTheConfig) {
  auto pool = make_pool({{"require_signed_jobs", true}});
  pool->start_router();
  std::string out, err;
  int status = run_client({"-config", pool->config_path().string(), "--key-id", "k1", "jstart", "jname=a",
                           "fake_stdout=hello"},
                          &out, &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(out, "hello");
  // client_key names the key to sign with.
  json cfg = pool->config();
  cfg["client_key"] = "k1";
  std::ofstream(pool->dir() / "client.json") << cfg.dump();
  status = run_client({"-config", (pool->dir() / "client.json").string(), "jstart", "jname=b"}, &out, &err);
  EXPECT_EQ(status, 0) << err;
}

TEST_F(SigningTest, ClientIgnoresAForgedFinalReplyAndPrintsTheRealOne) {
  auto pool = make_pool();
  const std::string key_file = (pool->dir() / "k1.key").string();
  std::string out, err;
  int status = -1;
  // No router yet: the job waits on the tube while the forgeries are put.
  std::thread client([&] {
    status = run_client({"-config", pool->config_path().string(), "--key-file", key_file, "--key-id", "k1",
                         "--timeout", "60", "jstart", "jname=a", "fake_stdout=the real one\n"},
                        &out, &err);
  });
  std::optional<std::uint64_t> id;
  ASSERT_TRUE(wait_until([&] {
    if (auto job = pool->client().peek_ready(pool->tube())) id = job->id;
    return id.has_value();
  }));
  const std::string forged = R"({"ErrCode":0,"Message":"forged\n","Progress":100})";
  pool->client().put(pool->reply_tube(*id), forged);                                     // unsigned
  pool->client().put(pool->reply_tube(*id), sign_reply("k1", key2, std::to_string(*id), forged)); // wrong key
  pool->client().put(pool->reply_tube(*id), sign_reply("k1", key1, std::to_string(*id + 1), forged)); // other job
  pool->start_router();
  client.join();
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(out, "the real one\n");
  EXPECT_NE(err.find("ignoring a forged reply on " + pool->reply_tube(*id) + ": it is not signed"), std::string::npos)
      << err;
  EXPECT_NE(err.find("its HMAC does not match"), std::string::npos) << err;
  EXPECT_NE(err.find("it is signed for another job"), std::string::npos) << err;
}

TEST_F(SigningTest, ClientKeyFileWithoutKeyIdIsAUsageError) {
  auto pool = make_pool();
  std::string out, err;
  int status = run_client({"-config", pool->config_path().string(), "--key-file",
                           (pool->dir() / "k1.key").string(), "jls"},
                          &out, &err);
  EXPECT_EQ(status, client_exit::usage);
  EXPECT_NE(err.find("--key-id"), std::string::npos) << err;
}

} // namespace
} // namespace bs_router::testing
