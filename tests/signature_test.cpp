// Signed jobs and replies: the envelope, the HMAC over exact bytes, key
// files, and the worked example of docs/SIGNING.md.

#include <gtest/gtest.h>

#include "bs_router/config.hpp"
#include "bs_router/signature.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <sys/stat.h>

namespace bs_router {
namespace {

const std::string key = "bs_router example key, not secret"; // 33 bytes, as in docs/SIGNING.md
const std::string job = R"({"Command":"jstart","CommandArgs":{"jname":"jail1"}})";
constexpr std::int64_t now = 1767225000;
constexpr std::int64_t lifetime = 3600;

key_ring ring() { return {{"k1", key}}; }

TEST(Signature, HmacSha256MatchesRfc4231) {
  // RFC 4231, test case 2.
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Signature, ASignedJobOpensToItsExactBytes) {
  const std::string body = sign_job("k1", key, 1767225600, job);
  opened_job opened = open_job(body, ring(), now, lifetime);
  EXPECT_EQ(opened.check, job_check::good) << opened.problem;
  EXPECT_EQ(opened.job, job);
  EXPECT_EQ(opened.key_id, "k1");
  EXPECT_EQ(opened.expires, 1767225600);
  EXPECT_EQ(opened.hmac.size(), hmac_hex_chars);
}

TEST(Signature, AnyFlippedByteIsRefused) {
  const std::string body = sign_job("k1", key, 1767225600, job);
  for (std::size_t i = 0; i < body.size(); ++i) {
    std::string changed = body;
    changed[i] = static_cast<char>(changed[i] ^ 0x01);
    opened_job opened = open_job(changed, ring(), now, lifetime);
    EXPECT_NE(opened.check, job_check::good) << "byte " << i;
  }
  // Appended or cut bytes too.
  EXPECT_EQ(open_job(body + " ", ring(), now, lifetime).check, job_check::bad_signature);
  EXPECT_EQ(open_job(body.substr(0, body.size() - 1), ring(), now, lifetime).check, job_check::bad_signature);
}

TEST(Signature, UnknownKeyAndWrongKeyAreBadSignatures) {
  const std::string body = sign_job("k2", key, 1767225600, job);
  EXPECT_EQ(open_job(body, ring(), now, lifetime).check, job_check::bad_signature);
  EXPECT_EQ(open_job(sign_job("k1", key + "x", 1767225600, job), ring(), now, lifetime).check,
            job_check::bad_signature);
}

TEST(Signature, ExpiredAndTooFarAheadAreRefused) {
  EXPECT_EQ(open_job(sign_job("k1", key, now - 1, job), ring(), now, lifetime).check, job_check::expired);
  EXPECT_EQ(open_job(sign_job("k1", key, now, job), ring(), now, lifetime).check, job_check::good);
  EXPECT_EQ(open_job(sign_job("k1", key, now + lifetime, job), ring(), now, lifetime).check, job_check::good);
  EXPECT_EQ(open_job(sign_job("k1", key, now + lifetime + 1, job), ring(), now, lifetime).check,
            job_check::too_far);
}

TEST(Signature, UnsignedJobsAreToldApartFromBrokenEnvelopes) {
  EXPECT_EQ(open_job(job, ring(), now, lifetime).check, job_check::unsigned_job);
  EXPECT_EQ(open_job(" " + job, ring(), now, lifetime).check, job_check::unsigned_job);
  // A mistyped tag is not taken for an unsigned job.
  EXPECT_EQ(open_job("bs_router-signed-job-v2 k1 1 " + std::string(64, 'a') + "\n" + job, ring(), now, lifetime).check,
            job_check::bad_signature);
  EXPECT_EQ(open_job("bs_router-signed-job-v1 k1 1767225600\n" + job, ring(), now, lifetime).check,
            job_check::bad_signature);
  EXPECT_EQ(open_job("bs_router-signed-job-v1 " + job, ring(), now, lifetime).check, job_check::bad_signature);
}

TEST(Signature, RepliesBindTheKeyAndTheJobId) {
  const std::string reply = R"({"ErrCode":0,"Message":"ok\n","Progress":100})";
  const std::string body = sign_reply("k1", key, "5", reply);
  std::string problem;
  auto opened = open_reply(body, "k1", key, "5", &problem);
  ASSERT_TRUE(opened) << problem;
  EXPECT_EQ(*opened, reply);
  EXPECT_FALSE(open_reply(body, "k1", key, "6", &problem)); // the reply to job 5 is no reply to job 6
  EXPECT_FALSE(open_reply(body, "k2", key, "5", &problem));
  EXPECT_FALSE(open_reply(reply, "k1", key, "5", &problem));
  EXPECT_EQ(problem, "it is not signed");
  std::string changed = body;
  changed[changed.size() - 3] ^= 0x01;
  EXPECT_FALSE(open_reply(changed, "k1", key, "5", &problem));
  EXPECT_EQ(problem, "its HMAC does not match");
  // A job's signature is no reply's.
  EXPECT_FALSE(open_reply(sign_job("k1", key, 5, reply), "k1", key, "5", &problem));
}

TEST(Signature, ConstantTimeCompare) {
  EXPECT_TRUE(equal_in_constant_time("abc", "abc"));
  EXPECT_FALSE(equal_in_constant_time("abc", "abd"));
  EXPECT_FALSE(equal_in_constant_time("abc", "ab"));
}

class KeyFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("bs_router_key_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir);
    path = (dir / "k1.key").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  void write(const std::string& bytes, mode_t mode) {
    std::ofstream(path, std::ios::binary) << bytes;
    ::chmod(path.c_str(), mode);
  }
  std::filesystem::path dir;
  std::string path;
};

TEST_F(KeyFile, ReadsTheBytesAsTheyAre) {
  write(key + "\n", 0600);
  EXPECT_EQ(load_key_file(path), key + "\n");
}

TEST_F(KeyFile, OneThatGroupOrOthersCanReadIsRefusedNamingIt) {
  write(key, 0644);
  try {
    load_key_file(path);
    FAIL() << "a key file of mode 0644 was taken";
  } catch (const std::runtime_error& ex) {
    EXPECT_NE(std::string(ex.what()).find(path), std::string::npos) << ex.what();
    EXPECT_NE(std::string(ex.what()).find("0644"), std::string::npos) << ex.what();
  }
  write(key, 0640);
  EXPECT_THROW(load_key_file(path), std::runtime_error);
}

TEST_F(KeyFile, ShortKeysLinksAndDirectoriesAreRefused) {
  write(std::string(31, 'k'), 0600);
  EXPECT_THROW(load_key_file(path), std::runtime_error);
  write(std::string(32, 'k'), 0600);
  EXPECT_NO_THROW(load_key_file(path));
  const std::string link = (dir / "link.key").string();
  std::filesystem::create_symlink(path, link);
  EXPECT_THROW(load_key_file(link), std::runtime_error);
  EXPECT_THROW(load_key_file(dir.string()), std::runtime_error);
}

// The signing keys of the config: their names, their paths, and what needs what.
std::string config_error_of(const nlohmann::json& extra) {
  nlohmann::json doc = {{"cbsdenv", "/pool1"}, {"broker", "beanstalkd"}, {"logfile", "/dev/null"},
                        {"beanstalkd", {{"uri", "127.0.0.1:11300"}, {"tube", "t"}, {"reply_tube_prefix", "t_"},
                                        {"reconnect_timeout", 5}, {"reserve_timeout", 5}, {"publish_timeout", 5},
                                        {"logdir", "/tmp"}}}};
  doc.merge_patch(extra);
  try {
    config cfg = parse_config(doc.dump(), "pool1.json");
    return "";
  } catch (const config_error& ex) {
    return ex.what();
  }
}

TEST(SigningConfig, KeysAreCheckedWhenTheConfigIsRead) {
  EXPECT_EQ(config_error_of({{"job_keys", {{"k1", "/etc/k1.key"}}}, {"require_signed_jobs", true},
                             {"max_signed_job_lifetime", 60}, {"max_remembered_signatures", 10},
                             {"client_key", "k1"}}),
            "");
  EXPECT_EQ(config_error_of({{"job_keys", {{"k 1", "/etc/k1.key"}}}}).rfind("pool1.json: job_keys.k 1: a key id", 0),
            0u);
  EXPECT_EQ(config_error_of({{"job_keys", {{"k1", "k1.key"}}}}),
            "pool1.json: job_keys.k1: expected an absolute path, got \"k1.key\"");
  EXPECT_EQ(config_error_of({{"job_keys", {{"k1", 5}}}}),
            "pool1.json: job_keys.k1: expected the path of a key file, got number");
  EXPECT_EQ(config_error_of({{"require_signed_jobs", true}}),
            "pool1.json: require_signed_jobs: true, but job_keys names no key");
  EXPECT_EQ(config_error_of({{"job_keys", {{"k1", "/etc/k1.key"}}}, {"client_key", "k2"}}),
            "pool1.json: client_key: \"k2\" is not a key of job_keys");
  EXPECT_NE(config_error_of({{"max_signed_job_lifetime", 0}}), "");
}

// docs/SIGNING.md shows the exact bytes of a signed job and of a signed
// reply with a test key: they must be what the code makes.
TEST(SigningDocument, WorkedExampleIsWhatTheCodeMakes) {
  std::ifstream in(std::string(BS_ROUTER_SOURCE_DIR) + "/docs/SIGNING.md");
  ASSERT_TRUE(in) << "docs/SIGNING.md";
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();

  const std::string signed_job = sign_job("k1", key, 1767225600, job);
  EXPECT_NE(doc.find("\n" + signed_job + "\n"), std::string::npos) << signed_job;
  EXPECT_NE(doc.find("\nbs_router-signed-job-v1 k1 1767225600\n" + job + "\n"), std::string::npos);
  EXPECT_NE(doc.find(hmac_sha256_hex(key, "bs_router-signed-job-v1 k1 1767225600\n" + job)), std::string::npos);
  EXPECT_NE(doc.find("key:" + key), std::string::npos);

  const std::string reply =
      R"({"ErrCode":0,"Message":"ok\n","Progress":100,"Guid":"0","DskGuid":"0","Vnc":"","JobID":5,"Stderr":""})";
  const std::string signed_reply = sign_reply("k1", key, "5", reply);
  EXPECT_NE(doc.find("\n" + signed_reply + "\n"), std::string::npos) << signed_reply;
}

} // namespace
} // namespace bs_router
