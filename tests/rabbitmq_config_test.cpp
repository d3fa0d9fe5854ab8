// The "rabbitmq" section of the config (broker "rabbitmq"): its keys, their
// defaults and the errors, which name the file and the key.

#include "bs_router/command_line.hpp"
#include "bs_router/config.hpp"
#include "bs_router/rabbitmq_config.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace {

using bs_router::config;
using bs_router::config_error;
using bs_router::config_overrides;
using bs_router::parse_config;
using json = nlohmann::json;

// The sample of SPEC.md's RabbitMQ section.
const char* const spec_sample = R"({
  "cbsdenv": "/pool1",
  "broker": "rabbitmq",
  "logfile": "/var/log/bs_router/pool1.log",
  "rabbitmq": {
    "uris": ["amqp://router:secret@mq1:5672/cbsd", "amqp://router:secret@mq2:5672/cbsd"],
    "queue": "cbsd_pool1",
    "reply_queue_prefix": "cbsd_pool1_result_id",
    "reconnect_timeout": 5,
    "publish_timeout": 5,
    "heartbeat": 10,
    "logdir": "/var/log/cbsdmq"
  }
})";

json sample() { return json::parse(spec_sample); }

config parse(const json& document, const config_overrides& overrides = {}) {
  return parse_config(document.dump(), "pool1.json", overrides);
}

std::string error_of(const json& document, const config_overrides& overrides = {}) {
  try {
    parse(document, overrides);
  } catch (const config_error& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(RabbitmqConfig, SpecSample) {
  const config cfg = parse(sample());
  EXPECT_EQ(cfg.broker, "rabbitmq");
  EXPECT_TRUE(cfg.uses_rabbitmq());
  const auto& r = cfg.rabbitmq;
  ASSERT_EQ(r.uris.size(), 2u);
  EXPECT_EQ(r.uris[0].host, "mq1");
  EXPECT_EQ(r.uris[1].host, "mq2");
  EXPECT_EQ(r.uris[0].port, 5672);
  EXPECT_EQ(r.uris[0].user, "router");
  EXPECT_EQ(r.uris[0].password, "secret");
  EXPECT_EQ(r.uris[0].vhost, "cbsd");
  EXPECT_FALSE(r.uris[0].tls);
  EXPECT_EQ(r.uris[0].redacted(), "amqp://router@mq1:5672/cbsd");
  EXPECT_EQ(r.queue, "cbsd_pool1");
  EXPECT_EQ(r.reply_queue_prefix, "cbsd_pool1_result_id");
  EXPECT_EQ(r.reconnect_timeout, 5);
  EXPECT_EQ(r.publish_timeout, 5);
  EXPECT_EQ(r.heartbeat, 10);
  EXPECT_EQ(r.logdir, "/var/log/cbsdmq");
  EXPECT_TRUE(r.password_file.empty());
  // Code that serves both brokers finds the shared settings in one place.
  EXPECT_EQ(cfg.logdir(), "/var/log/cbsdmq");
  EXPECT_EQ(cfg.beanstalkd.logdir, "/var/log/cbsdmq");
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(RabbitmqConfig, OneUriDefaultsAndTls) {
  json document = sample();
  auto& r = document["rabbitmq"];
  r.erase("uris");
  r.erase("reconnect_timeout");
  r.erase("publish_timeout");
  r.erase("heartbeat");
  r["uri"] = "amqps://mq.example.org";
  const config cfg = parse(document);
  ASSERT_EQ(cfg.rabbitmq.uris.size(), 1u);
  const auto& uri = cfg.rabbitmq.uris[0];
  EXPECT_TRUE(uri.tls);
  EXPECT_EQ(uri.port, 5671);
  EXPECT_EQ(uri.vhost, "/");
  EXPECT_EQ(uri.user, "guest");
  EXPECT_EQ(cfg.rabbitmq.reconnect_timeout, 5);
  EXPECT_EQ(cfg.rabbitmq.publish_timeout, 5);
  EXPECT_EQ(cfg.rabbitmq.heartbeat, 10);
}

TEST(RabbitmqConfig, ErrorsNameFileAndKey) {
  auto with = [](const char* key, const json& value) {
    json document = sample();
    document["rabbitmq"][key] = value;
    return error_of(document);
  };
  EXPECT_EQ(with("uris", json::array()), "pool1.json: rabbitmq.uris: expected a non-empty array of AMQP URIs, got an empty array");
  EXPECT_EQ(with("uris", "amqp://a"), "pool1.json: rabbitmq.uris: expected a non-empty array of AMQP URIs, got string");
  EXPECT_EQ(with("uris", json::array({"amqp://a", 5})), "pool1.json: rabbitmq.uris[1]: expected a string, got number");
  EXPECT_EQ(with("uris", json::array({"http://a"})),
            "pool1.json: rabbitmq.uris[0]: expected amqp://host[:port][/vhost] or amqps://...");
  EXPECT_EQ(with("uris", json::array({"amqp://u:p@a:99999"})),
            "pool1.json: rabbitmq.uris[0]: not an AMQP URI (amqp[s]://[user[:password]@]host[:port][/vhost])");
  EXPECT_EQ(with("uri", "amqp://a"), "pool1.json: rabbitmq.uri: give either uris or uri, not both");
  EXPECT_EQ(with("queue", ""), "pool1.json: rabbitmq.queue: missing");
  EXPECT_EQ(with("queue", "amq.x"),
            "pool1.json: rabbitmq.queue: \"amq.x\" is not a queue name: names starting with \"amq.\" are the broker's own");
  EXPECT_EQ(with("queue", "a b"),
            "pool1.json: rabbitmq.queue: \"a b\" is not a queue name: has a space or a character that is not printable ASCII");
  EXPECT_EQ(with("reply_queue_prefix", std::string(128, 'p')),
            "pool1.json: rabbitmq.reply_queue_prefix: \"" + std::string(128, 'p') +
                "\" is not a queue name: longer than 127 bytes: no room left for a message id of 128 in a 255-byte queue name");
  EXPECT_EQ(with("reconnect_timeout", 0), "pool1.json: rabbitmq.reconnect_timeout: must be between 1 and 2592000, got 0");
  EXPECT_EQ(with("publish_timeout", "5"), "pool1.json: rabbitmq.publish_timeout: expected an integer, got string");
  EXPECT_EQ(with("heartbeat", -1), "pool1.json: rabbitmq.heartbeat: must be between 0 and 3600, got -1");
  EXPECT_EQ(with("password_file", "secret"), "pool1.json: rabbitmq.password_file: expected an absolute path, got \"secret\"");
  json document = sample();
  document["rabbitmq"].erase("logdir");
  EXPECT_EQ(error_of(document), "pool1.json: rabbitmq.logdir: missing");
  document = sample();
  document["rabbitmq"].erase("uris");
  EXPECT_EQ(error_of(document), "pool1.json: rabbitmq.uri: missing");
  document = sample();
  document.erase("rabbitmq");
  EXPECT_EQ(error_of(document), "pool1.json: rabbitmq: missing");
}

TEST(RabbitmqConfig, AMessageNeverQuotesTheUri) {
  json document = sample();
  document["rabbitmq"]["uris"] = json::array({"amqp://router:hunter2@mq1:0x/cbsd"});
  const std::string message = error_of(document);
  EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
  EXPECT_NE(message.find("rabbitmq.uris[0]"), std::string::npos) << message;
}

TEST(RabbitmqConfig, UnknownKeysWarnAndTheOtherSectionIsLeftAlone) {
  json document = sample();
  document["rabbitmq"]["exchange"] = "x";
  document["beanstalkd"] = {{"uri", "nonsense"}}; // not read with broker rabbitmq
  const config cfg = parse(document);
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0], "pool1.json: unknown key \"rabbitmq.exchange\" ignored");
}

TEST(RabbitmqConfig, BrokerFromTheCommandLine) {
  json document = sample();
  document.erase("broker");
  EXPECT_EQ(parse(document, config_overrides{"", "rabbitmq"}).broker, "rabbitmq");
  const char* argv[] = {"bs_router", "-config", "pool1.json", "-broker", "rabbitmq"};
  const auto parsed = bs_router::parse_router_command_line(5, argv);
  ASSERT_TRUE(parsed.options);
  EXPECT_EQ(parsed.options->broker, "rabbitmq");
}

TEST(RabbitmqConfig, MessageIds) {
  EXPECT_TRUE(bs_router::valid_message_id("a"));
  EXPECT_TRUE(bs_router::valid_message_id("job-1.2_3:x"));
  EXPECT_TRUE(bs_router::valid_message_id(std::string(128, 'x')));
  EXPECT_FALSE(bs_router::valid_message_id(""));
  EXPECT_FALSE(bs_router::valid_message_id(std::string(129, 'x')));
  EXPECT_FALSE(bs_router::valid_message_id("a b"));
  EXPECT_FALSE(bs_router::valid_message_id("a/b"));
  EXPECT_FALSE(bs_router::valid_message_id("a\nb"));
}

struct password_file {
  password_file(const std::string& text, mode_t mode) {
    std::string templ = (std::filesystem::temp_directory_path() / "bs_router_password.XXXXXX").string();
    const int fd = mkstemp(templ.data());
    if (fd < 0) throw std::runtime_error("mkstemp");
    if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) throw std::runtime_error("write");
    ::fchmod(fd, mode);
    ::close(fd);
    path = templ;
  }
  ~password_file() { std::filesystem::remove(path); }
  std::string path;
};

