#include "bs_router/job.hpp"

#include <algorithm>
#include <clocale>
#include <cmath>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace bs_router {

namespace {

// ordered_json keeps CommandArgs in body order, which is the argv order.
using json = nlohmann::ordered_json;

// How much of a refused name an error message quotes: enough to recognise it,
// not so much that the message drowns in it.
constexpr std::size_t quoted_name_bytes = 80;

bool is_name_start(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

bool is_name_rest(unsigned char c) { return is_name_start(c) || c == '.' || c == '-'; }

// A JSON string literal of (the beginning of) s, for error messages: control
// characters and invalid UTF-8 become visible instead of breaking the message.
std::string json_quoted(std::string_view s) {
  std::string excerpt(s.substr(0, quoted_name_bytes));
  std::string text = nlohmann::json(excerpt).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > quoted_name_bytes) text += "...";
  return text;
}

std::string plain_name_rule(std::size_t max_bytes) {
  return "1 to " + std::to_string(max_bytes) +
         " characters from A-Z a-z 0-9 _ . -, not starting with . or -";
}

// Nesting depth of [ and { outside strings. Done on the raw bytes before the
// parser sees them, so that a body of many brackets is refused without the
// parser recursing once per bracket. Returns false as soon as max is passed.
bool nesting_within(std::string_view body, std::size_t max_depth) {
  std::size_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    switch (c) {
    case '"':
      in_string = true;
      break;
    case '[':
    case '{':
      if (++depth > max_depth) return false;
      break;
    case ']':
    case '}':
      if (depth > 0) --depth;
      break;
    default:
      break;
    }
  }
  return true;
}

// nlohmann's messages start with "[json.exception.parse_error.101] ", which
// means nothing to whoever reads the reply.
std::string without_exception_id(const std::string& what) {
  if (!what.empty() && what.front() == '[') {
    auto end = what.find("] ");
    if (end != std::string::npos) return what.substr(end + 2);
  }
  return what;
}

// What decoding keeps of one JSON value: its kind and, for a scalar, its
// text. A number keeps the text the body wrote (integers, which the parser
// hands over as values, in decimal) so that it can reach cbsd digit for
// digit, and its value as a double for Timeout.
struct seen_value {
  enum class kind { string, number, boolean, null, array, object };
  kind type;
  std::string text;
  double number = 0;
};

// One CommandArgs value as the text after "key=", or an error.
struct rendered_value {
  std::string text;
  std::string error;
};

rendered_value render_value(const std::string& key, seen_value value) {
  const std::string where = "CommandArgs." + key + ": ";
  switch (value.type) {
  case seen_value::kind::string:
    // argv elements are C strings: a NUL would silently cut the value short.
    if (value.text.find('\0') != std::string::npos) return {{}, where + "a NUL character is not allowed in a value"};
    return {std::move(value.text), {}};
  case seen_value::kind::number:
    if (auto text = render_number(value.text)) return {std::move(*text), {}};
    return {{}, where + "the number's decimal form is longer than " + std::to_string(max_number_chars) +
                    " characters"};
  case seen_value::kind::boolean:
    return {std::move(value.text), {}};
  case seen_value::kind::null:
    return {{}, where + "null is not allowed"};
  case seen_value::kind::array:
    return {{}, where + "arrays are not allowed"};
  case seen_value::kind::object:
    return {{}, where + "objects are not allowed"};
  }
  return {{}, where + "this kind of value is not allowed"};
}

// Reads a body as the parser walks it, keeping only what a job is made of:
// the top level's kind, its Command, CommandArgs (kind and entries) and
// Timeout. Everything else is skipped. Where a key comes twice, the last
// value wins, in the place of the first (as a JSON object of the body would
// have it). A SAX reader rather than a document, because a document keeps
// only a double of a number that is not a 64-bit integer, and loses digits.
class body_reader final : public nlohmann::json_sax<json> {
 public:
  bool top_is_object = false;
  std::optional<seen_value> command;
  std::optional<seen_value::kind> command_args; // the kind of the last CommandArgs
  std::optional<seen_value> timeout;
  std::vector<std::pair<std::string, seen_value>> args; // of the last CommandArgs object
  std::string syntax_error;                             // set when the body is not JSON

  bool null() override { return value({seen_value::kind::null, {}}); }
  bool boolean(bool v) override { return value({seen_value::kind::boolean, render_bool(v)}); }
  bool number_integer(number_integer_t v) override {
    return value({seen_value::kind::number, render_integer(v), static_cast<double>(v)});
  }
  bool number_unsigned(number_unsigned_t v) override {
    return value({seen_value::kind::number, render_unsigned(v), static_cast<double>(v)});
  }
  bool number_float(number_float_t v, const string_t& written) override {
    return value({seen_value::kind::number, written, v});
  }
  bool string(string_t& v) override { return value({seen_value::kind::string, std::move(v)}); }
  // JSON text never has binary values; only the binary formats do.
  bool binary(binary_t&) override { return value({seen_value::kind::object, {}}); }

