#pragma once
// Command lines of bs_router and bs_router-client. The Go programs took
// single-dash long options (-config FILE); both forms are accepted.

#include <optional>
#include <string>
#include <vector>

namespace bs_router {

struct router_options {
  std::string config_path;
  std::string cbsdenv;
  std::string broker;
  bool check_only = false; // --check: validate config and workspace, then exit
  bool list_journal = false; // --journal: list the jobs the pool's journal holds, then exit
};

// --timeout takes seconds above 0 and up to a year: a longer wait is a
// mistake, and a deadline of some 292 years would not fit the clock at all.
inline constexpr double max_client_timeout_seconds = 365.0 * 24 * 60 * 60;

// The client's signed jobs expire this long after they are put unless
// --lifetime says otherwise; below the router's max_signed_job_lifetime
// (3600 by default), with room for clocks that differ.
inline constexpr int default_signed_job_lifetime = 600;

struct client_options {
  std::string config_path;
  std::string body;                  // -body JSON
  std::vector<std::string> command;  // short form: COMMAND key=value ...
  std::optional<double> timeout;     // --timeout SECONDS, 0 < SECONDS <= max_client_timeout_seconds (none = wait for ever)
  bool json = false;                 // --json: print the whole final reply
  bool quiet_progress = false;       // --no-progress: do not print Progress < 100 replies
  // Signing (docs/SIGNING.md): --key-file FILE with --key-id ID, or --key-id
  // ID alone for a key of the config's job_keys (or its client_key).
  std::string key_file;
  std::string key_id;
  int lifetime = default_signed_job_lifetime; // --lifetime SECONDS: Expires = now + this
};

// What parsing decided: run with the options, or exit now with `exit_code`
// after `output` was printed (help, version, usage error).
template <typename Options> struct parsed_command_line {
  std::optional<Options> options;
  int exit_code = 0;
  std::string output; // text for stdout (help/version) or stderr (errors)
  bool output_is_error = false;
};

parsed_command_line<router_options> parse_router_command_line(int argc, const char* const* argv);
parsed_command_line<client_options> parse_client_command_line(int argc, const char* const* argv);

// Turns the short form "jls header=0 display=jname,status" into a job body.
// Throws std::invalid_argument for an argument without '='.
std::string body_from_words(const std::vector<std::string>& words);

} // namespace bs_router
