#include "bs_router/beanstalk_protocol.hpp"
#include "bs_router/beanstalk_error.hpp"

#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bs = bs_router::beanstalk;
using bs::parse_status;
using bs::response_kind;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

constexpr std::size_t test_max_body = bs::default_max_job_size;

bs::parse_result parse(std::string_view input, std::size_t max_body = test_max_body) {
  return bs::parse_response(input, max_body);
}

// Parses `input`, expects it to be exactly one complete response, returns it.
bs::response parse_whole(std::string_view input) {
  const auto result = parse(input);
  EXPECT_EQ(result.status, parse_status::complete) << result.error;
  EXPECT_EQ(result.consumed, input.size());
  return result.value;
}

void expect_bad(std::string_view input, std::size_t max_body = test_max_body) {
  const auto result = parse(input, max_body);
  EXPECT_EQ(result.status, parse_status::bad) << "input: " << testing::PrintToString(std::string{input});
  EXPECT_FALSE(result.error.empty());
  EXPECT_EQ(result.consumed, 0u);
}

void expect_need_more(std::string_view input) {
  const auto result = parse(input);
  EXPECT_EQ(result.status, parse_status::need_more)
      << "input: " << testing::PrintToString(std::string{input}) << " error: " << result.error;
  EXPECT_EQ(result.consumed, 0u);
}

// The bytes beanstalkd 1.12 sent for "stats" (body of "OK 955").
constexpr std::string_view real_stats_body =
    "---\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 0\ncurrent-jobs-reserved: 0\n"
    "current-jobs-delayed: 0\ncurrent-jobs-buried: 0\ncmd-put: 0\ncmd-peek: 0\n"
    "cmd-peek-ready: 0\ncmd-peek-delayed: 0\ncmd-peek-buried: 0\ncmd-reserve: 0\n"
    "cmd-reserve-with-timeout: 0\ncmd-delete: 0\ncmd-release: 0\ncmd-use: 0\ncmd-watch: 0\n"
    "cmd-ignore: 0\ncmd-bury: 0\ncmd-kick: 0\ncmd-touch: 0\ncmd-stats: 1\ncmd-stats-job: 0\n"
    "cmd-stats-tube: 0\ncmd-list-tubes: 0\ncmd-list-tube-used: 0\ncmd-list-tubes-watched: 0\n"
    "cmd-pause-tube: 0\njob-timeouts: 0\ntotal-jobs: 0\nmax-job-size: 65535\ncurrent-tubes: 1\n"
    "current-connections: 1\ncurrent-producers: 0\ncurrent-workers: 0\ncurrent-waiting: 0\n"
    "total-connections: 1\npid: 6013\nversion: \"1.12\"\nrusage-utime: 0.010546\n"
    "rusage-stime: 0.003515\nuptime: 0\nbinlog-oldest-index: 0\nbinlog-current-index: 0\n"
    "binlog-records-migrated: 0\nbinlog-records-written: 0\nbinlog-max-size: 10485760\n"
    "draining: false\nid: f00b150b7fd5f3c0\nhostname: vm\nos: #1 SMP PREEMPT_DYNAMIC @0\n"
    "platform: x86_64\n";

// The bytes beanstalkd 1.12 sent for "stats-job 1" (body of "OK 143").
constexpr std::string_view real_stats_job_body =
    "---\nid: 1\ntube: default\nstate: ready\npri: 1\nage: 0\ndelay: 0\nttr: 5\ntime-left: 0\n"
    "file: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n";

} // namespace

// ---- response words -------------------------------------------------------