  bool start_object(std::size_t) override {
    value({seen_value::kind::object, {}});
    if (depth_ == 1 && member_ == "CommandArgs") {
      args.clear();
      arg_index_.clear();
      in_args_ = true;
    }
    ++depth_;
    return true;
  }
  bool end_object() override {
    if (--depth_ == 1) in_args_ = false;
    return true;
  }
  bool start_array(std::size_t) override {
    value({seen_value::kind::array, {}});
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ == 1)
      member_ = k;
    else if (depth_ == 2 && in_args_)
      arg_key_ = k;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    syntax_error = without_exception_id(ex.what());
    return false;
  }

 private:
  bool value(seen_value v) {
    if (depth_ == 0) {
      top_is_object = v.type == seen_value::kind::object;
    } else if (depth_ == 1) {
      if (member_ == "Command") {
        command = std::move(v);
      } else if (member_ == "CommandArgs") {
        command_args = v.type;
        args.clear(); // start_object refills them for an object
        arg_index_.clear();
      } else if (member_ == "Timeout") {
        timeout = std::move(v);
      }
    } else if (depth_ == 2 && in_args_) {
      auto [at, first] = arg_index_.try_emplace(arg_key_, args.size());
      if (first)
        args.emplace_back(arg_key_, std::move(v));
      else
        args[at->second].second = std::move(v);
    }
    return true;
  }

  std::size_t depth_ = 0; // of the value the next event is about
  std::string member_;    // the key of the top level's current member
  bool in_args_ = false;  // inside the members of the current CommandArgs object
  std::string arg_key_;
  std::unordered_map<std::string, std::size_t> arg_index_; // key -> place in args
};

std::string timeout_rule() {
  return "0 (no limit of its own) or from " + *render_number(std::to_string(min_timeout_seconds)) + " to " +
         std::to_string(max_timeout_seconds) + " seconds";
}

// A body's Timeout, or an error. Zero is tested on the exact value, so that
// 1e-400 (a double 0) is not taken for "no limit of its own".
struct decoded_timeout {
  std::optional<std::chrono::milliseconds> limit;
  std::string error;
};

decoded_timeout decode_timeout(const seen_value& value) {
  const std::string rule = "\"Timeout\" must be a number of seconds: " + timeout_rule();
  if (value.type != seen_value::kind::number) return {std::nullopt, rule};
  if (render_number(value.text) == "0") return {};
  const double seconds = value.number;
  if (!(seconds >= min_timeout_seconds && seconds <= max_timeout_seconds)) return {std::nullopt, rule};
  // Rounded up: a run is never stopped before the time it was given.
  return {std::chrono::milliseconds(static_cast<long long>(std::ceil(seconds * 1000))), {}};
}

decode_result refused(std::string error) { return {std::nullopt, std::move(error)}; }

} // namespace

bool is_plain_name(std::string_view s, std::size_t max_bytes) {
  if (s.empty() || s.size() > max_bytes) return false;
  if (!is_name_start(static_cast<unsigned char>(s.front()))) return false;
  for (char c : s.substr(1))
    if (!is_name_rest(static_cast<unsigned char>(c))) return false;
  return true;
}

std::string render_integer(long long v) { return std::to_string(v); }

std::string render_unsigned(unsigned long long v) { return std::to_string(v); }

