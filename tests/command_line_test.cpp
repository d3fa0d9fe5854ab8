#include "bs_router/command_line.hpp"

#include <gtest/gtest.h>

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

using bs_router::body_from_words;
using bs_router::client_options;
using bs_router::max_client_timeout_seconds;
using bs_router::parse_client_command_line;
using bs_router::parse_router_command_line;
using bs_router::parsed_command_line;
using bs_router::router_options;

// argv as main() gets it, program name first.
struct arguments {
  std::vector<const char*> argv;
  arguments(const char* program, std::initializer_list<const char*> args) {
    argv.push_back(program);
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(argv.size()) - 1; }
};

parsed_command_line<router_options> router(std::initializer_list<const char*> args) {
  arguments a("bs_router", args);
  return parse_router_command_line(a.argc(), a.argv.data());
}

parsed_command_line<client_options> client(std::initializer_list<const char*> args) {
  arguments a("bs_router-client", args);
  return parse_client_command_line(a.argc(), a.argv.data());
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Router ------------------------------------------------------------------

TEST(RouterCommandLine, SingleDashAsInRcdFiles) {
  auto parsed = router({"-config", "/usr/local/etc/cbsdmq.json", "-cbsdenv", "/pool1", "-broker", "beanstalkd"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->config_path, "/usr/local/etc/cbsdmq.json");
  EXPECT_EQ(parsed.options->cbsdenv, "/pool1");
  EXPECT_EQ(parsed.options->broker, "beanstalkd");
  EXPECT_FALSE(parsed.options->check_only);
  EXPECT_EQ(parsed.exit_code, 0);
}

TEST(RouterCommandLine, DoubleDash) {
  auto parsed = router({"--config", "pool1.json", "--cbsdenv", "/pool1", "--broker", "beanstalkd", "--check"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->config_path, "pool1.json");
  EXPECT_EQ(parsed.options->cbsdenv, "/pool1");
  EXPECT_EQ(parsed.options->broker, "beanstalkd");
  EXPECT_TRUE(parsed.options->check_only);
  EXPECT_FALSE(parsed.options->list_journal);
  for (const char* flag : {"--journal", "-journal"}) {
    auto listing = router({"-config", "pool1.json", flag});
    ASSERT_TRUE(listing.options) << listing.output;
    EXPECT_TRUE(listing.options->list_journal);
  }
}

TEST(RouterCommandLine, ValueAfterEquals) {
  for (const char* arg : {"-config=pool1.json", "--config=pool1.json"}) {
    SCOPED_TRACE(arg);
    auto parsed = router({arg});
    ASSERT_TRUE(parsed.options) << parsed.output;
    EXPECT_EQ(parsed.options->config_path, "pool1.json");
  }
  auto parsed = router({"-cbsdenv=/pool1", "-config=a=b.json"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->cbsdenv, "/pool1");
  EXPECT_EQ(parsed.options->config_path, "a=b.json");
}

TEST(RouterCommandLine, ShortConfigAndSingleDashCheck) {
  auto parsed = router({"-c", "pool1.json", "-check"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->config_path, "pool1.json");
  EXPECT_TRUE(parsed.options->check_only);
}

TEST(RouterCommandLine, ValuesThatLookLikeOptionNamesAreValues) {
  // The file is really called "-broker"; only option positions are rewritten.
  auto parsed = router({"-c", "-broker", "-cbsdenv", "-config"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->config_path, "-broker");
  EXPECT_EQ(parsed.options->cbsdenv, "-config");
}

TEST(RouterCommandLine, LastRepeatedOptionCounts) {
  auto parsed = router({"-config", "a.json", "--config", "b.json"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->config_path, "b.json");
}

TEST(RouterCommandLine, MissingConfigIsAUsageError) {
  auto parsed = router({"-cbsdenv", "/pool1"});
  EXPECT_FALSE(parsed.options);
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_TRUE(parsed.output_is_error);
  EXPECT_TRUE(contains(parsed.output, "-config FILE is required")) << parsed.output;
  EXPECT_TRUE(contains(parsed.output, "--help")) << parsed.output;
}

TEST(RouterCommandLine, UsageErrors) {
  for (auto args : {std::initializer_list<const char*>{"-config"}, {"-config", "a.json", "-unknown"},
                    {"-config", "a.json", "--nope"}, {"-config", "a.json", "extra"}, {"-config", "a.json", "-x"}}) {
    auto parsed = router(args);
    EXPECT_FALSE(parsed.options);
    EXPECT_EQ(parsed.exit_code, 2) << parsed.output;
    EXPECT_TRUE(parsed.output_is_error);
    EXPECT_FALSE(parsed.output.empty());
  }
}

TEST(RouterCommandLine, HelpListsEveryOption) {
  for (const char* arg : {"--help", "-h", "-help"}) {
    SCOPED_TRACE(arg);
    auto parsed = router({arg});
    EXPECT_FALSE(parsed.options);
    EXPECT_EQ(parsed.exit_code, 0);
    EXPECT_FALSE(parsed.output_is_error);
    for (const char* option : {"--config", "-config", "-c", "--cbsdenv", "-cbsdenv", "--broker", "-broker",
                               "--check", "--help", "--version", "-V"})
      EXPECT_TRUE(contains(parsed.output, option)) << option << " not in:\n" << parsed.output;
  }
}

TEST(RouterCommandLine, Version) {
  for (const char* arg : {"--version", "-V", "-version"}) {
    SCOPED_TRACE(arg);
    auto parsed = router({arg});
    EXPECT_FALSE(parsed.options);
    EXPECT_EQ(parsed.exit_code, 0);
    EXPECT_FALSE(parsed.output_is_error);
    EXPECT_EQ(parsed.output, std::string("bs_router ") + BS_ROUTER_VERSION + "\n");
  }
}

TEST(RouterCommandLine, HelpAndVersionNeedNoConfig) {
  EXPECT_EQ(router({"-cbsdenv", "/pool1", "--help"}).exit_code, 0);
  EXPECT_EQ(router({"-cbsdenv", "/pool1", "--version"}).exit_code, 0);
}

// Client ------------------------------------------------------------------

TEST(ClientCommandLine, BodyAsTheGoClientTookIt) {
  const char* body = R"({"Command":"jls","CommandArgs":{"header":"0","display":"jname,jid,ip4_addr,status"}})";
  auto parsed = client({"-config", "config.json", "-body", body});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->config_path, "config.json");
  EXPECT_EQ(parsed.options->body, body);
  EXPECT_TRUE(parsed.options->command.empty());
  EXPECT_FALSE(parsed.options->timeout);
  EXPECT_FALSE(parsed.options->json);
  EXPECT_FALSE(parsed.options->quiet_progress);
}

TEST(ClientCommandLine, DoubleDashAndEquals) {
  auto parsed = client({"--config=pool1.json", "--body", "{}", "--json", "--no-progress", "--timeout", "2.5"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->config_path, "pool1.json");
  EXPECT_EQ(parsed.options->body, "{}");
  EXPECT_TRUE(parsed.options->json);
  EXPECT_TRUE(parsed.options->quiet_progress);
  ASSERT_TRUE(parsed.options->timeout);
  EXPECT_DOUBLE_EQ(*parsed.options->timeout, 2.5);
}

TEST(ClientCommandLine, SingleDashLongFlags) {
  auto parsed = client({"-config", "pool1.json", "-body={}", "-json", "-no-progress", "-timeout=30"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->body, "{}");
  EXPECT_TRUE(parsed.options->json);
  EXPECT_TRUE(parsed.options->quiet_progress);
  EXPECT_DOUBLE_EQ(*parsed.options->timeout, 30);
}

TEST(ClientCommandLine, ShortFormWords) {
  auto parsed = client({"-config", "pool1.json", "jls", "header=0", "display=jname,status"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_TRUE(parsed.options->body.empty());
  EXPECT_EQ(parsed.options->command, (std::vector<std::string>{"jls", "header=0", "display=jname,status"}));
}

TEST(ClientCommandLine, OptionsAfterWords) {
  auto parsed = client({"-config", "pool1.json", "jstart", "jname=jail1", "--timeout", "10"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_EQ(parsed.options->command, (std::vector<std::string>{"jstart", "jname=jail1"}));
  EXPECT_DOUBLE_EQ(*parsed.options->timeout, 10);
}

TEST(ClientCommandLine, BodyAndWordsAreExclusive) {
  auto parsed = client({"-config", "pool1.json", "-body", "{}", "jls"});
  EXPECT_FALSE(parsed.options);
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_TRUE(parsed.output_is_error);
  EXPECT_TRUE(contains(parsed.output, "not both")) << parsed.output;
}

TEST(ClientCommandLine, AJobIsRequired) {
  auto parsed = client({"-config", "pool1.json"});
  EXPECT_FALSE(parsed.options);
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_TRUE(contains(parsed.output, "no job")) << parsed.output;
}

TEST(ClientCommandLine, ConfigIsRequired) {
  auto parsed = client({"-body", "{}"});
  EXPECT_FALSE(parsed.options);
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_TRUE(contains(parsed.output, "-config FILE is required")) << parsed.output;
}

TEST(ClientCommandLine, BadWordsAreUsageErrors) {
  auto parsed = client({"-config", "pool1.json", "jls", "header"});
  EXPECT_FALSE(parsed.options);
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_TRUE(contains(parsed.output, "\"header\": expected key=value")) << parsed.output;
}

TEST(ClientCommandLine, TimeoutMustBeAPositiveNumberUpToAYear) {
  // 1e10 s (some 317 years) overflowed the clock and timed out at once.
  for (const char* bad : {"0", "-1", "abc", "1s", "nan", "inf", "", "1e10", "31536001", "1e400", "-0"}) {
    SCOPED_TRACE(bad);
    auto parsed = client({"-config", "pool1.json", "-body", "{}", "--timeout", bad});
    EXPECT_FALSE(parsed.options);
    EXPECT_EQ(parsed.exit_code, 2) << parsed.output;
    EXPECT_TRUE(parsed.output_is_error);
    EXPECT_TRUE(contains(parsed.output, "--timeout: expected a number of seconds above 0 and at most 31536000"))
        << parsed.output;
  }
  auto parsed = client({"-config", "pool1.json", "-body", "{}", "--timeout", "0.25"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_DOUBLE_EQ(*parsed.options->timeout, 0.25);
  parsed = client({"-config", "pool1.json", "-body", "{}", "--timeout", "31536000"});
  ASSERT_TRUE(parsed.options) << parsed.output;
  EXPECT_DOUBLE_EQ(*parsed.options->timeout, max_client_timeout_seconds);
}

TEST(ClientCommandLine, HelpListsEveryOption) {
  for (const char* arg : {"--help", "-h", "-help"}) {
    SCOPED_TRACE(arg);
    auto parsed = client({arg});
    EXPECT_FALSE(parsed.options);
    EXPECT_EQ(parsed.exit_code, 0);
    EXPECT_FALSE(parsed.output_is_error);
    for (const char* option : {"--config", "-config", "--body", "-body", "--timeout", "--json", "--no-progress",
                               "--help", "--version", "COMMAND key=value"})
      EXPECT_TRUE(contains(parsed.output, option)) << option << " not in:\n" << parsed.output;
  }
}

TEST(ClientCommandLine, Version) {
  for (const char* arg : {"--version", "-V"}) {
    auto parsed = client({arg});
    EXPECT_FALSE(parsed.options);
    EXPECT_EQ(parsed.exit_code, 0);
    EXPECT_EQ(parsed.output, std::string("bs_router-client ") + BS_ROUTER_VERSION + "\n");
  }
}

// body_from_words ---------------------------------------------------------

TEST(BodyFromWords, CommandAndArguments) {
  std::string body = body_from_words({"jls", "header=0", "display=jname,status"});
  EXPECT_EQ(body, R"({"Command":"jls","CommandArgs":{"header":"0","display":"jname,status"}})");
}

TEST(BodyFromWords, CommandAlone) {
  EXPECT_EQ(body_from_words({"jls"}), R"({"Command":"jls","CommandArgs":{}})");
}

TEST(BodyFromWords, ValuesAreStringsKeptByteForByte) {
  std::string body = body_from_words({"jcreate", "jname=jail1", "astart=1", "comment=a \"quoted\" ; reboot; $(x)",
                                      "empty=", "eq=a=b", "nl=line1\nline2"});
  auto parsed = nlohmann::json::parse(body);
  EXPECT_EQ(parsed["Command"], "jcreate");
  auto& args = parsed["CommandArgs"];
  EXPECT_EQ(args["astart"], "1");
  EXPECT_TRUE(args["astart"].is_string());
  EXPECT_EQ(args["comment"], "a \"quoted\" ; reboot; $(x)");
  EXPECT_EQ(args["empty"], "");
  EXPECT_EQ(args["eq"], "a=b");
  EXPECT_EQ(args["nl"], "line1\nline2");
}

TEST(BodyFromWords, BadWords) {
  EXPECT_THROW(body_from_words({}), std::invalid_argument);
  EXPECT_THROW(body_from_words({""}), std::invalid_argument);
  EXPECT_THROW(body_from_words({"jls", "header"}), std::invalid_argument);
  EXPECT_THROW(body_from_words({"jls", "=0"}), std::invalid_argument);
  EXPECT_THROW(body_from_words({"jls", "header=0", "header=1"}), std::invalid_argument);
  EXPECT_THROW(body_from_words({"jls", "name=\xff"}), std::invalid_argument);
}

} // namespace