TEST(ParseResponse, WordsWithoutFields) {
  const std::pair<std::string_view, response_kind> cases[] = {
      {"EXPECTED_CRLF\r\n", response_kind::expected_crlf},
      {"JOB_TOO_BIG\r\n", response_kind::job_too_big},
      {"DRAINING\r\n", response_kind::draining},
      {"NOT_IGNORED\r\n", response_kind::not_ignored},
      {"DEADLINE_SOON\r\n", response_kind::deadline_soon},
      {"TIMED_OUT\r\n", response_kind::timed_out},
      {"DELETED\r\n", response_kind::deleted},
      {"NOT_FOUND\r\n", response_kind::not_found},
      {"RELEASED\r\n", response_kind::released},
      {"TOUCHED\r\n", response_kind::touched},
      {"PAUSED\r\n", response_kind::paused},
      {"OUT_OF_MEMORY\r\n", response_kind::out_of_memory},
      {"INTERNAL_ERROR\r\n", response_kind::internal_error},
      {"BAD_FORMAT\r\n", response_kind::bad_format},
      {"UNKNOWN_COMMAND\r\n", response_kind::unknown_command},
  };
  for (const auto& [wire, kind] : cases) {
    SCOPED_TRACE(std::string{wire});
    const auto r = parse_whole(wire);
    EXPECT_EQ(r.kind, kind);
    EXPECT_EQ(r.value, 0u);
    EXPECT_TRUE(r.tube.empty());
    EXPECT_TRUE(r.body.empty());
  }
}

TEST(ParseResponse, WordsWithoutFieldsRefuseAField) {
  expect_bad("DELETED 1\r\n");
  expect_bad("NOT_FOUND x\r\n");
  expect_bad("TIMED_OUT 0\r\n");
}

TEST(ParseResponse, Inserted) {
  const auto r = parse_whole("INSERTED 42\r\n");
  EXPECT_EQ(r.kind, response_kind::inserted);
  EXPECT_EQ(r.value, 42u);
  expect_bad("INSERTED\r\n");
  expect_bad("INSERTED 1 2\r\n");
}

TEST(ParseResponse, BuriedWithAndWithoutId) {
  auto r = parse_whole("BURIED\r\n");
  EXPECT_EQ(r.kind, response_kind::buried);
  EXPECT_EQ(r.value, 0u);
  r = parse_whole("BURIED 7\r\n");
  EXPECT_EQ(r.kind, response_kind::buried);
  EXPECT_EQ(r.value, 7u);
  expect_bad("BURIED 7 8\r\n");
}

TEST(ParseResponse, KickedWithAndWithoutCount) {
  auto r = parse_whole("KICKED\r\n");
  EXPECT_EQ(r.kind, response_kind::kicked);
  EXPECT_EQ(r.value, 0u);
  r = parse_whole("KICKED 0\r\n");
  EXPECT_EQ(r.kind, response_kind::kicked);
  EXPECT_EQ(r.value, 0u);
  r = parse_whole("KICKED 12\r\n");
  EXPECT_EQ(r.value, 12u);
}

TEST(ParseResponse, Watching) {
  const auto r = parse_whole("WATCHING 2\r\n");
  EXPECT_EQ(r.kind, response_kind::watching);
  EXPECT_EQ(r.value, 2u);
  expect_bad("WATCHING\r\n");
}

TEST(ParseResponse, UsingCarriesTube) {
  const auto r = parse_whole("USING cbsd_pool1_result_id17\r\n");
  EXPECT_EQ(r.kind, response_kind::using_tube);
  EXPECT_EQ(r.tube, "cbsd_pool1_result_id17");
  EXPECT_EQ(r.value, 0u);
  const std::string longest(bs::max_tube_name, 'a');
  EXPECT_EQ(parse_whole("USING " + longest + "\r\n").tube, longest);
  expect_bad("USING\r\n");
  expect_bad("USING a b\r\n");
  expect_bad("USING -a\r\n");
  expect_bad("USING a*b\r\n");
  expect_bad("USING " + longest + "a\r\n");
}

TEST(ParseResponse, Reserved) {
  const auto r = parse_whole("RESERVED 5 3\r\nabc\r\n");
  EXPECT_EQ(r.kind, response_kind::reserved);
  EXPECT_EQ(r.value, 5u);
  EXPECT_EQ(r.body, "abc");
}

TEST(ParseResponse, Found) {
  const auto r = parse_whole("FOUND 9 2\r\nhi\r\n");
  EXPECT_EQ(r.kind, response_kind::found);
  EXPECT_EQ(r.value, 9u);
  EXPECT_EQ(r.body, "hi");
}

