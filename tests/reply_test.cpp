#include "bs_router/reply.hpp"

#include <algorithm>
#include <limits>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace bs_router;
using json = nlohmann::json;

namespace {

constexpr std::size_t beanstalkd_default_max_job_size = 65535;

// Parses the reply, failing the test when it is not JSON. nlohmann refuses
// invalid UTF-8 while parsing, so this also checks the encoding.
json parsed(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    ADD_FAILURE() << "not JSON: " << e.what();
    return json::object();
  }
}

// Whether text is a beginning of original that ends on a character boundary.
bool is_prefix_on_boundary(const std::string& text, const std::string& original) {
  if (original.compare(0, text.size(), text) != 0) return false;
  return text.size() == original.size() || (static_cast<unsigned char>(original[text.size()]) & 0xC0) != 0x80;
}

} // namespace

TEST(Reply, EncodesEveryFieldOfASmallReply) {
  reply r;
  r.job_id = "42";
  r.err_code = 0;
  r.message = "jail1 created\n";
  r.guid = "1234567890";
  r.dsk_guid = "987";
  r.vnc = "127.0.0.1:5900";
  r.stderr_text = "warning: x\n";
  r.duration_seconds = 1.5;
  auto text = encode_reply(r, beanstalkd_default_max_job_size);
  EXPECT_EQ(text, R"({"ErrCode":0,"Message":"jail1 created\n","Progress":100,"Guid":"1234567890","DskGuid":"987",)"
                  R"("Vnc":"127.0.0.1:5900","JobID":42,"Stderr":"warning: x\n","Duration":1.5})");
  auto j = parsed(text);
  EXPECT_EQ(j["Message"], "jail1 created\n");
  EXPECT_FALSE(j.contains("Truncated"));
}

TEST(Reply, DefaultsGiveTheCompatValues) {
  auto j = parsed(encode_reply(reply{}, 0));
  EXPECT_EQ(j["ErrCode"], 0);
  EXPECT_EQ(j["Message"], "");
  EXPECT_EQ(j["Progress"], 100);
  EXPECT_EQ(j["Guid"], "0");
  EXPECT_EQ(j["DskGuid"], "0");
  EXPECT_EQ(j["Vnc"], "");
  EXPECT_EQ(j["JobID"], 0);
  EXPECT_EQ(j["Stderr"], "");
  EXPECT_FALSE(j.contains("Duration")); // negative: omitted
  EXPECT_FALSE(j.contains("Truncated"));
}

