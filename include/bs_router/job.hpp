#pragma once
// Decoding a job body (JSON) into the argv of one cbsd run. Pure: no I/O.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bs_router {

struct job_limits {
  std::size_t max_body_bytes = 65536; // larger bodies are refused before parsing
  std::size_t max_depth = 16;         // JSON nesting, checked before parsing
  std::size_t max_args = 256;         // entries in CommandArgs
  std::size_t max_name_bytes = 64;    // Command and each key
};

// Bounds of a body's "Timeout" and of config's job_timeout, in seconds, 0
// aside (no limit of its own, no ceiling): not below the timer's resolution,
// and far inside its range (nanoseconds in 64 bits, 292 years), so that no
// value can wrap.
constexpr double min_timeout_seconds = 0.001;
constexpr int max_timeout_seconds = 30 * 24 * 60 * 60; // 30 days

// A number in CommandArgs whose plain decimal form is longer than this is
// refused (1e-500 would be 502 characters). Every double fits: the longest is
// the 309 digits of 1.8e308.
constexpr std::size_t max_number_chars = 400;

struct job_request {
  std::string command;                                     // e.g. "jcreate"
  std::vector<std::pair<std::string, std::string>> args;   // in body order, values rendered
  std::optional<std::string> jname;                        // CommandArgs.jname
  std::optional<std::string> emulator;                     // CommandArgs.emulator
  std::optional<std::chrono::milliseconds> timeout;        // top-level "Timeout", rounded up; absent when 0

  // {cbsd_path, command, "key=value", ...}: one argv element per argument.
  std::vector<std::string> argv(const std::string& cbsd_path) const;
};

struct decode_result {
  std::optional<job_request> job; // set when the body is good
  std::string error;              // otherwise: what was wrong, for the reply's Message
};

// Rules (README.md, *Job and reply*): the body is a JSON object with a string "Command" that is a
// plain name; optional "CommandArgs" is an object of plain-name keys whose
// values are strings (as they are), numbers (exactly as written, in plain
// decimal: see render_number), booleans (1/0). null, arrays and objects are
// bad; so is a NUL byte in any value. "Timeout", when present, is a number:
// 0 or from min_timeout_seconds to max_timeout_seconds. "JobID" is ignored.
decode_result decode_job(std::string_view body, const job_limits& limits = {});

// How long a run of `job` may take: its Timeout, capped at job_timeout (a
// ceiling in seconds that a body can lower but not raise, 0 = none); 0 = no
// limit at all.
std::chrono::milliseconds time_limit(const job_request& job, int job_timeout_seconds);

// A plain name: 1..max bytes, first [A-Za-z0-9_], then [A-Za-z0-9_.-].
bool is_plain_name(std::string_view s, std::size_t max_bytes = 64);

// How a number or boolean reaches cbsd.
std::string render_integer(long long v);
std::string render_unsigned(unsigned long long v);
// The exact value of a JSON number (as the body wrote it) in plain decimal,
// digit for digit: no exponent, no sign for zero, no leading zeros, no
// trailing zeros after the point, no point for an integer ("1E2" -> "100",
// "2.50" -> "2.5", "-0.0" -> "0", 30 digits -> the same 30 digits). nullopt
// when the text is not a number in JSON's notation (leading zeros aside) or
// the form would be longer than max_chars.
std::optional<std::string> render_number(std::string_view json_number, std::size_t max_chars = max_number_chars);
std::string render_bool(bool v);

} // namespace bs_router
