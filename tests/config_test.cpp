#include "bs_router/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>
#include <unistd.h>

#ifndef BS_ROUTER_SOURCE_DIR
#error "BS_ROUTER_SOURCE_DIR is set by tests/CMakeLists.txt"
#endif

namespace {

using bs_router::config;
using bs_router::config_error;
using bs_router::config_overrides;
using bs_router::load_config;
using bs_router::parse_config;
using json = nlohmann::json;

// The sample config of README.md (*Config*), byte for byte.
const char* const spec_sample = R"({
  "cbsdenv": "/pool1",
  "cbsdcolor": false,
  "broker": "beanstalkd",
  "logfile": "/var/log/bs_router/pool1.log",
  "beanstalkd": {
    "uri": "127.0.0.1:11300",
    "tube": "cbsd_pool1",
    "reply_tube_prefix": "cbsd_pool1_result_id",
    "reconnect_timeout": 5,
    "reserve_timeout": 5,
    "publish_timeout": 5,
    "logdir": "/var/log/cbsdmq"
  }
})";

json sample() { return json::parse(spec_sample); }

config parse(const json& document, const config_overrides& overrides = {}) {
  return parse_config(document.dump(), "pool1.json", overrides);
}

// The message of the config_error that parsing `document` throws.
std::string error_of(const json& document, const config_overrides& overrides = {}) {
  try {
    parse(document, overrides);
  } catch (const config_error& error) {
    return error.what();
  }
  return "(no error)";
}

std::string error_of_text(const std::string& text) {
  try {
    parse_config(text, "pool1.json");
  } catch (const config_error& error) {
    return error.what();
  }
  return "(no error)";
}

class temporary_directory {
 public:
  temporary_directory() {
    std::string pattern = ::testing::TempDir() + "config_test.XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    if (!made) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~temporary_directory() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& text) const {
    std::string file = path_ + "/" + name;
    std::ofstream(file) << text;
    return file;
  }

 private:
  std::string path_;
};

