#include "bs_router/job.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

using namespace bs_router;
using namespace std::string_literals;

namespace {

job_request decoded(std::string_view body) {
  auto result = decode_job(body);
  EXPECT_TRUE(result.job) << "refused: " << result.error;
  return result.job.value_or(job_request{});
}

std::string refusal(std::string_view body, const job_limits& limits = {}) {
  auto result = decode_job(body, limits);
  EXPECT_FALSE(result.job) << "accepted: " << body;
  EXPECT_FALSE(result.error.empty());
  return result.error;
}

// The argv element a single-argument job with this JSON value produces.
std::string argument_for(const std::string& json_value) {
  auto job = decoded(R"({"Command":"jexec","CommandArgs":{"cmd":)" + json_value + "}}");
  auto argv = job.argv("/usr/local/bin/cbsd");
  EXPECT_EQ(argv.size(), 3u);
  return argv.size() == 3 ? argv[2] : std::string{};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

} // namespace

TEST(Job, DecodesTheCompatExample) {
  auto job = decoded(R"({"Command":"jcreate","CommandArgs":{"jname":"jail1","jail_profile":"default","astart":"1"}})");
  EXPECT_EQ(job.command, "jcreate");
  EXPECT_EQ(job.argv("/usr/local/bin/cbsd"),
            (std::vector<std::string>{"/usr/local/bin/cbsd", "jcreate", "jname=jail1", "jail_profile=default",
                                      "astart=1"}));
  EXPECT_EQ(job.jname, "jail1");
  EXPECT_FALSE(job.emulator);
  EXPECT_FALSE(job.timeout);
}

TEST(Job, KeepsTheBodyOrderOfArguments) {
  auto job = decoded(R"({"Command":"bcreate","CommandArgs":{"zeta":"1","alpha":"2","mid":"3"}})");
  EXPECT_EQ(job.argv("cbsd"), (std::vector<std::string>{"cbsd", "bcreate", "zeta=1", "alpha=2", "mid=3"}));
}

TEST(Job, CommandArgsMayBeAbsentEmptyOrNull) {
  EXPECT_EQ(decoded(R"({"Command":"jls"})").argv("cbsd"), (std::vector<std::string>{"cbsd", "jls"}));
  EXPECT_EQ(decoded(R"({"Command":"jls","CommandArgs":{}})").argv("cbsd"), (std::vector<std::string>{"cbsd", "jls"}));
  // A Go controller encodes a nil map as null.
  EXPECT_EQ(decoded(R"({"Command":"jls","CommandArgs":null})").argv("cbsd"),
            (std::vector<std::string>{"cbsd", "jls"}));
}

TEST(Job, TakesJnameAndEmulatorFromTheArguments) {
  auto job = decoded(R"({"Command":"bstart","CommandArgs":{"emulator":"bhyve","jname":"vm1"}})");
  EXPECT_EQ(job.jname, "vm1");
  EXPECT_EQ(job.emulator, "bhyve");
  // After rendering: a numeric jname is its decimal text.
  EXPECT_EQ(decoded(R"({"Command":"jstart","CommandArgs":{"jname":42}})").jname, "42");
}

TEST(Job, IgnoresJobIdAndUnknownTopLevelFields) {
  auto job = decoded(R"({"JobID":77,"Command":"jls","Extra":[1,2,{"x":null}],"CommandArgs":{"a":"b"}})");
  EXPECT_EQ(job.argv("cbsd"), (std::vector<std::string>{"cbsd", "jls", "a=b"}));
}

TEST(Job, ShellMetacharactersReachArgvByteForByte) {
  EXPECT_EQ(argument_for(R"("\"; touch X; \"")"), R"(cmd="; touch X; ")");
  EXPECT_EQ(argument_for(R"("; touch X; ")"), "cmd=; touch X; ");
  EXPECT_EQ(argument_for(R"json("$(touch X)")json"), "cmd=$(touch X)");
  EXPECT_EQ(argument_for(R"("`touch X`")"), "cmd=`touch X`");
  EXPECT_EQ(argument_for(R"("line1\nline2")"), "cmd=line1\nline2");
  EXPECT_EQ(argument_for(R"("it's \"quoted\"")"), R"(cmd=it's "quoted")");
  EXPECT_EQ(argument_for(R"("a b  c")"), "cmd=a b  c");
  EXPECT_EQ(argument_for(R"("x=y=z")"), "cmd=x=y=z");
  EXPECT_EQ(argument_for(R"("back\\slash")"), R"(cmd=back\slash)");
  EXPECT_EQ(argument_for("\"h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80\""), "cmd=h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(argument_for(R"("\u00e9\u20ac")"), "cmd=\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(argument_for(R"("")"), "cmd=");
}

TEST(Job, RendersIntegersInDecimal) {
  EXPECT_EQ(argument_for("1"), "cmd=1");
  EXPECT_EQ(argument_for("0"), "cmd=0");
  EXPECT_EQ(argument_for("-7"), "cmd=-7");
  EXPECT_EQ(argument_for("9223372036854775807"), "cmd=9223372036854775807");
  EXPECT_EQ(argument_for("-9223372036854775808"), "cmd=-9223372036854775808");
  EXPECT_EQ(argument_for("18446744073709551615"), "cmd=18446744073709551615");
}

TEST(Job, RendersOtherNumbersInShortestFixedNotation) {
  EXPECT_EQ(argument_for("1.5"), "cmd=1.5");
  EXPECT_EQ(argument_for("2.0"), "cmd=2");
  EXPECT_EQ(argument_for("0.1"), "cmd=0.1");
  EXPECT_EQ(argument_for("-0.25"), "cmd=-0.25");
  EXPECT_EQ(argument_for("1e21"), "cmd=1000000000000000000000");
  EXPECT_EQ(argument_for("1e-7"), "cmd=0.0000001");
  EXPECT_EQ(argument_for("-0.0"), "cmd=0");
  EXPECT_EQ(argument_for("-0"), "cmd=0");
  EXPECT_EQ(argument_for("1E2"), "cmd=100");
  EXPECT_EQ(argument_for("2.50e+1"), "cmd=25");
}

TEST(Job, NumbersReachCbsdDigitForDigit) {
  // Beyond 64 bits, and more digits than a double holds: as written, not
  // as the nearest double (123456789012345677877719597056).
  EXPECT_EQ(argument_for("123456789012345678901234567890"), "cmd=123456789012345678901234567890");
  EXPECT_EQ(argument_for("-123456789012345678901234567890"), "cmd=-123456789012345678901234567890");
  EXPECT_EQ(argument_for("18446744073709551616"), "cmd=18446744073709551616");
  EXPECT_EQ(argument_for("0.10000000000000000001"), "cmd=0.10000000000000000001");
  EXPECT_EQ(argument_for("9007199254740993.0"), "cmd=9007199254740993");
  EXPECT_EQ(argument_for("1.5e300"), "cmd=15" + std::string(299, '0'));
  EXPECT_EQ(argument_for("1e-320"), "cmd=0." + std::string(319, '0') + "1");
}

TEST(Job, RefusesNumbersWhosePlainFormIsTooLong) {
  // A double 0 to the parser, but 502 characters to cbsd.
  auto error = refusal(R"({"Command":"jexec","CommandArgs":{"n":1e-500}})");
  EXPECT_EQ(error, "CommandArgs.n: the number's decimal form is longer than 400 characters");
  refusal(R"({"Command":"jexec","CommandArgs":{"n":1e-99999999999999999999}})");
  EXPECT_EQ(argument_for("0e-99999999999999999999"), "cmd=0");
}

TEST(Job, RenderNumber) {
  EXPECT_EQ(render_number("0"), "0");
  EXPECT_EQ(render_number("-0"), "0");
  EXPECT_EQ(render_number("007.500"), "7.5");
  EXPECT_EQ(render_number("0.000"), "0");
  EXPECT_EQ(render_number("12.34e1"), "123.4");
  EXPECT_EQ(render_number("12.34e2"), "1234");
  EXPECT_EQ(render_number("12.34e3"), "12340");
  EXPECT_EQ(render_number("12.34e-2"), "0.1234");
  EXPECT_EQ(render_number("-12.34E-5"), "-0.0001234");
  EXPECT_EQ(render_number("1e+2"), "100");
  EXPECT_EQ(render_number("1500e-3"), "1.5");
  EXPECT_EQ(render_number("1e308")->size(), 309u);
  EXPECT_EQ(render_number("5e-324")->size(), 326u); // "0." + 323 zeros + "5"
  // The limit counts the sign and the point.
  EXPECT_EQ(render_number("-1e-3", 6), "-0.001");
  EXPECT_FALSE(render_number("-1e-3", 5));
  EXPECT_EQ(render_number("1e4", 5), "10000");
  EXPECT_FALSE(render_number("1e5", 5));
  EXPECT_FALSE(render_number("1e999999999999999999999"));
  for (const char* bad : {"", "-", "+1", ".5", "1.", "1e", "1e+", "e5", "1x", "0x10", " 1", "1 ", "1.5.5", "--1"})
    EXPECT_FALSE(render_number(bad)) << bad;
}

TEST(Job, RenderFunctions) {
  EXPECT_EQ(render_integer(-42), "-42");
  EXPECT_EQ(render_unsigned(18446744073709551615ull), "18446744073709551615");
  EXPECT_EQ(render_bool(true), "1");
  EXPECT_EQ(render_bool(false), "0");
}

TEST(Job, RendersBooleansAsOneAndZero) {
  EXPECT_EQ(argument_for("true"), "cmd=1");
  EXPECT_EQ(argument_for("false"), "cmd=0");
}

TEST(Job, RefusesNullArraysAndObjectsNamingTheKey) {
  EXPECT_EQ(refusal(R"({"Command":"bcreate","CommandArgs":{"disks":[1,2]}})"),
            "CommandArgs.disks: arrays are not allowed");
  EXPECT_EQ(refusal(R"({"Command":"bcreate","CommandArgs":{"nic":{"a":1}}})"),
            "CommandArgs.nic: objects are not allowed");
  EXPECT_EQ(refusal(R"({"Command":"bcreate","CommandArgs":{"ip4_addr":null}})"),
            "CommandArgs.ip4_addr: null is not allowed");
}

TEST(Job, RefusesNulInAValue) {
  auto error = refusal(R"({"Command":"jexec","CommandArgs":{"cmd":"ab\u0000cd"}})");
  EXPECT_TRUE(contains(error, "CommandArgs.cmd")) << error;
  EXPECT_TRUE(contains(error, "NUL")) << error;
}

TEST(Job, RefusesNumbersTooLargeForADouble) {
  auto error = refusal(R"({"Command":"jexec","CommandArgs":{"n":1e400}})");
  EXPECT_TRUE(contains(error, "not JSON")) << error; // nlohmann refuses it while parsing
}

TEST(Job, PlainNames) {
  EXPECT_TRUE(is_plain_name("jcreate"));
  EXPECT_TRUE(is_plain_name("bhyve-dsk"));
  EXPECT_TRUE(is_plain_name("_x.y-z_0"));
  EXPECT_TRUE(is_plain_name("0abc"));
  EXPECT_TRUE(is_plain_name(std::string(64, 'a')));
  EXPECT_FALSE(is_plain_name(std::string(65, 'a')));
  EXPECT_FALSE(is_plain_name(""));
  EXPECT_FALSE(is_plain_name("-x"));
  EXPECT_FALSE(is_plain_name(".x"));
  EXPECT_FALSE(is_plain_name("a b"));
  EXPECT_FALSE(is_plain_name("../x"));
  EXPECT_FALSE(is_plain_name("a=b"));
  EXPECT_FALSE(is_plain_name("a/b"));
  EXPECT_FALSE(is_plain_name("a\nb"));
  EXPECT_FALSE(is_plain_name("a\0b"s));
  EXPECT_FALSE(is_plain_name("\xC3\xA9"));
  EXPECT_TRUE(is_plain_name("abc", 3));
  EXPECT_FALSE(is_plain_name("abcd", 3));
}

TEST(Job, RefusesCommandsThatAreNotPlainNames) {
  for (const char* command : {"-x", "", "a b", "../x", "a=b", "--help", "jls;reboot"}) {
    auto error = refusal(std::string(R"({"Command":")") + command + R"("})");
    EXPECT_TRUE(contains(error, "\"Command\"")) << error;
    EXPECT_TRUE(contains(error, "not a plain name")) << error;
  }
}

TEST(Job, RefusesKeysThatAreNotPlainNames) {
  for (const char* key : {"-x", "", "a b", "../x", "a=b", "jname=x mode"}) {
    auto error = refusal(std::string(R"({"Command":"jls","CommandArgs":{")") + key + R"(":"v"}})");
    EXPECT_TRUE(contains(error, "CommandArgs key")) << error;
    EXPECT_TRUE(contains(error, "not a plain name")) << error;
  }
}

TEST(Job, QuotesOnlyTheBeginningOfALongBadName) {
  auto error = refusal(R"({"Command":")" + std::string(5000, 'x') + R"( "})");
  EXPECT_LT(error.size(), 400u) << error;
  EXPECT_TRUE(contains(error, "...")) << error;
}

TEST(Job, RefusesBodiesWithoutAStringCommand) {
  EXPECT_EQ(refusal(R"({"CommandArgs":{}})"), "the job has no \"Command\"");
  EXPECT_EQ(refusal(R"({"Command":7})"), "\"Command\" must be a string");
  EXPECT_EQ(refusal(R"({"Command":null})"), "\"Command\" must be a string");
  EXPECT_EQ(refusal(R"({"Command":["jls"]})"), "\"Command\" must be a string");
  EXPECT_EQ(refusal(R"({"command":"jls"})"), "the job has no \"Command\"");
}

TEST(Job, RefusesTopLevelsThatAreNotObjects) {
  for (const char* body : {"[]", "\"jls\"", "42", "null", "true"})
    EXPECT_EQ(refusal(body), "the job body must be a JSON object") << body;
}

TEST(Job, RefusesCommandArgsThatAreNotAnObject) {
  EXPECT_EQ(refusal(R"({"Command":"jls","CommandArgs":["a=b"]})"), "\"CommandArgs\" must be an object");
  EXPECT_EQ(refusal(R"({"Command":"jls","CommandArgs":"a=b"})"), "\"CommandArgs\" must be an object");
}

TEST(Job, RefusesWhatIsNotJson) {
  for (std::string body : {""s, "jls"s, "{"s, R"({"Command":"jls",})"s, R"({"Command":"jls"} x)"s,
                           "{\"Command\":\"j\xFFls\"}"s, "{\"Command\":\"jls\"}\0"s, "{\"Command\":\"jls\"}\0{\"Command\":\"reboot\"}"s,
                           "{\"Command\":\"jls\"\0}"s, "{'Command':'jls'}"s}) {
    auto error = refusal(body);
    EXPECT_EQ(error.rfind("not JSON: ", 0), 0u) << error;
    EXPECT_FALSE(contains(error, "[json.exception")) << error;
  }
}

TEST(Job, RefusesInvalidUtf8InAValue) {
  auto error = refusal("{\"Command\":\"jls\",\"CommandArgs\":{\"a\":\"\xC0\xAF\"}}");
  EXPECT_EQ(error.rfind("not JSON: ", 0), 0u) << error;
}

TEST(Job, RefusesBodiesOverTheSizeLimitBeforeParsing) {
  std::string body = R"({"Command":"jls","CommandArgs":{"pad":")" + std::string(1 << 20, 'x') + R"("}})";
  auto error = refusal(body);
  EXPECT_TRUE(contains(error, "65536")) << error;
  EXPECT_TRUE(contains(error, std::to_string(body.size()))) << error;

  job_limits small;
  small.max_body_bytes = 20;
  EXPECT_TRUE(contains(refusal(R"({"Command":"jls","x":1})", small), "20 bytes"));
  small.max_body_bytes = 23;
  EXPECT_TRUE(decode_job(R"({"Command":"jls","x":1})", small).job);
}

TEST(Job, RefusesDeepNestingWithoutRecursing) {
  job_limits big;
  big.max_body_bytes = 1 << 20;
  auto error = refusal(std::string(100000, '['), big);
  EXPECT_TRUE(contains(error, "deeper than 16")) << error;
  error = refusal(R"({"Command":"jls","x":)" + std::string(100000, '{'), big);
  EXPECT_TRUE(contains(error, "deeper than 16")) << error;
}

TEST(Job, NestingLimitCountsOnlyBracketsOutsideStrings) {
  job_limits limits;
  limits.max_depth = 3;
  EXPECT_TRUE(decode_job(R"({"Command":"jls","x":[[1]]})", limits).job);
  EXPECT_TRUE(contains(refusal(R"({"Command":"jls","x":[[[1]]]})", limits), "deeper than 3"));
  // Brackets and escaped quotes inside strings do not count.
  auto job = decode_job(R"({"Command":"jls","CommandArgs":{"v":"[[[[{{{{\"[[[["}})", limits);
  ASSERT_TRUE(job.job) << job.error;
  EXPECT_EQ(job.job->args.at(0).second, R"([[[[{{{{"[[[[)");
}

TEST(Job, RefusesTooManyArguments) {
  job_limits limits;
  limits.max_args = 3;
  EXPECT_TRUE(decode_job(R"({"Command":"jls","CommandArgs":{"a":1,"b":2,"c":3}})", limits).job);
  EXPECT_EQ(refusal(R"({"Command":"jls","CommandArgs":{"a":1,"b":2,"c":3,"d":4}})", limits),
            "\"CommandArgs\" has 4 entries; at most 3 are allowed");
}

TEST(Job, NameLengthLimitApplies) {
  job_limits limits;
  limits.max_name_bytes = 4;
  EXPECT_TRUE(decode_job(R"({"Command":"jls","CommandArgs":{"abcd":1}})", limits).job);
  refusal(R"({"Command":"jls","CommandArgs":{"abcde":1}})", limits);
  refusal(R"({"Command":"jlsxx"})", limits);
}

TEST(Job, Timeout) {
  using std::chrono::milliseconds;
  EXPECT_EQ(decoded(R"({"Command":"jls","Timeout":30})").timeout, milliseconds(30000));
  EXPECT_EQ(decoded(R"({"Command":"jls","Timeout":0.5})").timeout, milliseconds(500));
  EXPECT_EQ(decoded(R"({"Command":"jls","Timeout":0.001})").timeout, milliseconds(1));
  EXPECT_EQ(decoded(R"({"Command":"jls","Timeout":0.0015})").timeout, milliseconds(2)); // rounded up
  EXPECT_EQ(decoded(R"({"Command":"jls","Timeout":2592000})").timeout, milliseconds(2592000000));
  EXPECT_EQ(decoded(R"({"Command":"jls","Timeout":2.592e6})").timeout, milliseconds(2592000000));
  // 0: no limit of its own, as if absent.
  EXPECT_FALSE(decoded(R"({"Command":"jls","Timeout":0})").timeout);
  EXPECT_FALSE(decoded(R"({"Command":"jls","Timeout":-0.0})").timeout);
}

TEST(Job, RefusesTimeoutsOutOfRange) {
  // 1e300 and 1e10 overflowed the timer; 0.0001 and 1e-400 were taken for 0.
  for (const char* timeout : {"1e300", "1e10", "2592000.5", "2592001", "0.0001", "0.000999", "1e-400", "-1", "-0.5",
                              "\"5\"", "null", "true", "[5]", "{}"}) {
    auto error = refusal(std::string(R"({"Command":"jls","Timeout":)") + timeout + "}");
    EXPECT_EQ(error, "\"Timeout\" must be a number of seconds: 0 (no limit of its own) or from 0.001 to 2592000 seconds")
        << timeout;
  }
}

TEST(Job, TimeLimitIsTheTimeoutCappedAtJobTimeout) {
  using std::chrono::milliseconds;
  job_request job;
  EXPECT_EQ(time_limit(job, 0), milliseconds(0));
  EXPECT_EQ(time_limit(job, 5), milliseconds(5000));
  job.timeout = milliseconds(2500);
  EXPECT_EQ(time_limit(job, 0), milliseconds(2500));
  EXPECT_EQ(time_limit(job, 5), milliseconds(2500));
  EXPECT_EQ(time_limit(job, 2), milliseconds(2000));
  EXPECT_EQ(time_limit(job, max_timeout_seconds), milliseconds(2500));
}

TEST(Job, DuplicateKeysKeepTheLastValue) {
  auto job = decoded(R"({"Command":"jls","CommandArgs":{"a":"1","b":"2","a":"3"}})");
  EXPECT_EQ(job.argv("cbsd"), (std::vector<std::string>{"cbsd", "jls", "a=3", "b=2"}));
}

TEST(Job, RepeatedTopLevelMembersKeepTheLast) {
  EXPECT_EQ(decoded(R"({"Command":"reboot","Command":"jls"})").command, "jls");
  EXPECT_EQ(decoded(R"({"Command":"jls","CommandArgs":{"a":"1"},"CommandArgs":{"b":"2"}})").argv("cbsd"),
            (std::vector<std::string>{"cbsd", "jls", "b=2"}));
  EXPECT_EQ(decoded(R"({"Command":"jls","CommandArgs":{"a":"1"},"CommandArgs":null})").argv("cbsd"),
            (std::vector<std::string>{"cbsd", "jls"}));
  EXPECT_EQ(refusal(R"({"Command":"jls","CommandArgs":{"a":"1"},"CommandArgs":"a=1"})"),
            "\"CommandArgs\" must be an object");
  EXPECT_FALSE(decoded(R"({"Command":"jls","Timeout":5,"Timeout":0})").timeout);
}

TEST(Job, OnlyTheTopLevelsMembersCount) {
  // Command, CommandArgs and Timeout inside other members are not the job's.
  auto job = decoded(R"({"x":{"Command":"reboot","CommandArgs":{"a":1},"Timeout":-1},"Command":"jls",)"
                     R"("CommandArgs":{"m":1},"y":[{"CommandArgs":{"b":2}}],"z":[["Command"]]})");
  EXPECT_EQ(job.command, "jls");
  EXPECT_EQ(job.argv("cbsd"), (std::vector<std::string>{"cbsd", "jls", "m=1"}));
  EXPECT_FALSE(job.timeout);
  EXPECT_EQ(refusal(R"({"Command":"jls","CommandArgs":{"n":{"Command":"no"},"m":1}})"),
            "CommandArgs.n: objects are not allowed");
  EXPECT_EQ(decoded(R"({"Command":"jls","CommandArgs":{"m":1},"x":{"a":{"b":1}},"y":2})").argv("cbsd"),
            (std::vector<std::string>{"cbsd", "jls", "m=1"}));
}
