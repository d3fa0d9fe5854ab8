#include "bs_router/beanstalk_protocol.hpp"

#include "bs_router/escape.hpp"

#include <array>
#include <limits>
#include <stdexcept>

namespace bs_router::beanstalk {

namespace {

constexpr std::string_view crlf = "\r\n";

// What follows a response word on its line.
enum class response_fields {
  none,            // WORD
  number,          // WORD <n>
  optional_number, // WORD or WORD <n> (BURIED and KICKED answer two commands each)
  tube,            // WORD <tube>
  number_and_body, // WORD <id> <bytes>, then the body
  body,            // WORD <bytes>, then the body
};

struct response_word_info {
  std::string_view word;
  response_kind kind;
  response_fields fields;
};

// Every response of beanstalkd 1.12, in the order of response_kind so that
// response_word() can index it.
constexpr std::array<response_word_info, 23> response_words{{
    {"INSERTED", response_kind::inserted, response_fields::number},
    {"BURIED", response_kind::buried, response_fields::optional_number},
    {"EXPECTED_CRLF", response_kind::expected_crlf, response_fields::none},
    {"JOB_TOO_BIG", response_kind::job_too_big, response_fields::none},
    {"DRAINING", response_kind::draining, response_fields::none},
    {"USING", response_kind::using_tube, response_fields::tube},
    {"WATCHING", response_kind::watching, response_fields::number},
    {"NOT_IGNORED", response_kind::not_ignored, response_fields::none},
    {"RESERVED", response_kind::reserved, response_fields::number_and_body},
    {"DEADLINE_SOON", response_kind::deadline_soon, response_fields::none},
    {"TIMED_OUT", response_kind::timed_out, response_fields::none},
    {"DELETED", response_kind::deleted, response_fields::none},
    {"NOT_FOUND", response_kind::not_found, response_fields::none},
    {"RELEASED", response_kind::released, response_fields::none},
    {"TOUCHED", response_kind::touched, response_fields::none},
    {"KICKED", response_kind::kicked, response_fields::optional_number},
    {"FOUND", response_kind::found, response_fields::number_and_body},
    {"OK", response_kind::ok, response_fields::body},
    {"PAUSED", response_kind::paused, response_fields::none},
    {"OUT_OF_MEMORY", response_kind::out_of_memory, response_fields::none},
    {"INTERNAL_ERROR", response_kind::internal_error, response_fields::none},
    {"BAD_FORMAT", response_kind::bad_format, response_fields::none},
    {"UNKNOWN_COMMAND", response_kind::unknown_command, response_fields::none},
}};

constexpr bool table_follows_enum_order() {
  for (std::size_t i = 0; i < response_words.size(); ++i)
    if (static_cast<std::size_t>(response_words[i].kind) != i) return false;
  return true;
}
static_assert(table_follows_enum_order(), "response_words must list kinds in enum order");

const response_word_info* find_response_word(std::string_view word) {
  for (const auto& info : response_words)
    if (info.word == word) return &info;
  return nullptr;
}

bool is_tube_name_char(char c) {
  if (c >= 'A' && c <= 'Z') return true;
  if (c >= 'a' && c <= 'z') return true;
  if (c >= '0' && c <= '9') return true;
  switch (c) {
    case '-': case '+': case '/': case ';': case '.': case '$': case '_': case '(': case ')':
      return true;
    default:
      return false;
  }
}

// Canonical decimal only, as beanstalkd prints it: digits, no sign, no
// leading zero (but "0" itself), no overflow of uint64.
bool parse_decimal(std::string_view text, std::uint64_t& out) {
  if (text.empty()) return false;
  if (text.size() > 1 && text[0] == '0') return false;
  std::uint64_t value = 0;
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (max - digit) / 10) return false;
    value = value * 10 + digit;
  }
  out = value;
  return true;
}

// Untrusted bytes in error messages are shown escaped and cut to this many
// (escape.hpp): the log must not receive raw control characters or a whole
// line of junk.
constexpr std::size_t max_bytes_shown = 64;

parse_result bad(std::string what, std::string_view line) {
  parse_result result;
  result.status = parse_status::bad;
  result.error = std::move(what) + " in response \"" + loggable(line, max_bytes_shown) + "\"";
  return result;
}

// Splits the fields after the response word. Fields are separated by exactly
// one space; an empty field (double, leading or trailing space) is refused.
// Returns false on an empty field or more than `out.size()` fields.
bool split_fields(std::string_view rest, std::array<std::string_view, 2>& out, std::size_t& count) {
  count = 0;
  if (rest.empty()) return true;
  for (;;) {
    const auto space = rest.find(' ');
    const auto field = rest.substr(0, space);
    if (field.empty() || count == out.size()) return false;
    out[count++] = field;
    if (space == std::string_view::npos) return true;
    rest.remove_prefix(space + 1);
  }
}