TEST(Config, SpecSampleParses) {
  config cfg = parse_config(spec_sample, "pool1.json");
  EXPECT_EQ(cfg.source, "pool1.json");
  EXPECT_EQ(cfg.cbsdenv, "/pool1");
  EXPECT_FALSE(cfg.cbsdcolor);
  EXPECT_EQ(cfg.broker, "beanstalkd");
  EXPECT_EQ(cfg.logfile, "/var/log/bs_router/pool1.log");
  EXPECT_EQ(cfg.beanstalkd.uri, "127.0.0.1:11300");
  EXPECT_EQ(cfg.beanstalkd.host, "127.0.0.1");
  EXPECT_EQ(cfg.beanstalkd.port, 11300);
  EXPECT_EQ(cfg.beanstalkd.tube, "cbsd_pool1");
  EXPECT_EQ(cfg.beanstalkd.reply_tube_prefix, "cbsd_pool1_result_id");
  EXPECT_EQ(cfg.beanstalkd.reconnect_timeout, 5);
  EXPECT_EQ(cfg.beanstalkd.reserve_timeout, 5);
  EXPECT_EQ(cfg.beanstalkd.publish_timeout, 5);
  EXPECT_EQ(cfg.beanstalkd.logdir, "/var/log/cbsdmq");
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(Config, NewKeysHaveDefaults) {
  config cfg = parse(sample());
  EXPECT_EQ(cfg.cbsd_path, "/usr/local/bin/cbsd");
  EXPECT_EQ(cfg.statedir, "/pool1/.bs_router");
  EXPECT_EQ(cfg.max_jobs, 4);
  EXPECT_EQ(cfg.max_waiting, 64);
  EXPECT_EQ(cfg.job_timeout, 0);
  EXPECT_EQ(cfg.kill_grace, 10);
  EXPECT_FALSE(cfg.progress);
  EXPECT_EQ(cfg.shutdown_timeout, 60);
  EXPECT_EQ(cfg.max_body_bytes, 65536u);
  EXPECT_EQ(cfg.joblog_max_age_days, 30);
  EXPECT_EQ(cfg.joblog_max_files, 10000);
  EXPECT_EQ(cfg.metrics_listen, "");
  EXPECT_EQ(cfg.metrics_port, 0);
}

TEST(Config, StatedirDefaultDoesNotDoubleTheSlash) {
  json document = sample();
  document["cbsdenv"] = "/pool1/";
  EXPECT_EQ(parse(document).statedir, "/pool1/.bs_router");
}

TEST(Config, NewKeysAreRead) {
  json document = sample();
  document["cbsdcolor"] = true;
  document["cbsd_path"] = "/opt/cbsd/bin/cbsd";
  document["statedir"] = "/var/db/bs_router/pool1";
  document["max_jobs"] = 16;
  document["max_waiting"] = 0;
  document["job_timeout"] = 3600;
  document["kill_grace"] = 1;
  document["progress"] = true;
  document["shutdown_timeout"] = 0;
  document["max_body_bytes"] = 1024;
  document["joblog_max_age_days"] = 0;
  document["joblog_max_files"] = 0;
  document["metrics_listen"] = "[::1]:9100";
  config cfg = parse(document);
  EXPECT_TRUE(cfg.cbsdcolor);
  EXPECT_EQ(cfg.cbsd_path, "/opt/cbsd/bin/cbsd");
  EXPECT_EQ(cfg.statedir, "/var/db/bs_router/pool1");
  EXPECT_EQ(cfg.max_jobs, 16);
  EXPECT_EQ(cfg.max_waiting, 0);
  EXPECT_EQ(cfg.job_timeout, 3600);
  EXPECT_EQ(cfg.kill_grace, 1);
  EXPECT_TRUE(cfg.progress);
  EXPECT_EQ(cfg.shutdown_timeout, 0);
  EXPECT_EQ(cfg.max_body_bytes, 1024u);
  EXPECT_EQ(cfg.joblog_max_age_days, 0);
  EXPECT_EQ(cfg.joblog_max_files, 0);
  EXPECT_EQ(cfg.metrics_listen, "[::1]:9100");
  EXPECT_EQ(cfg.metrics_host, "::1");
  EXPECT_EQ(cfg.metrics_port, 9100);
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(Config, RangeLimitsOfNewKeys) {
  struct limit {
    const char* key;
    long long lowest_bad;
    long long lowest_good;
    long long highest_good;
    long long highest_bad;
  };
  const long long none = -1;
  const limit limits[] = {
      {"max_jobs", 0, 1, 1024, 1025},
      {"max_waiting", -1, 0, 100000, 100001},
      {"job_timeout", -1, 0, 2592000, 2592001}, // 30 days, as for a body's Timeout
      {"kill_grace", 0, 1, 2147483647, 2147483648},
      {"shutdown_timeout", -1, 0, 2147483647, 2147483648},
      {"max_body_bytes", 1023, 1024, 16777216, 16777217},
      {"joblog_max_age_days", -1, 0, 2147483647, none},
      {"joblog_max_files", -1, 0, 2147483647, none},
  };
  for (const limit& l : limits) {
    SCOPED_TRACE(l.key);
    json document = sample();
    document[l.key] = l.lowest_good;
    EXPECT_NO_THROW(parse(document));
    document[l.key] = l.highest_good;
    EXPECT_NO_THROW(parse(document));
    document[l.key] = l.lowest_bad;
    EXPECT_EQ(error_of(document).rfind(std::string("pool1.json: ") + l.key + ": must be ", 0), 0u)
        << error_of(document);
    if (l.highest_bad != none) {
      document[l.key] = l.highest_bad;
      EXPECT_EQ(error_of(document).rfind(std::string("pool1.json: ") + l.key + ": must be ", 0), 0u)
          << error_of(document);
    }
  }
}

TEST(Config, RangeErrorSaysTheRange) {
  json document = sample();
  document["max_jobs"] = 0;
  EXPECT_EQ(error_of(document), "pool1.json: max_jobs: must be between 1 and 1024, got 0");
  document = sample();
  document["beanstalkd"]["reserve_timeout"] = 0;
  EXPECT_EQ(error_of(document), "pool1.json: beanstalkd.reserve_timeout: must be at least 1, got 0");
}

TEST(Config, TimeoutsMustBeIntegers) {
  for (const char* key : {"reconnect_timeout", "reserve_timeout", "publish_timeout"}) {
    SCOPED_TRACE(key);
    std::string prefix = std::string("pool1.json: beanstalkd.") + key + ": ";
    json document = sample();
    document["beanstalkd"][key] = "5";
    EXPECT_EQ(error_of(document), prefix + "expected an integer, got string");
    document["beanstalkd"][key] = 5.0;
    EXPECT_EQ(error_of(document), prefix + "expected an integer, got 5.0");
    document["beanstalkd"][key] = 2.5;
    EXPECT_EQ(error_of(document), prefix + "expected an integer, got 2.5");
    document["beanstalkd"][key] = true;
    EXPECT_EQ(error_of(document), prefix + "expected an integer, got boolean");
    document["beanstalkd"][key] = 0;
    EXPECT_EQ(error_of(document), prefix + "must be at least 1, got 0");
    document["beanstalkd"][key] = -3;
    EXPECT_EQ(error_of(document), prefix + "must be at least 1, got -3");
    document["beanstalkd"].erase(key);
    EXPECT_EQ(error_of(document), prefix + "missing");
  }
}

TEST(Config, ExampleMessageOfTheBrief) {
  EXPECT_EQ(error_of_text(R"({"cbsdenv":"/pool1","broker":"beanstalkd","logfile":"/dev/stdout","beanstalkd":{
    "uri":"127.0.0.1:11300","tube":"cbsd_pool1","reply_tube_prefix":"p","reconnect_timeout":5,
    "reserve_timeout":"5","publish_timeout":5,"logdir":"/tmp"}})"),
            "pool1.json: beanstalkd.reserve_timeout: expected an integer, got string");
}