TEST(ParseResponse, OkCarriesBody) {
  const auto r = parse_whole("OK 20\r\n---\n- default\n- foo\n\r\n");
  EXPECT_EQ(r.kind, response_kind::ok);
  EXPECT_EQ(r.value, 0u);
  EXPECT_EQ(r.body, "---\n- default\n- foo\n");
}

TEST(ParseResponse, EmptyBody) {
  const auto r = parse_whole("RESERVED 1 0\r\n\r\n");
  EXPECT_EQ(r.kind, response_kind::reserved);
  EXPECT_EQ(r.body, "");
}

TEST(ParseResponse, BodyWithCrlfInside) {
  const std::string body = "a\r\nb\r\n\r\nRESERVED 2 1\r\nx\r\n";
  const auto wire = "RESERVED 1 " + std::to_string(body.size()) + "\r\n" + body + "\r\n";
  const auto r = parse_whole(wire);
  EXPECT_EQ(r.value, 1u);
  EXPECT_EQ(r.body, body);
}

TEST(ParseResponse, BodyWithBinaryBytes) {
  const std::string body("\0\xff\n\r"s);
  const auto wire = "FOUND 3 4\r\n" + body + "\r\n";
  EXPECT_EQ(parse_whole(wire).body, body);
}

TEST(ParseResponse, BodyCountsWithoutTrailingCrlf) {
  // beanstalkd's stats body ends in "\n", then the response's own CRLF.
  const auto wire = "OK " + std::to_string(real_stats_body.size()) + "\r\n" + std::string{real_stats_body} + "\r\n";
  ASSERT_EQ(real_stats_body.size(), 955u);
  EXPECT_EQ(parse_whole(wire).body, real_stats_body);
}

TEST(ParseResponse, ResponseWordOfEachKind) {
  EXPECT_EQ(bs::response_word(response_kind::inserted), "INSERTED");
  EXPECT_EQ(bs::response_word(response_kind::using_tube), "USING");
  EXPECT_EQ(bs::response_word(response_kind::not_found), "NOT_FOUND");
  EXPECT_EQ(bs::response_word(response_kind::unknown_command), "UNKNOWN_COMMAND");
}

// ---- incomplete input -----------------------------------------------------

TEST(ParseResponse, EveryPrefixOfReservedNeedsMore) {
  const std::string wire = "RESERVED 123 7\r\nab\r\ncd\n\r\n";
  for (std::size_t split = 0; split < wire.size(); ++split) {
    SCOPED_TRACE(split);
    expect_need_more(std::string_view{wire}.substr(0, split));
  }
  const auto r = parse_whole(wire);
  EXPECT_EQ(r.value, 123u);
  EXPECT_EQ(r.body, "ab\r\ncd\n");
}

TEST(ParseResponse, EveryPrefixOfShortResponsesNeedsMore) {
  for (std::string_view wire : {"INSERTED 1\r\n"sv, "BURIED\r\n"sv, "USING foo\r\n"sv, "OK 1\r\nx\r\n"sv}) {
    for (std::size_t split = 0; split < wire.size(); ++split) {
      SCOPED_TRACE(std::string{wire.substr(0, split)});
      expect_need_more(wire.substr(0, split));
    }
  }
}

TEST(ParseResponse, NeedMoreTellsTheSizeOnceTheLineIsKnown) {
  const std::string wire = "RESERVED 1 10\r\n0123456789\r\n";
  EXPECT_EQ(parse(wire.substr(0, 10)).expected_size, 0u); // line incomplete
  for (std::size_t split = 15; split < wire.size(); ++split) {
    SCOPED_TRACE(split);
    const auto result = parse(std::string_view{wire}.substr(0, split));
    ASSERT_EQ(result.status, parse_status::need_more);
    EXPECT_EQ(result.expected_size, wire.size());
  }
}

// ---- framing --------------------------------------------------------------

TEST(ParseResponse, TwoResponsesBackToBack) {
  const std::string first = "RESERVED 8 5\r\nhe\r\nl\r\n";
  const std::string second = "INSERTED 9\r\n";
  const auto input = first + second;
  const auto a = parse(input);
  ASSERT_EQ(a.status, parse_status::complete) << a.error;
  EXPECT_EQ(a.consumed, first.size());
  EXPECT_EQ(a.value.body, "he\r\nl");
  const auto b = parse(std::string_view{input}.substr(a.consumed));
  ASSERT_EQ(b.status, parse_status::complete) << b.error;
  EXPECT_EQ(b.consumed, second.size());
  EXPECT_EQ(b.value.kind, response_kind::inserted);
  EXPECT_EQ(b.value.value, 9u);
}