std::size_t saturating_add(std::size_t a, std::uint64_t b) {
  constexpr auto max = std::numeric_limits<std::size_t>::max();
  if (b > max - a) return max;
  return a + static_cast<std::size_t>(b);
}

std::string command_with_number(std::string_view command, std::uint64_t n) {
  std::string out{command};
  out += ' ';
  out += std::to_string(n);
  out += crlf;
  return out;
}

std::string command_with_tube(std::string_view command, std::string_view tube) {
  if (!valid_tube_name(tube))
    throw std::invalid_argument("invalid beanstalk tube name \"" + loggable(tube, max_bytes_shown) + "\"");
  std::string out{command};
  out += ' ';
  out += tube;
  out += crlf;
  return out;
}

} // namespace

bool valid_tube_name(std::string_view name) {
  if (name.empty() || name.size() > max_tube_name) return false;
  // beanstalkd refuses a leading '-' so a name is never mistaken for an option.
  if (name.front() == '-') return false;
  for (char c : name)
    if (!is_tube_name_char(c)) return false;
  return true;
}

std::string encode_put(std::uint32_t priority, std::uint32_t delay, std::uint32_t ttr, std::string_view body) {
  std::string out = "put " + std::to_string(priority) + ' ' + std::to_string(delay) + ' ' +
                    std::to_string(ttr) + ' ' + std::to_string(body.size());
  out += crlf;
  out += body;
  out += crlf;
  return out;
}

std::string encode_use(std::string_view tube) { return command_with_tube("use", tube); }
std::string encode_watch(std::string_view tube) { return command_with_tube("watch", tube); }
std::string encode_ignore(std::string_view tube) { return command_with_tube("ignore", tube); }
std::string encode_reserve() { return "reserve\r\n"; }
std::string encode_reserve_with_timeout(std::uint32_t seconds) {
  return command_with_number("reserve-with-timeout", seconds);
}
std::string encode_reserve_job(std::uint64_t id) { return command_with_number("reserve-job", id); }
std::string encode_delete(std::uint64_t id) { return command_with_number("delete", id); }

std::string encode_release(std::uint64_t id, std::uint32_t priority, std::uint32_t delay) {
  return "release " + std::to_string(id) + ' ' + std::to_string(priority) + ' ' + std::to_string(delay) +
         std::string{crlf};
}

std::string encode_bury(std::uint64_t id, std::uint32_t priority) {
  return "bury " + std::to_string(id) + ' ' + std::to_string(priority) + std::string{crlf};
}

std::string encode_touch(std::uint64_t id) { return command_with_number("touch", id); }
std::string encode_kick_job(std::uint64_t id) { return command_with_number("kick-job", id); }
std::string encode_peek(std::uint64_t id) { return command_with_number("peek", id); }
std::string encode_peek_ready() { return "peek-ready\r\n"; }
std::string encode_stats() { return "stats\r\n"; }
std::string encode_stats_job(std::uint64_t id) { return command_with_number("stats-job", id); }
std::string encode_stats_tube(std::string_view tube) { return command_with_tube("stats-tube", tube); }
std::string encode_list_tubes_watched() { return "list-tubes-watched\r\n"; }
std::string encode_quit() { return "quit\r\n"; }

std::string_view response_word(response_kind kind) noexcept {
  const auto index = static_cast<std::size_t>(kind);
  if (index >= response_words.size()) return "?";
  return response_words[index].word;
}