TEST(Config, HugeIntegersAreOutOfRange) {
  json document = sample();
  document["beanstalkd"]["publish_timeout"] = 18446744073709551615ull;
  EXPECT_EQ(error_of(document),
            "pool1.json: beanstalkd.publish_timeout: must be at most 2147483647, got 18446744073709551615");
  EXPECT_EQ(error_of_text(R"({"max_jobs": 1e400})").rfind("pool1.json: not valid JSON", 0), 0u);
}

TEST(Config, RequiredStringsNameTheirKey) {
  struct required {
    const char* parent;
    const char* key;
  };
  for (required r : {required{nullptr, "cbsdenv"}, required{nullptr, "broker"}, required{nullptr, "logfile"},
                     required{"beanstalkd", "uri"}, required{"beanstalkd", "tube"},
                     required{"beanstalkd", "reply_tube_prefix"}, required{"beanstalkd", "logdir"}}) {
    std::string path = r.parent ? std::string(r.parent) + "." + r.key : r.key;
    SCOPED_TRACE(path);
    json document = sample();
    json& object = r.parent ? document[r.parent] : document;

    object.erase(r.key);
    EXPECT_EQ(error_of(document), "pool1.json: " + path + ": missing");
    object[r.key] = "";
    EXPECT_EQ(error_of(document), "pool1.json: " + path + ": missing");
    object[r.key] = nullptr;
    EXPECT_EQ(error_of(document), "pool1.json: " + path + ": missing");
    object[r.key] = 7;
    EXPECT_EQ(error_of(document), "pool1.json: " + path + ": expected a string, got number");
    object[r.key] = json::array();
    EXPECT_EQ(error_of(document), "pool1.json: " + path + ": expected a string, got array");
  }
}

TEST(Config, BeanstalkdObject) {
  json document = sample();
  document.erase("beanstalkd");
  EXPECT_EQ(error_of(document), "pool1.json: beanstalkd: missing");
  document["beanstalkd"] = "127.0.0.1:11300";
  EXPECT_EQ(error_of(document), "pool1.json: beanstalkd: expected an object, got string");
}

TEST(Config, Cbsdcolor) {
  json document = sample();
  document.erase("cbsdcolor");
  EXPECT_FALSE(parse(document).cbsdcolor);
  document["cbsdcolor"] = true;
  EXPECT_TRUE(parse(document).cbsdcolor);
  document["cbsdcolor"] = "false";
  EXPECT_EQ(error_of(document), "pool1.json: cbsdcolor: expected true or false, got string");
  document["cbsdcolor"] = 0;
  EXPECT_EQ(error_of(document), "pool1.json: cbsdcolor: expected true or false, got number");
}

TEST(Config, OtherTypeErrorsOfNewKeys) {
  json document = sample();
  document["progress"] = 1;
  EXPECT_EQ(error_of(document), "pool1.json: progress: expected true or false, got number");
  document = sample();
  document["cbsd_path"] = false;
  EXPECT_EQ(error_of(document), "pool1.json: cbsd_path: expected a string, got boolean");
  document = sample();
  document["max_jobs"] = "4";
  EXPECT_EQ(error_of(document), "pool1.json: max_jobs: expected an integer, got string");
  document = sample();
  document["metrics_listen"] = 9100;
  EXPECT_EQ(error_of(document), "pool1.json: metrics_listen: expected a string, got number");
}

TEST(Config, BrokerIsBeanstalkdOrRabbitmq) {
  json document = sample();
  document["broker"] = "kafka";
  EXPECT_EQ(error_of(document), "pool1.json: broker: unknown broker \"kafka\" (beanstalkd or rabbitmq)");
  // rabbitmq needs its own section (see rabbitmq_config_test.cpp).
  document["broker"] = "rabbitmq";
  EXPECT_EQ(error_of(document), "pool1.json: rabbitmq: missing");
}