TEST(ParseResponse, ShortResponseFollowedByPartialOne) {
  const auto result = parse("DELETED\r\nRESERV");
  ASSERT_EQ(result.status, parse_status::complete);
  EXPECT_EQ(result.consumed, 9u);
}

TEST(ParseResponse, WrongBytesAfterBody) {
  expect_bad("RESERVED 1 3\r\nabcd\r\n");
  expect_bad("RESERVED 1 3\r\nabc\n\r");
  expect_bad("RESERVED 1 3\r\nabc\r\r");
  expect_bad("RESERVED 1 3\r\nabcXY");
  expect_bad("OK 0\r\nXX");
  // Refused as soon as the first wrong byte arrives, not when all have.
  expect_bad("RESERVED 1 3\r\nabcX");
  expect_bad("RESERVED 1 3\r\nabc\rX");
}

TEST(ParseResponse, LineEndings) {
  expect_bad("INSERTED 1\n");
  expect_bad("\n");
  expect_bad("INSERTED 1\r\r\n");
  expect_bad("\r\n");
  expect_bad("DELE\rTED\r\n");
}

TEST(ParseResponse, OverlongLine) {
  // 224 bytes, CRLF included, is the longest line; without CRLF by then: bad.
  const std::string no_crlf(bs::max_response_line, 'A');
  expect_bad(no_crlf);
  expect_need_more(std::string_view{no_crlf}.substr(0, bs::max_response_line - 1));
  const std::string longest_line = "USING " + std::string(bs::max_response_line - 8, 'a') + "\r\n";
  ASSERT_EQ(longest_line.size(), bs::max_response_line);
  expect_bad(longest_line); // the tube name is too long, but the line is framed
  EXPECT_NE(parse(longest_line).error.find("tube"), std::string::npos);
  const std::string one_too_long = "USING " + std::string(bs::max_response_line - 7, 'a') + "\r\n";
  EXPECT_NE(parse(one_too_long).error.find("CRLF"), std::string::npos);
}

TEST(ParseResponse, SpacingIsExact) {
  expect_bad("INSERTED  1\r\n");
  expect_bad("INSERTED 1 \r\n");
  expect_bad(" INSERTED 1\r\n");
  expect_bad("BURIED \r\n");
  expect_bad("KICKED \r\n");
  expect_bad("RESERVED 1  3\r\nabc\r\n");
  expect_bad("INSERTED\t1\r\n");
}

TEST(ParseResponse, UnknownWords) {
  expect_bad("HELLO\r\n");
  expect_bad("inserted 1\r\n");
  expect_bad("INSERTEDX 1\r\n");
  expect_bad("OK\r\n");
  expect_bad("RESERVED 1\r\n");
  expect_bad("RESERVED\r\n");
}

// ---- numbers --------------------------------------------------------------

TEST(ParseResponse, BadNumbers) {
  for (std::string_view number : {"-1"sv, "+1"sv, "1a"sv, "a1"sv, "0x10"sv, "01"sv, "00"sv, "1.0"sv, "1e3"sv, "\xd9\xa1"sv}) {
    SCOPED_TRACE(std::string{number});
    expect_bad("INSERTED " + std::string{number} + "\r\n");
    expect_bad("RESERVED " + std::string{number} + " 1\r\nx\r\n");
    expect_bad("RESERVED 1 " + std::string{number} + "\r\nx\r\n");
  }
}

TEST(ParseResponse, JobIdsFillUint64) {
  EXPECT_EQ(parse_whole("INSERTED 0\r\n").value, 0u);
  EXPECT_EQ(parse_whole("INSERTED 18446744073709551615\r\n").value, 18446744073709551615u);
  expect_bad("INSERTED 18446744073709551616\r\n");
  expect_bad("INSERTED 99999999999999999999\r\n");
  expect_bad("INSERTED 100000000000000000000\r\n");
  EXPECT_EQ(parse_whole("FOUND 18446744073709551615 1\r\nx\r\n").value, 18446744073709551615u);
}