parse_result parse_response(std::string_view input, std::size_t max_body) {
  // The line must end within max_response_line bytes, CRLF included; a bare
  // LF is refused at once rather than waited on.
  const auto window = input.substr(0, max_response_line);
  const auto newline = window.find('\n');
  if (newline == std::string_view::npos) {
    if (input.size() >= max_response_line)
      return bad("no CRLF within " + std::to_string(max_response_line) + " bytes", window);
    return {};
  }
  if (newline == 0 || input[newline - 1] != '\r') return bad("line ends with LF without CR", window.substr(0, newline + 1));
  const auto line = input.substr(0, newline - 1);
  const std::size_t line_size = newline + 1;

  const auto space = line.find(' ');
  const auto word = line.substr(0, space);
  const auto rest = space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  const auto* info = find_response_word(word);
  if (info == nullptr) return bad("unknown response word", line);
  // "WORD " with nothing after it is a trailing space, not "WORD".
  if (space != std::string_view::npos && rest.empty()) return bad("trailing space", line);

  std::array<std::string_view, 2> fields;
  std::size_t field_count = 0;
  if (!split_fields(rest, fields, field_count)) return bad("malformed fields", line);

  std::size_t expected_fields = 0;
  switch (info->fields) {
    case response_fields::none: expected_fields = 0; break;
    case response_fields::number:
    case response_fields::tube:
    case response_fields::body: expected_fields = 1; break;
    case response_fields::optional_number: expected_fields = field_count == 0 ? 0 : 1; break;
    case response_fields::number_and_body: expected_fields = 2; break;
  }
  if (field_count != expected_fields) return bad("wrong number of fields", line);

  parse_result result;
  response& value = result.value;
  value.kind = info->kind;
  bool has_body = false;
  std::uint64_t body_size = 0;
  switch (info->fields) {
    case response_fields::none:
      break;
    case response_fields::number:
    case response_fields::optional_number:
      if (field_count == 1 && !parse_decimal(fields[0], value.value)) return bad("malformed number", line);
      break;
    case response_fields::tube:
      if (!valid_tube_name(fields[0])) return bad("invalid tube name", line);
      value.tube = std::string{fields[0]};
      break;
    case response_fields::number_and_body:
      if (!parse_decimal(fields[0], value.value)) return bad("malformed job id", line);
      if (!parse_decimal(fields[1], body_size)) return bad("malformed body size", line);
      has_body = true;
      break;
    case response_fields::body:
      if (!parse_decimal(fields[0], body_size)) return bad("malformed body size", line);
      has_body = true;
      break;
  }

  if (!has_body) {
    result.status = parse_status::complete;
    result.consumed = line_size;
    return result;
  }

  if (body_size > max_body)
    return bad("body of " + std::to_string(body_size) + " bytes exceeds the limit of " + std::to_string(max_body),
               line);
  // Read the body by its announced length: it may itself contain CRLF. Check
  // whatever trailing bytes have already arrived, so junk is refused early.
  const auto after_line = input.substr(line_size);
  if (after_line.size() > body_size) {
    const auto trailer = after_line.substr(static_cast<std::size_t>(body_size), crlf.size());
    if (trailer != crlf.substr(0, trailer.size())) return bad("body not followed by CRLF", line);
  }
  // Saturates rather than wraps for an absurd max_body; no input is that long.
  const auto total_size = saturating_add(saturating_add(line_size, body_size), crlf.size());
  if (input.size() < total_size) {
    parse_result incomplete;
    incomplete.expected_size = total_size;
    return incomplete;
  }
  value.body = std::string{after_line.substr(0, body_size)};
  result.status = parse_status::complete;
  result.consumed = total_size;
  return result;
}

namespace {

// beanstalkd quotes some string values ("hostname", "version", "tube"...).
// It never escapes inside them, so dropping the outer pair is enough.
std::string_view strip_quotes(std::string_view value) {
  if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
    return value.substr(1, value.size() - 2);
  return value;
}

std::string_view trim_spaces(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) text.remove_suffix(1);
  return text;
}

// Calls `each` with every line of `body` but the "---" document marker,
// without its line ending; tolerates CRLF endings and a missing final LF.
template <typename Function>
void for_each_yaml_line(std::string_view body, Function each) {
  while (!body.empty()) {
    const auto newline = body.find('\n');
    auto line = body.substr(0, newline);
    body.remove_prefix(newline == std::string_view::npos ? body.size() : newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == "---") continue;
    each(line);
  }
}

} // namespace

std::map<std::string, std::string> parse_yaml_map(std::string_view body) {
  std::map<std::string, std::string> out;
  for_each_yaml_line(body, [&](std::string_view line) {
    const auto colon = line.find(':');
    // Only "key: value" (or "key:" for an empty value) is a mapping line;
    // anything else is not something beanstalkd sends and is skipped.
    if (colon == std::string_view::npos) return;
    const auto after = line.substr(colon + 1);
    if (!after.empty() && after.front() != ' ') return;
    const auto key = trim_spaces(line.substr(0, colon));
    if (key.empty()) return;
    out[std::string{key}] = std::string{strip_quotes(trim_spaces(after))};
  });
  return out;
}

std::vector<std::string> parse_yaml_list(std::string_view body) {
  std::vector<std::string> out;
  for_each_yaml_line(body, [&](std::string_view line) {
    if (line.substr(0, 2) != "- ") return;
    const auto item = strip_quotes(trim_spaces(line.substr(2)));
    if (!item.empty()) out.emplace_back(item);
  });
  return out;
}

} // namespace bs_router::beanstalk