std::optional<std::string> render_number(std::string_view text, std::size_t max_chars) {
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0;
  const bool negative = i < text.size() && text[i] == '-';
  if (negative) ++i;

  // The digits without the point; `point` is where the point goes among them.
  std::string digits;
  while (i < text.size() && is_digit(text[i])) digits += text[i++];
  if (digits.empty()) return std::nullopt;
  long long point = static_cast<long long>(digits.size());
  // nlohmann's lexer writes the point as the C locale's, which the router
  // never changes from ".".
  if (i < text.size() && (text[i] == '.' || text[i] == *std::localeconv()->decimal_point)) {
    std::size_t before = digits.size();
    for (++i; i < text.size() && is_digit(text[i]);) digits += text[i++];
    if (digits.size() == before) return std::nullopt;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool exponent_negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) exponent_negative = text[i++] == '-';
    if (i == text.size()) return std::nullopt;
    // Saturates: far past any length allowed, and never overflows.
    constexpr long long exponent_cap = 1'000'000'000;
    long long exponent = 0;
    for (; i < text.size() && is_digit(text[i]); ++i) exponent = std::min(exponent * 10 + (text[i] - '0'), exponent_cap);
    point += exponent_negative ? -exponent : exponent;
  }
  if (i != text.size()) return std::nullopt;

  const std::size_t first = digits.find_first_not_of('0');
  if (first == std::string::npos) return "0"; // also -0: cbsd has no use for a signed zero
  digits.erase(digits.find_last_not_of('0') + 1);
  digits.erase(0, first);
  point -= static_cast<long long>(first);

  const long long count = static_cast<long long>(digits.size());
  const long long unsigned_length = point <= 0 ? 2 - point + count : point >= count ? point : count + 1;
  const long long length = (negative ? 1 : 0) + unsigned_length;
  if (length > static_cast<long long>(max_chars)) return std::nullopt;

  std::string out = negative ? "-" : "";
  if (point <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-point), '0');
    out += digits;
  } else if (point >= count) {
    out += digits;
    out.append(static_cast<std::size_t>(point - count), '0');
  } else {
    out.append(digits, 0, static_cast<std::size_t>(point));
    out += '.';
    out.append(digits, static_cast<std::size_t>(point));
  }
  return out;
}

std::string render_bool(bool v) { return v ? "1" : "0"; }

std::vector<std::string> job_request::argv(const std::string& cbsd_path) const {
  std::vector<std::string> out;
  out.reserve(2 + args.size());
  out.push_back(cbsd_path);
  out.push_back(command);
  for (const auto& [key, value] : args) out.push_back(key + "=" + value);
  return out;
}

decode_result decode_job(std::string_view body, const job_limits& limits) {
  if (body.size() > limits.max_body_bytes)
    return refused("the job body is " + std::to_string(body.size()) + " bytes; the limit is " +
                   std::to_string(limits.max_body_bytes) + " bytes");
  if (!nesting_within(body, limits.max_depth))
    return refused("the job body nests arrays or objects deeper than " + std::to_string(limits.max_depth) +
                   " levels");

  // nlohmann takes a NUL byte for the end of the input and would accept
  // "{...}\0anything"; a raw NUL is never valid JSON.
  if (auto nul = body.find('\0'); nul != std::string_view::npos)
    return refused("not JSON: a NUL byte at offset " + std::to_string(nul));

  body_reader reader;
  json::sax_parse(body.begin(), body.end(), &reader);
  if (!reader.syntax_error.empty()) return refused("not JSON: " + reader.syntax_error);
  if (!reader.top_is_object) return refused("the job body must be a JSON object");

  job_request job;

  if (!reader.command) return refused("the job has no \"Command\"");
  if (reader.command->type != seen_value::kind::string) return refused("\"Command\" must be a string");
  job.command = std::move(reader.command->text);
  if (!is_plain_name(job.command, limits.max_name_bytes))
    return refused("\"Command\" " + json_quoted(job.command) + " is not a plain name (" +
                   plain_name_rule(limits.max_name_bytes) + ")");

  // Go controllers encode a nil map as null: that means "no arguments".
  if (reader.command_args && *reader.command_args != seen_value::kind::null) {
    if (*reader.command_args != seen_value::kind::object) return refused("\"CommandArgs\" must be an object");
    if (reader.args.size() > limits.max_args)
      return refused("\"CommandArgs\" has " + std::to_string(reader.args.size()) + " entries; at most " +
                     std::to_string(limits.max_args) + " are allowed");
    job.args.reserve(reader.args.size());
    for (auto& [key, value] : reader.args) {
      if (!is_plain_name(key, limits.max_name_bytes))
        return refused("CommandArgs key " + json_quoted(key) + " is not a plain name (" +
                       plain_name_rule(limits.max_name_bytes) + ")");
      auto rendered = render_value(key, std::move(value));
      if (!rendered.error.empty()) return refused(std::move(rendered.error));
      if (key == "jname") job.jname = rendered.text;
      if (key == "emulator") job.emulator = rendered.text;
      job.args.emplace_back(std::move(key), std::move(rendered.text));
    }
  }

  if (reader.timeout) {
    auto timeout = decode_timeout(*reader.timeout);
    if (!timeout.error.empty()) return refused(std::move(timeout.error));
    job.timeout = timeout.limit;
  }

  return {std::move(job), {}};
}

std::chrono::milliseconds time_limit(const job_request& job, int job_timeout_seconds) {
  const std::chrono::milliseconds ceiling = std::chrono::seconds(job_timeout_seconds);
  if (!job.timeout) return ceiling;
  if (ceiling.count() == 0) return *job.timeout;
  return std::min(*job.timeout, ceiling);
}

} // namespace bs_router