TEST(Config, CommandLineFillsOnlyMissingOrEmptyValues) {
  json document = sample();
  config cfg = parse(document, config_overrides{"/usr/jails", "kafka"});
  EXPECT_EQ(cfg.cbsdenv, "/pool1");  // the file wins when it says something
  EXPECT_EQ(cfg.broker, "beanstalkd");

  document.erase("cbsdenv");
  document["broker"] = "";
  cfg = parse(document, config_overrides{"/usr/jails", "beanstalkd"});
  EXPECT_EQ(cfg.cbsdenv, "/usr/jails");
  EXPECT_EQ(cfg.broker, "beanstalkd");
  EXPECT_EQ(cfg.statedir, "/usr/jails/.bs_router");

  EXPECT_EQ(error_of(document, config_overrides{"/usr/jails", "kafka"}),
            "pool1.json: broker: unknown broker \"kafka\" (beanstalkd or rabbitmq)");
  EXPECT_EQ(error_of(document, config_overrides{"", "beanstalkd"}), "pool1.json: cbsdenv: missing");
  EXPECT_EQ(error_of(document, config_overrides{"/usr/jails", ""}), "pool1.json: broker: missing");

  // A wrongly typed value is an error, not an absent one.
  document["cbsdenv"] = 1;
  EXPECT_EQ(error_of(document, config_overrides{"/usr/jails", "beanstalkd"}),
            "pool1.json: cbsdenv: expected a string, got number");
}

TEST(Config, Uri) {
  struct good_uri {
    const char* uri;
    const char* host;
    int port;
  };
  for (good_uri g : {good_uri{"127.0.0.1:11300", "127.0.0.1", 11300}, good_uri{"localhost:1", "localhost", 1},
                     good_uri{"mq.example.org:65535", "mq.example.org", 65535},
                     good_uri{"[::1]:11300", "::1", 11300}, good_uri{"[fe80::1:2]:80", "fe80::1:2", 80},
                     good_uri{"[::ffff:10.0.0.1]:11300", "::ffff:10.0.0.1", 11300}}) {
    SCOPED_TRACE(g.uri);
    json document = sample();
    document["beanstalkd"]["uri"] = g.uri;
    config cfg = parse(document);
    EXPECT_EQ(cfg.beanstalkd.uri, g.uri);
    EXPECT_EQ(cfg.beanstalkd.host, g.host);
    EXPECT_EQ(cfg.beanstalkd.port, g.port);
  }
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", ":11300", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:99999999", "127.0.0.1:11300x", "127.0.0.1:-1", "::1:11300", "[::1]11300",
                          "[::1]", "[]:11300", "[zz::1]:11300", "host name:11300",
                          "beanstalk://127.0.0.1:11300"}) {
    SCOPED_TRACE(bad);
    json document = sample();
    document["beanstalkd"]["uri"] = bad;
    EXPECT_EQ(error_of(document).rfind("pool1.json: beanstalkd.uri: ", 0), 0u) << error_of(document);
  }
  json document = sample();
  document["beanstalkd"]["uri"] = "127.0.0.1:0";
  EXPECT_EQ(error_of(document), "pool1.json: beanstalkd.uri: port 0 is not between 1 and 65535");
}

TEST(Config, MetricsListen) {
  json document = sample();
  document["metrics_listen"] = "";
  EXPECT_EQ(parse(document).metrics_port, 0);
  document["metrics_listen"] = "127.0.0.1:9100";
  config cfg = parse(document);
  EXPECT_EQ(cfg.metrics_host, "127.0.0.1");
  EXPECT_EQ(cfg.metrics_port, 9100);
  document["metrics_listen"] = "9100";
  EXPECT_EQ(error_of(document).rfind("pool1.json: metrics_listen: ", 0), 0u);
}

TEST(Config, TubeNames) {
  for (const char* good : {"cbsd_pool1", "a", "A-Z+0/9;.$_()", "x-"}) {
    SCOPED_TRACE(good);
    json document = sample();
    document["beanstalkd"]["tube"] = good;
    document["beanstalkd"]["reply_tube_prefix"] = good;
    EXPECT_NO_THROW(parse(document));
  }
  for (const char* bad : {"-cbsd", "cbsd pool", "cbsd\npool", "cbsd*", "cbsd:1", "пул"}) {
    SCOPED_TRACE(bad);
    json document = sample();
    document["beanstalkd"]["tube"] = bad;
    EXPECT_EQ(error_of(document).rfind("pool1.json: beanstalkd.tube: ", 0), 0u) << error_of(document);
    document = sample();
    document["beanstalkd"]["reply_tube_prefix"] = bad;
    EXPECT_EQ(error_of(document).rfind("pool1.json: beanstalkd.reply_tube_prefix: ", 0), 0u) << error_of(document);
  }
  json document = sample();
  document["beanstalkd"]["tube"] = std::string(200, 't');
  EXPECT_NO_THROW(parse(document));
  document["beanstalkd"]["tube"] = std::string(201, 't');
  EXPECT_EQ(error_of(document).rfind("pool1.json: beanstalkd.tube: ", 0), 0u);
}