TEST(ParseResponse, BodyLimit) {
  EXPECT_EQ(parse("OK 4\r\nabcd\r\n", 4).status, parse_status::complete);
  expect_bad("OK 5\r\nabcde\r\n", 4);
  // Refused from the line alone, before any of the body arrives.
  expect_bad("RESERVED 1 5\r\n", 4);
  expect_bad("RESERVED 1 18446744073709551615\r\n", 1000);
  expect_bad("OK 18446744073709551616\r\n", static_cast<std::size_t>(-1));
  EXPECT_EQ(parse("OK 0\r\n\r\n", 0).status, parse_status::complete);
}

TEST(ParseResponse, HugeAllowedBodyDoesNotOverflow) {
  const auto result = parse("OK 18446744073709551615\r\nab", static_cast<std::size_t>(-1));
  EXPECT_EQ(result.status, parse_status::need_more);
  EXPECT_EQ(result.expected_size, static_cast<std::size_t>(-1));
}

TEST(ParseResponse, ErrorMessagesAreEscaped) {
  const auto result = parse("BOGUS\x01\x7f\r\n");
  ASSERT_EQ(result.status, parse_status::bad);
  EXPECT_NE(result.error.find("BOGUS\\x01\\x7f"), std::string::npos) << result.error;
}

// ---- tube names -----------------------------------------------------------

TEST(TubeName, Lengths) {
  EXPECT_FALSE(bs::valid_tube_name(""));
  EXPECT_TRUE(bs::valid_tube_name("a"));
  EXPECT_TRUE(bs::valid_tube_name(std::string(200, 'x')));
  EXPECT_FALSE(bs::valid_tube_name(std::string(201, 'x')));
}

TEST(TubeName, Characters) {
  EXPECT_TRUE(bs::valid_tube_name("cbsd_pool1_result_id42"));
  EXPECT_TRUE(bs::valid_tube_name("AZaz09-+/;.$_()"));
  EXPECT_TRUE(bs::valid_tube_name("a-"));
  EXPECT_TRUE(bs::valid_tube_name("+"));
  EXPECT_FALSE(bs::valid_tube_name("-a"));
  EXPECT_FALSE(bs::valid_tube_name("-"));
  for (std::string_view bad : {"a b"sv, "a\r\nb"sv, "a*b"sv, "a:b"sv, "a,b"sv, "a\"b"sv, "a'b"sv, "a\\b"sv,
                               "caf\xc3\xa9"sv, "a\0b"sv, "a\tb"sv, "a#b"sv, "a@b"sv, "a[b]"sv}) {
    SCOPED_TRACE(testing::PrintToString(std::string{bad}));
    EXPECT_FALSE(bs::valid_tube_name(bad));
  }
}

// ---- encoders -------------------------------------------------------------

TEST(Encode, Put) {
  EXPECT_EQ(bs::encode_put(1, 0, 5, "abc"), "put 1 0 5 3\r\nabc\r\n");
  EXPECT_EQ(bs::encode_put(0, 0, 0, ""), "put 0 0 0 0\r\n\r\n");
  EXPECT_EQ(bs::encode_put(4294967295u, 10, 120, "a\r\nb"), "put 4294967295 10 120 4\r\na\r\nb\r\n");
}

TEST(Encode, TubeCommands) {
  EXPECT_EQ(bs::encode_use("cbsd_pool1"), "use cbsd_pool1\r\n");
  EXPECT_EQ(bs::encode_watch("cbsd_pool1"), "watch cbsd_pool1\r\n");
  EXPECT_EQ(bs::encode_ignore("default"), "ignore default\r\n");
  EXPECT_EQ(bs::encode_stats_tube("foo"), "stats-tube foo\r\n");
}

