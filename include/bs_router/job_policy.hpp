#pragma once
// Who may run what on a pool: the commands it accepts, and the values it hands
// on to cbsd. Pure: no I/O. The router asks check_job() once a job is decoded
// and, when it answers, replies with that refusal and runs nothing.

#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "bs_router/job.hpp"

namespace bs_router {

struct job_policy {
  // Config "commands": the Command names accepted; nullopt (key absent) =
  // every command.
  std::optional<std::set<std::string, std::less<>>> commands;
  // Config "deny_commands": refused even when "commands" is absent.
  std::set<std::string, std::less<>> deny_commands;
  // Config "allow_unsafe_values": true lets every value hold the characters
  // cbsd evaluates; a list lets only those keys' values hold them.
  bool unsafe_values_everywhere = false;
  std::set<std::string, std::less<>> unsafe_value_keys;
};

// Why a job is not run: the reply's ErrCode, and the reason (for the log
// line "job N: refused: <reason>"; the reply's Message is message()).
struct job_refusal {
  int err_code = 0;
  std::string reason;

  // "bs_router: bad job: <reason>" for bad input, else "bs_router: <reason>".
  std::string message() const;
};

// The first character of `value` that cbsd's argument loader would evaluate,
// or npos. CBSD (subr/nc.subr) strips '"' from each argument and runs
// eval "${ARG}=\"${VAL}\"", and inside double quotes the shell evaluates
// exactly $ (parameters, $(...)), ` (commands) and \ (escapes).
std::size_t find_evaluated_char(std::string_view value);

// nullopt when `job` may run under `policy`; otherwise why not. A Command not
// accepted gives router_errcode::not_allowed; a value holding a character
// cbsd evaluates (and not let through by the policy) gives bad_input.
std::optional<job_refusal> check_job(const job_request& job, const job_policy& policy);

} // namespace bs_router