TEST(Config, ReplyTubePrefixLeavesRoomForAJobId) {
  json document = sample();
  document["beanstalkd"]["reply_tube_prefix"] = std::string(180, 'r');
  EXPECT_NO_THROW(parse(document));
  document["beanstalkd"]["reply_tube_prefix"] = std::string(181, 'r');
  EXPECT_EQ(error_of(document),
            "pool1.json: beanstalkd.reply_tube_prefix: longer than 180 bytes: no room left for a job id in a "
            "200-byte tube name");
}

TEST(Config, PathsOfNewKeysMustBeAbsolute) {
  json document = sample();
  document["cbsd_path"] = "cbsd";
  EXPECT_EQ(error_of(document), "pool1.json: cbsd_path: expected an absolute path, got \"cbsd\"");
  document = sample();
  document["statedir"] = "state";
  EXPECT_EQ(error_of(document), "pool1.json: statedir: expected an absolute path, got \"state\"");
}

TEST(Config, LogfileMayBeStdout) {
  json document = sample();
  document["logfile"] = "/dev/stdout";
  EXPECT_EQ(parse(document).logfile, "/dev/stdout");
}

TEST(Config, UnknownKeysAreWarningsAtEveryLevel) {
  json document = sample();
  document["foo"] = 1;
  document["beanstalkd"]["bar"] = {{"baz", 1}};
  config cfg = parse(document);
  ASSERT_EQ(cfg.warnings.size(), 2u);
  EXPECT_EQ(cfg.warnings[0], "pool1.json: unknown key \"foo\" ignored");
  EXPECT_EQ(cfg.warnings[1], "pool1.json: unknown key \"beanstalkd.bar\" ignored");
}

TEST(Config, NewKeysInsideBeanstalkdAreUnknown) {
  json document = sample();
  document["beanstalkd"]["max_jobs"] = 2;
  config cfg = parse(document);
  EXPECT_EQ(cfg.max_jobs, 4);
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0], "pool1.json: unknown key \"beanstalkd.max_jobs\" ignored");
}

TEST(Config, KeysDifferingInCaseAreTakenAsGoDidWithAWarning) {
  json document = sample();
  document["CbsdEnv"] = document["cbsdenv"];
  document.erase("cbsdenv");
  document["beanstalkd"]["Tube"] = "other";
  document["beanstalkd"].erase("tube");
  config cfg = parse(document);
  EXPECT_EQ(cfg.cbsdenv, "/pool1");
  EXPECT_EQ(cfg.beanstalkd.tube, "other");
  ASSERT_EQ(cfg.warnings.size(), 2u);
  EXPECT_EQ(cfg.warnings[0], "pool1.json: key \"CbsdEnv\" taken as \"cbsdenv\"");
  EXPECT_EQ(cfg.warnings[1], "pool1.json: key \"beanstalkd.Tube\" taken as \"beanstalkd.tube\"");
}

TEST(Config, ExactKeyWinsOverOneDifferingInCase) {
  json document = sample();
  document["CBSDENV"] = "/elsewhere";
  config cfg = parse(document);
  EXPECT_EQ(cfg.cbsdenv, "/pool1");
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0], "pool1.json: unknown key \"CBSDENV\" ignored");
}

TEST(Config, NotJson) {
  std::string message = error_of_text("{\"cbsdenv\": \"/pool1\",");
  EXPECT_EQ(message.rfind("pool1.json: not valid JSON: ", 0), 0u) << message;
  EXPECT_EQ(message.find("[json.exception"), std::string::npos) << message;
  EXPECT_NE(message.find("line 1"), std::string::npos) << message;

  EXPECT_EQ(error_of_text("").rfind("pool1.json: not valid JSON: ", 0), 0u);
  EXPECT_EQ(error_of_text("{} trailing").rfind("pool1.json: not valid JSON: ", 0), 0u);
  EXPECT_EQ(error_of_text("{\"cbsdenv\": \"/pool1\" // comment\n}").rfind("pool1.json: not valid JSON: ", 0), 0u);
}

TEST(Config, TopLevelMustBeAnObject) {
  EXPECT_EQ(error_of_text("[]"), "pool1.json: expected a JSON object at the top, got array");
  EXPECT_EQ(error_of_text("\"x\""), "pool1.json: expected a JSON object at the top, got string");
}