TEST(Encode, TubeCommandsRefuseBadNames) {
  for (std::string_view bad : {""sv, "-x"sv, "a b"sv, "x\r\nput 1 0 1 1"sv}) {
    SCOPED_TRACE(std::string{bad});
    EXPECT_THROW(bs::encode_use(bad), std::invalid_argument);
    EXPECT_THROW(bs::encode_watch(bad), std::invalid_argument);
    EXPECT_THROW(bs::encode_ignore(bad), std::invalid_argument);
    EXPECT_THROW(bs::encode_stats_tube(bad), std::invalid_argument);
  }
  EXPECT_THROW(bs::encode_use(std::string(201, 'a')), std::invalid_argument);
  EXPECT_NO_THROW(bs::encode_use(std::string(200, 'a')));
}

TEST(Encode, Worker) {
  EXPECT_EQ(bs::encode_reserve(), "reserve\r\n");
  EXPECT_EQ(bs::encode_reserve_with_timeout(5), "reserve-with-timeout 5\r\n");
  EXPECT_EQ(bs::encode_reserve_with_timeout(0), "reserve-with-timeout 0\r\n");
  EXPECT_EQ(bs::encode_delete(42), "delete 42\r\n");
  EXPECT_EQ(bs::encode_release(42, 1024, 3), "release 42 1024 3\r\n");
  EXPECT_EQ(bs::encode_bury(42, 7), "bury 42 7\r\n");
  EXPECT_EQ(bs::encode_touch(42), "touch 42\r\n");
  EXPECT_EQ(bs::encode_delete(18446744073709551615u), "delete 18446744073709551615\r\n");
}

TEST(Encode, Inspection) {
  EXPECT_EQ(bs::encode_kick_job(3), "kick-job 3\r\n");
  EXPECT_EQ(bs::encode_reserve_job(3), "reserve-job 3\r\n");
  EXPECT_EQ(bs::encode_peek(3), "peek 3\r\n");
  EXPECT_EQ(bs::encode_peek_ready(), "peek-ready\r\n");
  EXPECT_EQ(bs::encode_stats(), "stats\r\n");
  EXPECT_EQ(bs::encode_stats_job(7), "stats-job 7\r\n");
  EXPECT_EQ(bs::encode_list_tubes_watched(), "list-tubes-watched\r\n");
  EXPECT_EQ(bs::encode_quit(), "quit\r\n");
}

// ---- YAML -----------------------------------------------------------------

TEST(Yaml, RealStats) {
  const auto stats = bs::parse_yaml_map(real_stats_body);
  EXPECT_EQ(stats.size(), 51u);
  EXPECT_EQ(stats.at("current-jobs-urgent"), "0");
  EXPECT_EQ(stats.at("max-job-size"), "65535");
  EXPECT_EQ(stats.at("pid"), "6013");
  EXPECT_EQ(stats.at("version"), "1.12"); // quoted on the wire
  EXPECT_EQ(stats.at("rusage-utime"), "0.010546");
  EXPECT_EQ(stats.at("draining"), "false");
  EXPECT_EQ(stats.at("id"), "f00b150b7fd5f3c0");
  EXPECT_EQ(stats.at("hostname"), "vm");
  EXPECT_EQ(stats.at("os"), "#1 SMP PREEMPT_DYNAMIC @0"); // not a YAML comment here
  EXPECT_EQ(stats.at("platform"), "x86_64");
  EXPECT_EQ(stats.count("---"), 0u);
}

TEST(Yaml, RealStatsJob) {
  const auto stats = bs::parse_yaml_map(real_stats_job_body);
  EXPECT_EQ(stats.size(), 14u);
  EXPECT_EQ(stats.at("id"), "1");
  EXPECT_EQ(stats.at("tube"), "default");
  EXPECT_EQ(stats.at("state"), "ready");
  EXPECT_EQ(stats.at("ttr"), "5");
  EXPECT_EQ(stats.at("time-left"), "0");
}

TEST(Yaml, MapQuotesAndOddLines) {
  const auto map = bs::parse_yaml_map("---\r\nhostname: \"my host\"\r\nname: 'x'\nempty:\n"
                                      "colon: a: b\nnot a pair\n- item\nlone: \"\nlast: 1");
  EXPECT_EQ(map.at("hostname"), "my host");
  EXPECT_EQ(map.at("name"), "x");
  EXPECT_EQ(map.at("empty"), "");
  EXPECT_EQ(map.at("colon"), "a: b");
  EXPECT_EQ(map.at("lone"), "\"");
  EXPECT_EQ(map.at("last"), "1");
  EXPECT_EQ(map.size(), 6u);
  EXPECT_TRUE(bs::parse_yaml_map("").empty());
  EXPECT_TRUE(bs::parse_yaml_map("---\n").empty());
}