TEST(RabbitmqConfig, PasswordFileStandsForEveryPassword) {
  password_file file("s3cret\n", 0600);
  json document = sample();
  document["rabbitmq"]["password_file"] = file.path;
  config cfg = parse(document);
  bs_router::load_rabbitmq_password(cfg);
  for (const auto& uri : cfg.rabbitmq.uris) EXPECT_EQ(uri.password, "s3cret");
}

TEST(RabbitmqConfig, PasswordFileMustBePrivateAndNoLink) {
  password_file file("s3cret\n", 0644);
  json document = sample();
  document["rabbitmq"]["password_file"] = file.path;
  config cfg = parse(document);
  try {
    bs_router::load_rabbitmq_password(cfg);
    ADD_FAILURE() << "a readable password file was taken";
  } catch (const config_error& error) {
    EXPECT_EQ(std::string(error.what()), "pool1.json: rabbitmq.password_file: " + file.path +
                                             ": the password file has mode 0644: group and others must have no "
                                             "access to it (chmod 600)");
  }
  password_file good("s3cret", 0600);
  const std::string link = good.path + ".link";
  std::filesystem::create_symlink(good.path, link);
  cfg.rabbitmq.password_file = link;
  EXPECT_THROW(bs_router::load_rabbitmq_password(cfg), config_error);
  std::filesystem::remove(link);
}

} // namespace