TEST(Config, LoadNamesTheFileAsGiven) {
  temporary_directory dir;
  std::string path = dir.write("pool1.conf", spec_sample);  // any name, not only *.json
  config cfg = load_config(path);
  EXPECT_EQ(cfg.source, path);
  EXPECT_EQ(cfg.cbsdenv, "/pool1");

  std::string broken = dir.write("broken.json", R"({"cbsdenv": 1})");
  try {
    load_config(broken);
    FAIL() << "no error";
  } catch (const config_error& error) {
    EXPECT_EQ(std::string(error.what()), broken + ": cbsdenv: expected a string, got number");
  }
}

TEST(Config, LoadUsesTheRelativePathAsGiven) {
  temporary_directory dir;
  dir.write("pool1.json", R"({"broker": 5})");
  char previous[4096];
  ASSERT_NE(::getcwd(previous, sizeof previous), nullptr);
  ASSERT_EQ(::chdir(dir.path().c_str()), 0);
  std::string message;
  try {
    load_config("pool1.json");
  } catch (const config_error& error) {
    message = error.what();
  }
  ASSERT_EQ(::chdir(previous), 0);
  EXPECT_EQ(message, "pool1.json: cbsdenv: missing");
}

TEST(Config, LoadPassesOverrides) {
  temporary_directory dir;
  json document = sample();
  document.erase("cbsdenv");
  std::string path = dir.write("pool1.json", document.dump());
  EXPECT_EQ(load_config(path, config_overrides{"/pool9", ""}).cbsdenv, "/pool9");
}

TEST(Config, CannotRead) {
  temporary_directory dir;
  std::string missing = dir.path() + "/pool1.json";
  try {
    load_config(missing);
    FAIL() << "no error";
  } catch (const config_error& error) {
    EXPECT_EQ(std::string(error.what()), missing + ": cannot read: No such file or directory");
  }
  try {
    load_config(dir.path());
    FAIL() << "no error";
  } catch (const config_error& error) {
    EXPECT_EQ(std::string(error.what()), dir.path() + ": cannot read: Is a directory");
  }
}

TEST(Config, SamplesInTheSourceTreeParse) {
  config pool1 = load_config(std::string(BS_ROUTER_SOURCE_DIR) + "/config/pool1.json");
  EXPECT_EQ(pool1.cbsdenv, "/pool1");
  EXPECT_EQ(pool1.beanstalkd.tube, "cbsd_pool1");
  EXPECT_EQ(pool1.beanstalkd.reply_tube_prefix, "cbsd_pool1_result_id");
  EXPECT_EQ(pool1.logfile, "/var/log/bs_router/pool1.log");
  EXPECT_EQ(pool1.beanstalkd.logdir, "/var/log/cbsdmq");
  EXPECT_TRUE(pool1.warnings.empty());

  config pool2 = load_config(std::string(BS_ROUTER_SOURCE_DIR) + "/config/pool2.json");
  EXPECT_EQ(pool2.cbsdenv, "/pool2");
  EXPECT_EQ(pool2.beanstalkd.tube, "cbsd_pool2");
  EXPECT_EQ(pool2.beanstalkd.reply_tube_prefix, "cbsd_pool2_result_id");
  EXPECT_EQ(pool2.logfile, "/var/log/bs_router/pool2.log");
  EXPECT_TRUE(pool2.warnings.empty());
}

TEST(Config, WorkspaceNeedsNcInventory) {
  temporary_directory dir;
  config cfg = parse(sample());
  cfg.cbsdenv = dir.path();
  try {
    bs_router::check_workspace(cfg);
    FAIL() << "no error";
  } catch (const config_error& error) {
    std::string message = error.what();
    EXPECT_EQ(message.rfind(dir.path() + "/nc.inventory: missing", 0), 0u) << message;
  }
  dir.write("nc.inventory", "");
  EXPECT_NO_THROW(bs_router::check_workspace(cfg));
}

TEST(Config, WorkspaceThatDoesNotExist) {
  config cfg = parse(sample());
  cfg.cbsdenv = "/nonexistent/bs_router/pool";
  EXPECT_THROW(bs_router::check_workspace(cfg), config_error);
}