TEST(Yaml, List) {
  const auto tubes = bs::parse_yaml_list("---\n- default\n- foo\n");
  ASSERT_EQ(tubes.size(), 2u);
  EXPECT_EQ(tubes[0], "default");
  EXPECT_EQ(tubes[1], "foo");
  EXPECT_TRUE(bs::parse_yaml_list("---\n").empty());
  EXPECT_TRUE(bs::parse_yaml_list("").empty());
  const auto odd = bs::parse_yaml_list("---\r\n- a\r\nkey: v\n-b\n- \"q\"\n- c");
  EXPECT_EQ(odd, (std::vector<std::string>{"a", "q", "c"}));
}

TEST(Yaml, ListFromRealResponse) {
  const auto r = parse_whole("OK 20\r\n---\n- default\n- foo\n\r\n");
  EXPECT_EQ(bs::parse_yaml_list(r.body), (std::vector<std::string>{"default", "foo"}));
}

// ---- error codes ----------------------------------------------------------

TEST(BeanstalkError, Category) {
  EXPECT_STREQ(bs::error_category().name(), "beanstalk");
  const boost::system::error_code ec = bs::errc::not_found; // via is_error_code_enum
  EXPECT_EQ(&ec.category(), &bs::error_category());
  EXPECT_EQ(ec, bs::make_error_code(bs::errc::not_found));
  EXPECT_TRUE(static_cast<bool>(ec));
}

TEST(BeanstalkError, EveryCodeHasItsOwnMessage) {
  std::set<std::string> messages;
  for (int value = static_cast<int>(bs::errc::out_of_memory); value <= static_cast<int>(bs::errc::bad_tube_name);
       ++value) {
    const auto message = bs::make_error_code(static_cast<bs::errc>(value)).message();
    EXPECT_FALSE(message.empty());
    EXPECT_EQ(message.find("unknown"), std::string::npos) << value;
    EXPECT_TRUE(messages.insert(message).second) << "duplicate message: " << message;
  }
  EXPECT_EQ(messages.size(), 15u);
  EXPECT_NE(bs::make_error_code(bs::errc::job_too_big).message().find("JOB_TOO_BIG"), std::string::npos);
  EXPECT_NE(bs::make_error_code(bs::errc::timed_out).message().find("in time"), std::string::npos);
  EXPECT_NE(bs::error_category().message(999).find("999"), std::string::npos);
}

TEST(BeanstalkError, ServerErrorWords) {
  const std::pair<response_kind, bs::errc> errors[] = {
      {response_kind::out_of_memory, bs::errc::out_of_memory},
      {response_kind::internal_error, bs::errc::internal_error},
      {response_kind::bad_format, bs::errc::bad_format},
      {response_kind::unknown_command, bs::errc::unknown_command},
      {response_kind::expected_crlf, bs::errc::expected_crlf},
      {response_kind::job_too_big, bs::errc::job_too_big},
      {response_kind::draining, bs::errc::draining},
      {response_kind::not_found, bs::errc::not_found},
      {response_kind::not_ignored, bs::errc::not_ignored},
      {response_kind::buried, bs::errc::buried},
  };
  for (const auto& [kind, code] : errors) {
    SCOPED_TRACE(std::string{bs::response_word(kind)});
    EXPECT_EQ(bs::to_error(kind), bs::make_error_code(code));
  }
}

TEST(BeanstalkError, SuccessWords) {
  for (auto kind : {response_kind::inserted, response_kind::using_tube, response_kind::watching,
                    response_kind::reserved, response_kind::deadline_soon, response_kind::timed_out,
                    response_kind::deleted, response_kind::released, response_kind::touched, response_kind::kicked,
                    response_kind::found, response_kind::ok, response_kind::paused}) {
    SCOPED_TRACE(std::string{bs::response_word(kind)});
    EXPECT_FALSE(bs::to_error(kind));
  }
}
