#pragma once
// Pure encode/parse functions for the beanstalkd text protocol (protocol.txt of
// beanstalkd 1.12). No I/O here: the Asio connection sits on top.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace bs_router::beanstalk {

// Limits of the protocol and of this client.
inline constexpr std::size_t max_tube_name = 200;   // bytes, as beanstalkd
inline constexpr std::size_t max_response_line = 224; // beanstalkd's LINE_BUF_SIZE, CRLF included
inline constexpr std::uint32_t default_max_job_size = 65535; // beanstalkd -z default

// A tube name: 1..200 bytes of [A-Za-z0-9-+/;.$_()], not starting with '-'.
bool valid_tube_name(std::string_view name);

// Encoders return the full command, CRLF included. Those that take a tube
// throw std::invalid_argument for a name valid_tube_name() refuses.
std::string encode_put(std::uint32_t priority, std::uint32_t delay, std::uint32_t ttr, std::string_view body);
std::string encode_use(std::string_view tube);
std::string encode_watch(std::string_view tube);
std::string encode_ignore(std::string_view tube);
std::string encode_reserve();
std::string encode_reserve_with_timeout(std::uint32_t seconds);
std::string encode_reserve_job(std::uint64_t id); // beanstalkd 1.12 and later
std::string encode_delete(std::uint64_t id);
std::string encode_release(std::uint64_t id, std::uint32_t priority, std::uint32_t delay);
std::string encode_bury(std::uint64_t id, std::uint32_t priority);
std::string encode_touch(std::uint64_t id);
std::string encode_kick_job(std::uint64_t id);
std::string encode_peek(std::uint64_t id);
std::string encode_peek_ready();
std::string encode_stats();
std::string encode_stats_job(std::uint64_t id);
std::string encode_stats_tube(std::string_view tube);
std::string encode_list_tubes_watched();
std::string encode_quit();

// Every response word of the protocol.
enum class response_kind {
  inserted,        // INSERTED <id>
  buried,          // BURIED, or BURIED <id> after put
  expected_crlf,   // EXPECTED_CRLF
  job_too_big,     // JOB_TOO_BIG
  draining,        // DRAINING
  using_tube,      // USING <tube>
  watching,        // WATCHING <count>
  not_ignored,     // NOT_IGNORED
  reserved,        // RESERVED <id> <bytes>\r\n<data>\r\n
  deadline_soon,   // DEADLINE_SOON
  timed_out,       // TIMED_OUT
  deleted,         // DELETED
  not_found,       // NOT_FOUND
  released,        // RELEASED
  touched,         // TOUCHED
  kicked,          // KICKED, or KICKED <count>
  found,           // FOUND <id> <bytes>\r\n<data>\r\n
  ok,              // OK <bytes>\r\n<data>\r\n
  paused,          // PAUSED
  out_of_memory,   // OUT_OF_MEMORY
  internal_error,  // INTERNAL_ERROR
  bad_format,      // BAD_FORMAT
  unknown_command, // UNKNOWN_COMMAND
};

struct response {
  response_kind kind{};
  std::uint64_t value = 0; // job id (INSERTED, BURIED <id>, RESERVED, FOUND), count (WATCHING, KICKED)
  std::string tube;        // USING <tube>
  std::string body;        // RESERVED, FOUND, OK

  friend bool operator==(const response&, const response&) = default;
};

// The response word of a kind as it appears on the wire ("NOT_FOUND"), for logs.
std::string_view response_word(response_kind kind) noexcept;

enum class parse_status { need_more, complete, bad };

struct parse_result {
  parse_status status = parse_status::need_more;
  std::size_t consumed = 0; // bytes of input that make up the response (complete only)
  response value;           // complete only
  std::string error;        // bad only: what was wrong, for the log
  // need_more only, once the line is complete and announces a body: the total
  // bytes (line, body and its CRLF) the response takes, so the caller can read
  // exactly that much. 0 while the line itself is still incomplete.
  std::size_t expected_size = 0;
};

// Parses one response from the front of `input`. A body is read by its exact
// length (it may contain CRLF) and must be followed by CRLF. A line longer
// than max_response_line without CRLF, an unknown word, a malformed number or
// a body longer than max_body is `bad`.
parse_result parse_response(std::string_view input, std::size_t max_body);

// The YAML that stats, stats-job and stats-tube return: "key: value" lines.
std::map<std::string, std::string> parse_yaml_map(std::string_view body);
// The YAML list that list-tubes-watched returns: "- name" lines.
std::vector<std::string> parse_yaml_list(std::string_view body);

} // namespace bs_router::beanstalk