// What one job's output may cost in memory (the reply) and on disk.
TEST(Config, OutputBoundsHaveDefaultsAndRanges) {
  config defaults = parse(sample());
  EXPECT_EQ(defaults.max_reply_bytes, 1048576u);
  EXPECT_EQ(defaults.joblog_max_bytes, 1073741824u);
  EXPECT_EQ(defaults.joblog_max_output_bytes, 16777216u);

  json document = sample();
  document["max_reply_bytes"] = 4096;
  document["joblog_max_bytes"] = 0;
  document["joblog_max_output_bytes"] = 1099511627776;
  config cfg = parse(document);
  EXPECT_EQ(cfg.max_reply_bytes, 4096u);
  EXPECT_EQ(cfg.joblog_max_bytes, 0u);
  EXPECT_EQ(cfg.joblog_max_output_bytes, 1099511627776u);
  EXPECT_TRUE(cfg.warnings.empty());

  const std::pair<const char*, json> bad[] = {
      {"max_reply_bytes", 1023},           {"max_reply_bytes", 67108865},
      {"joblog_max_bytes", -1},            {"joblog_max_bytes", 1099511627777},
      {"joblog_max_output_bytes", -1},     {"joblog_max_output_bytes", "1"},
  };
  for (const auto& [key, value] : bad) {
    json wrong = sample();
    wrong[key] = value;
    EXPECT_EQ(error_of(wrong).rfind(std::string("pool1.json: ") + key + ": ", 0), 0u) << error_of(wrong);
  }
}

// --- who may run what (job_policy.hpp) ---------------------------------------

TEST(Config, PolicyDefaultsAllowEveryCommandAndRefuseEvaluatedValues) {
  config cfg = parse(sample());
  EXPECT_FALSE(cfg.policy.commands.has_value());
  EXPECT_TRUE(cfg.policy.deny_commands.empty());
  EXPECT_FALSE(cfg.policy.unsafe_values_everywhere);
  EXPECT_TRUE(cfg.policy.unsafe_value_keys.empty());
  json document = sample();
  document["commands"] = nullptr; // null is "not given", as for every key
  EXPECT_FALSE(parse(document).policy.commands.has_value());
}

TEST(Config, PolicyKeysAreRead) {
  json document = sample();
  document["commands"] = {"jstart", "jstop", "jstart", "bhyve-dsk", "vm_1.x"};
  document["deny_commands"] = {"jexec"};
  config cfg = parse(document);
  ASSERT_TRUE(cfg.policy.commands.has_value());
  EXPECT_EQ(*cfg.policy.commands, (std::set<std::string, std::less<>>{"bhyve-dsk", "jstart", "jstop", "vm_1.x"}));
  EXPECT_EQ(cfg.policy.deny_commands, (std::set<std::string, std::less<>>{"jexec"}));
  EXPECT_TRUE(cfg.warnings.empty());

  document = sample();
  document["allow_unsafe_values"] = true;
  cfg = parse(document);
  EXPECT_TRUE(cfg.policy.unsafe_values_everywhere);
  ASSERT_EQ(cfg.warnings.size(), 1u); // dangerous: said at every start
  EXPECT_NE(cfg.warnings[0].find("pool1.json: allow_unsafe_values: "), std::string::npos) << cfg.warnings[0];

  document["allow_unsafe_values"] = json::array({"cmd", "comment"});
  cfg = parse(document);
  EXPECT_FALSE(cfg.policy.unsafe_values_everywhere);
  EXPECT_EQ(cfg.policy.unsafe_value_keys, (std::set<std::string, std::less<>>{"cmd", "comment"}));
  EXPECT_EQ(cfg.warnings.size(), 1u);

  document["allow_unsafe_values"] = false;
  cfg = parse(document);
  EXPECT_FALSE(cfg.policy.unsafe_values_everywhere);
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(Config, PolicyTypeErrorsNameTheFileAndTheKey) {
  struct example {
    const char* key;
    json value;
    const char* error;
  };
  const example examples[] = {
      {"commands", "jstart", "pool1.json: commands: expected an array of command names, got string"},
      {"commands", json::object(), "pool1.json: commands: expected an array of command names, got object"},
      {"commands", true, "pool1.json: commands: expected an array of command names, got boolean"},
      {"commands", {"jstart", 5}, "pool1.json: commands[1]: expected a command name, got number"},
      {"commands", {"jstart", nullptr}, "pool1.json: commands[1]: expected a command name, got null"},
      {"commands", {"jls; reboot"},
       "pool1.json: commands[0]: \"jls; reboot\" is not a command name (1 to 64 characters from A-Z a-z 0-9 _ . -, "
       "not starting with . or -)"},
      {"commands", {""},
       "pool1.json: commands[0]: \"\" is not a command name (1 to 64 characters from A-Z a-z 0-9 _ . -, not "
       "starting with . or -)"},
      {"deny_commands", "jexec", "pool1.json: deny_commands: expected an array of command names, got string"},
      {"deny_commands", {"-rf"},
       "pool1.json: deny_commands[0]: \"-rf\" is not a command name (1 to 64 characters from A-Z a-z 0-9 _ . -, "
       "not starting with . or -)"},
      {"allow_unsafe_values", "yes",
       "pool1.json: allow_unsafe_values: expected true, false or an array of key names, got string"},
      {"allow_unsafe_values", 1,
       "pool1.json: allow_unsafe_values: expected true, false or an array of key names, got number"},
      {"allow_unsafe_values", {"cmd", false}, "pool1.json: allow_unsafe_values[1]: expected a key name, got boolean"},
      {"allow_unsafe_values", {"a b"},
       "pool1.json: allow_unsafe_values[0]: \"a b\" is not a key name (1 to 64 characters from A-Z a-z 0-9 _ . -, "
       "not starting with . or -)"},
  };
  for (const example& e : examples) {
    json document = sample();
    document[e.key] = e.value;
    EXPECT_EQ(error_of(document), e.error) << e.key << " = " << e.value.dump();
  }
}

TEST(Config, ACommandBothAllowedAndDeniedIsAnError) {
  json document = sample();
  document["commands"] = {"jstart", "jexec"};
  document["deny_commands"] = {"jexec"};
  EXPECT_EQ(error_of(document),
            "pool1.json: deny_commands: \"jexec\" is also in commands: a command is either accepted or denied");
}

TEST(Config, AnEmptyCommandListIsAWarning) {
  json document = sample();
  document["commands"] = json::array();
  config cfg = parse(document);
  ASSERT_TRUE(cfg.policy.commands.has_value());
  EXPECT_TRUE(cfg.policy.commands->empty());
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0], "pool1.json: commands is empty: every job is refused");
}