TEST(Reply, NumbersKeepTheirFullRange) {
  reply r;
  r.job_id = "18446744073709551615";
  r.err_code = router_errcode::bad_input;
  r.progress = 37;
  r.duration_seconds = 0;
  auto j = parsed(encode_reply(r, 0));
  EXPECT_EQ(j["JobID"].get<std::uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(j["ErrCode"], 1000);
  EXPECT_EQ(j["Progress"], 37);
  EXPECT_EQ(j["Duration"], 0);
  r.err_code = -9223372036854775807LL - 1;
  EXPECT_EQ(parsed(encode_reply(r, 0))["ErrCode"].get<long long>(), r.err_code);
}

TEST(Reply, NonFiniteDurationIsOmitted) {
  reply r;
  r.duration_seconds = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(parsed(encode_reply(r, 0)).contains("Duration"));
  r.duration_seconds = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(parsed(encode_reply(r, 0)).contains("Duration"));
}

TEST(Reply, EscapesQuotesBackslashesAndControlCharacters) {
  reply r;
  r.message = std::string("q\"b\\n\nt\tc\x01z\x7f", 13) + std::string(1, '\0');
  auto text = encode_reply(r, 0);
  EXPECT_NE(text.find(R"("Message":"q\"b\\n\nt\tc\u0001z)"), std::string::npos) << text;
  EXPECT_EQ(parsed(text)["Message"], r.message);
}

TEST(Reply, ReplacesInvalidUtf8) {
  reply r;
  r.message = "ok \xC3\xA9 bad \xFF\xFE end \xE2\x82 cut \xED\xA0\x80 surrogate \xC0\xAF overlong \xF0\x9F\x98\x80";
  r.stderr_text = "\x80";
  r.guid = "\xC3";
  auto j = parsed(encode_reply(r, 0));
  EXPECT_EQ(j["Message"], "ok \xC3\xA9 bad \xEF\xBF\xBD\xEF\xBF\xBD end \xEF\xBF\xBD cut \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                          " surrogate \xEF\xBF\xBD\xEF\xBF\xBD overlong \xF0\x9F\x98\x80");
  EXPECT_EQ(j["Stderr"], "\xEF\xBF\xBD");
  EXPECT_EQ(j["Guid"], "\xEF\xBF\xBD");
}

TEST(Reply, BigOutputIsCutToTheLimit) {
  reply r;
  r.job_id = "7";
  r.err_code = 0;
  r.message = std::string(300 * 1024, 'm');
  r.stderr_text = std::string(300 * 1024, 's');
  auto text = encode_reply(r, beanstalkd_default_max_job_size);
  EXPECT_LE(text.size(), beanstalkd_default_max_job_size);
  EXPECT_GT(text.size(), beanstalkd_default_max_job_size - 16); // the room is used, not wasted
  auto j = parsed(text);
  EXPECT_EQ(j["Truncated"], true);
  EXPECT_EQ(j["MessageBytes"], 300 * 1024);
  EXPECT_EQ(j["StderrBytes"], 300 * 1024);
  auto message = j["Message"].get<std::string>();
  auto stderr_text = j["Stderr"].get<std::string>();
  EXPECT_TRUE(is_prefix_on_boundary(message, r.message));
  EXPECT_TRUE(is_prefix_on_boundary(stderr_text, r.stderr_text));
  // Message has priority; Stderr keeps about a quarter.
  EXPECT_GT(message.size(), 45000u);
  EXPECT_GT(stderr_text.size(), 15000u);
  EXPECT_LT(stderr_text.size(), 17000u);
}

TEST(Reply, StderrGetsWhatMessageLeaves) {
  reply r;
  r.message = "short";
  r.stderr_text = std::string(300 * 1024, 's');
  auto j = parsed(encode_reply(r, 4096));
  EXPECT_EQ(j["Message"], "short");
  EXPECT_GT(j["Stderr"].get<std::string>().size(), 3600u);
  EXPECT_EQ(j["Truncated"], true);
}

TEST(Reply, MessageTakesWhatStderrDoesNotNeed) {
  reply r;
  r.message = std::string(300 * 1024, 'm');
  r.stderr_text = "one warning\n";
  auto j = parsed(encode_reply(r, 4096));
  EXPECT_EQ(j["Stderr"], "one warning\n");
  EXPECT_GT(j["Message"].get<std::string>().size(), 3600u);
}

TEST(Reply, ControlCharactersAndInvalidUtf8StayWithinTheLimit) {
  std::string hostile;
  for (int i = 0; i < 64 * 1024; ++i) hostile.push_back(static_cast<char>(i % 32)); // \u00XX: 6 bytes each
  std::string invalid;
  for (int i = 0; i < 64 * 1024; ++i) invalid.push_back(static_cast<char>(0x80 + i % 128)); // 3 bytes each
  reply r;
  r.message = hostile + invalid;
  r.stderr_text = invalid + hostile;
  for (std::size_t limit : {std::size_t{0}, std::size_t{1024}, std::size_t{1500}, std::size_t{4096}, std::size_t{65535},
                            std::size_t{65536}, std::size_t{1} << 20}) {
    auto text = encode_reply(r, limit);
    EXPECT_LE(text.size(), std::max<std::size_t>(limit, 1024)) << limit;
    auto j = parsed(text);
    EXPECT_EQ(j["Truncated"], true) << limit;
    EXPECT_EQ(j["MessageBytes"], r.message.size());
    EXPECT_EQ(j["StderrBytes"], r.stderr_text.size());
    // The control characters come first and survive intact.
    auto message = j["Message"].get<std::string>();
    auto common = std::min(message.size(), hostile.size());
    EXPECT_EQ(message.substr(0, common), hostile.substr(0, common)) << limit;
  }
}

TEST(Reply, CutsFallOnCharacterBoundaries) {
  reply r;
  r.message = "";
  for (int i = 0; i < 2000; ++i) r.message += "\xE2\x82\xAC\xF0\x9F\x98\x80"; // 3- and 4-byte characters
  for (std::size_t limit = 1024; limit < 1100; ++limit) {
    auto text = encode_reply(r, limit);
    EXPECT_LE(text.size(), limit);
    auto j = parsed(text);
    EXPECT_TRUE(is_prefix_on_boundary(j["Message"].get<std::string>(), r.message)) << limit;
  }
}

TEST(Reply, LimitsBelow1024AreRaisedTo1024) {
  reply r;
  r.message = std::string(5000, 'x');
  auto text = encode_reply(r, 10);
  EXPECT_LE(text.size(), 1024u);
  EXPECT_GT(text.size(), 1000u);
  EXPECT_EQ(parsed(text)["Truncated"], true);
}

TEST(Reply, HugeShortFieldsAreCutToo) {
  reply r;
  r.guid = std::string(100000, '\x01');
  r.dsk_guid = std::string(100000, '"');
  r.vnc = std::string(100000, 'v');
  r.message = "done";
  r.duration_seconds = 123456.789;
  r.job_id = "18446744073709551615";
  r.err_code = -9223372036854775807LL - 1;
  auto text = encode_reply(r, 1024);
  EXPECT_LE(text.size(), 1024u);
  auto j = parsed(text);
  EXPECT_EQ(j["Message"], "done");
  EXPECT_EQ(j["Truncated"], true);
  EXPECT_FALSE(j["Guid"].get<std::string>().empty());
}

TEST(Reply, AnOutputCutByTheCallerIsMarkedTruncated) {
  reply r;
  r.message = "the first part";
  r.message_bytes = 5000000;
  auto j = parsed(encode_reply(r, 65535));
  EXPECT_EQ(j["Message"], "the first part");
  EXPECT_EQ(j["Truncated"], true);
  EXPECT_EQ(j["MessageBytes"], 5000000);
  EXPECT_EQ(j["StderrBytes"], 0);
}

TEST(Reply, ExactFitIsNotCut) {
  reply r;
  r.message = "";
  auto empty_size = encode_reply(r, 0).size();
  r.message = std::string(2000 - empty_size, 'x');
  auto text = encode_reply(r, 2000);
  EXPECT_EQ(text.size(), 2000u);
  EXPECT_FALSE(parsed(text).contains("Truncated"));
  r.message += 'x';
  text = encode_reply(r, 2000);
  EXPECT_LE(text.size(), 2000u);
  EXPECT_EQ(parsed(text)["Truncated"], true);
}

// (How fast such inputs are cut is the benchmark's to show, not a test's.)
TEST(Reply, MegabyteInputsAreCutToTheLimit) {
  reply r;
  r.message = std::string(1 << 20, '\x01');
  r.stderr_text = std::string(1 << 20, '\xFF');
  auto text = encode_reply(r, 65535);
  EXPECT_LE(text.size(), 65535u);
  EXPECT_TRUE(nlohmann::json::accept(text));
}

namespace {

// Room for the binlog: beanstalkd 1.12 replays no job longer than
// max-job-size - 2, and our own bound holds whatever the broker claims.
TEST(ReplyLimit, LeavesTheBinlogItsTwoBytesAndHoldsOurOwnBound) {
  EXPECT_EQ(reply_limit("65535", 1048576), 65533u);
  EXPECT_EQ(reply_limit("4096", 1048576), 4094u);
  EXPECT_EQ(reply_limit("1073741824", 1048576), 1048576u);
  EXPECT_EQ(reply_limit("18446744073709551615", 1048576), 1048576u);
  EXPECT_EQ(reply_limit("99999999999999999999999", 1048576), 1048576u);
  // Not a number: beanstalkd's default.
  for (const char* claim : {"-1", "", "12abc", " 100", "1e9"}) EXPECT_EQ(reply_limit(claim, 1048576), 65533u) << claim;
  EXPECT_EQ(reply_limit("1", 1048576), 0u);
}

TEST(ReplyLimit, FittingPrefixCountsEscapesAndStopsOnCharacters) {
  EXPECT_EQ(fitting_prefix("abc", 10), 3u);
  EXPECT_EQ(fitting_prefix("abc", 2), 2u);
  EXPECT_EQ(fitting_prefix("a\nb", 2), 1u);          // "\n" takes two bytes
  EXPECT_EQ(fitting_prefix("a\x01", 6), 1u);         // \u0001 takes six
  EXPECT_EQ(fitting_prefix("a\x01", 7), 2u);
  EXPECT_EQ(fitting_prefix("\xC3\xA9x", 1), 0u);     // never half a character
  EXPECT_EQ(fitting_prefix("\xC3\xA9x", 2), 2u);
  EXPECT_EQ(fitting_prefix("\xFFx", 3), 1u);         // invalid: one U+FFFD, one byte of input
  EXPECT_EQ(fitting_prefix("ab\xE2\x9C", 100), 2u);   // cut short by the end: its rest may come
  EXPECT_EQ(fitting_prefix("ab\xE2\x9Cx", 100), 5u);  // not at the end: invalid, replaced, taken
  EXPECT_EQ(fitting_prefix("ab\xFF", 100), 3u);       // never a character: taken (as U+FFFD)
  // What the prefix says fits does fit.
  const std::string text(5000, '\x02');
  reply r;
  r.message = text.substr(0, fitting_prefix(text, 2000));
  EXPECT_EQ(parsed(encode_reply(r, 4096))["Message"].get<std::string>(), r.message);
}

} // namespace

// A JobID that is not a beanstalkd id (an AMQP message id) is a JSON string,
// and so is one marked numeric that is not digits.
TEST(Reply, JobIdIsAStringUnlessItIsANumber) {
  bs_router::reply r;
  r.job_id = "a.b:c-1";
  r.numeric_id = false;
  EXPECT_EQ(nlohmann::json::parse(bs_router::encode_reply(r, 4096)).at("JobID"), "a.b:c-1");
  r.job_id = "12";
  EXPECT_EQ(nlohmann::json::parse(bs_router::encode_reply(r, 4096)).at("JobID"), "12");
  r.numeric_id = true;
  EXPECT_EQ(nlohmann::json::parse(bs_router::encode_reply(r, 4096)).at("JobID"), 12);
  r.job_id = "1\"2";
  EXPECT_EQ(nlohmann::json::parse(bs_router::encode_reply(r, 4096)).at("JobID"), "1\"2");
}
