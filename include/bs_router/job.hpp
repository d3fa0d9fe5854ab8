#pragma once
// Decoding a job body (JSON) into the argv of one cbsd run. Pure: no I/O.

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

struct job_request {
  std::string command;                                     // e.g. "jcreate"
  std::vector<std::pair<std::string, std::string>> args;   // in body order, values rendered
  std::optional<std::string> jname;                        // CommandArgs.jname
  std::optional<std::string> emulator;                     // CommandArgs.emulator
  std::optional<double> timeout_seconds;                   // top-level "Timeout" (>= 0)

  // {cbsd_path, command, "key=value", ...}: one argv element per argument.
  std::vector<std::string> argv(const std::string& cbsd_path) const;
};

struct decode_result {
  std::optional<job_request> job; // set when the body is good
  std::string error;              // otherwise: what was wrong, for the reply's Message
};

// Rules (SPEC.md): the body is a JSON object with a string "Command" that is a
// plain name; optional "CommandArgs" is an object of plain-name keys whose
// values are strings (as they are), integers (decimal), other numbers
// (shortest exact decimal, no exponent), booleans (1/0). null, arrays and
// objects are bad; so is a NUL byte in any value. "JobID" is ignored.
decode_result decode_job(std::string_view body, const job_limits& limits = {});

// A plain name: 1..max bytes, first [A-Za-z0-9_], then [A-Za-z0-9_.-].
bool is_plain_name(std::string_view s, std::size_t max_bytes = 64);

// How a number or boolean reaches cbsd.
std::string render_integer(long long v);
std::string render_unsigned(unsigned long long v);
std::string render_double(double v); // shortest round-trip, fixed notation
std::string render_bool(bool v);

} // namespace bs_router
