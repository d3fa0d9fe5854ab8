#include "bs_router/job.hpp"

#include <charconv>
#include <cmath>
#include <string>

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

// One CommandArgs value as the text after "key=", or an error.
struct rendered_value {
  std::string text;
  std::string error;
};

rendered_value render_value(const std::string& key, const json& value) {
  const std::string where = "CommandArgs." + key + ": ";
  switch (value.type()) {
  case json::value_t::string: {
    const auto& s = value.get_ref<const std::string&>();
    // argv elements are C strings: a NUL would silently cut the value short.
    if (s.find('\0') != std::string::npos) return {{}, where + "a NUL character is not allowed in a value"};
    return {s, {}};
  }
  case json::value_t::number_integer:
    return {render_integer(value.get<long long>()), {}};
  case json::value_t::number_unsigned:
    return {render_unsigned(value.get<unsigned long long>()), {}};
  case json::value_t::number_float: {
    double v = value.get<double>();
    if (!std::isfinite(v)) return {{}, where + "the number is not finite"};
    return {render_double(v), {}};
  }
  case json::value_t::boolean:
    return {render_bool(value.get<bool>()), {}};
  case json::value_t::null:
    return {{}, where + "null is not allowed"};
  case json::value_t::array:
    return {{}, where + "arrays are not allowed"};
  case json::value_t::object:
    return {{}, where + "objects are not allowed"};
  default:
    return {{}, where + "this kind of value is not allowed"};
  }
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

std::string render_double(double v) {
  if (v == 0) return "0"; // also -0: cbsd has no use for a signed zero
  // Fixed notation of a double needs at most 309 integer digits (1.8e308) or
  // 324 fraction digits (4.9e-324), plus sign and point.
  char buffer[400];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v, std::chars_format::fixed);
  if (ec != std::errc()) return {}; // not reached for finite values with this buffer
  return std::string(buffer, end);
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

  json doc;
  try {
    doc = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    return refused("not JSON: " + without_exception_id(e.what()));
  }
  if (!doc.is_object()) return refused("the job body must be a JSON object");

  job_request job;

  auto command = doc.find("Command");
  if (command == doc.end()) return refused("the job has no \"Command\"");
  if (!command->is_string()) return refused("\"Command\" must be a string");
  job.command = command->get<std::string>();
  if (!is_plain_name(job.command, limits.max_name_bytes))
    return refused("\"Command\" " + json_quoted(job.command) + " is not a plain name (" +
                   plain_name_rule(limits.max_name_bytes) + ")");

  auto args = doc.find("CommandArgs");
  // Go controllers encode a nil map as null: that means "no arguments".
  if (args != doc.end() && !args->is_null()) {
    if (!args->is_object()) return refused("\"CommandArgs\" must be an object");
    if (args->size() > limits.max_args)
      return refused("\"CommandArgs\" has " + std::to_string(args->size()) + " entries; at most " +
                     std::to_string(limits.max_args) + " are allowed");
    job.args.reserve(args->size());
    for (const auto& [key, value] : args->items()) {
      if (!is_plain_name(key, limits.max_name_bytes))
        return refused("CommandArgs key " + json_quoted(key) + " is not a plain name (" +
                       plain_name_rule(limits.max_name_bytes) + ")");
      auto rendered = render_value(key, value);
      if (!rendered.error.empty()) return refused(std::move(rendered.error));
      if (key == "jname") job.jname = rendered.text;
      if (key == "emulator") job.emulator = rendered.text;
      job.args.emplace_back(key, std::move(rendered.text));
    }
  }

  auto timeout = doc.find("Timeout");
  if (timeout != doc.end()) {
    if (!timeout->is_number()) return refused("\"Timeout\" must be a number of seconds");
    double seconds = timeout->get<double>();
    if (!std::isfinite(seconds) || seconds < 0)
      return refused("\"Timeout\" must be a finite number of seconds, 0 or more");
    job.timeout_seconds = seconds;
  }

  return {std::move(job), {}};
}

} // namespace bs_router