// The samples accept what the example scripts and cbsd-mq-api send (docs/examples/*/*.sh:
// the word after the client's options is the command).
TEST(Config, SamplesAcceptEveryCommandOfTheExampleScripts) {
  const std::string source = BS_ROUTER_SOURCE_DIR;
  std::set<std::string> sent;
  for (const char* kind : {"jail", "bhyve"}) {
    for (const auto& entry : std::filesystem::directory_iterator(source + "/docs/examples/" + kind)) {
      std::ifstream in(entry.path());
      std::string line;
      bool next_is_command = false;
      while (std::getline(in, line)) {
        if (next_is_command) {
          std::istringstream words(line);
          std::string command;
          words >> command;
          sent.insert(command);
          next_is_command = false;
        }
        next_is_command = line.find("\"$client\" -config") != std::string::npos;
      }
    }
  }
  EXPECT_EQ(sent, (std::set<std::string>{"bcreate", "bls", "bremove", "bstart", "bstop", "jcreate", "jls", "jremove",
                                         "jstart", "jstop"}));
  for (const char* sample_file : {"/config/pool1.json", "/config/pool2.json"}) {
    config cfg = load_config(source + sample_file);
    ASSERT_TRUE(cfg.policy.commands.has_value()) << sample_file;
    for (const std::string& command : sent) EXPECT_EQ(cfg.policy.commands->count(command), 1u) << sample_file << " " << command;
    // cbsd-mq-api's default script names (its -runscript_* and *_script flags).
    for (const char* command : {"jail-api", "vm-api", "control-api", "k8world"})
      EXPECT_EQ(cfg.policy.commands->count(command), 1u) << sample_file << " " << command;
    // What an attacker tried first: none of it is in the samples.
    for (const char* command : {"jexec", "initenv", "jconstruct-tui", "bexec", "pkg", "sysrc"})
      EXPECT_EQ(cfg.policy.commands->count(command), 0u) << sample_file << " " << command;
  }
}


TEST(Config, LookupsKey) {
  using bs_router::lookup_source;
  EXPECT_EQ(parse(sample()).lookups, lookup_source::automatic);
  const std::pair<const char*, lookup_source> keys[] = {
      {"auto", lookup_source::automatic}, {"database", lookup_source::database}, {"cbsd", lookup_source::cbsd}};
  for (const auto& [text, source] : keys) {
    json document = sample();
    document["lookups"] = text;
    config cfg = parse(document);
    EXPECT_EQ(cfg.lookups, source) << text;
    EXPECT_TRUE(cfg.warnings.empty()) << text;
  }
  json document = sample();
  document["lookups"] = "sqlite";
  EXPECT_EQ(error_of(document),
            "pool1.json: lookups: expected \"auto\", \"database\" or \"cbsd\", got \"sqlite\"");
  document["lookups"] = true;
  EXPECT_EQ(error_of(document), "pool1.json: lookups: expected a string, got boolean");
}

} // namespace
