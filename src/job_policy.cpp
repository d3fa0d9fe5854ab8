#include "bs_router/job_policy.hpp"

#include "bs_router/reply.hpp"

namespace bs_router {

namespace {

// What each evaluated character would do inside cbsd's eval, for the reply.
const char* evaluated_char_effect(char c) {
  switch (c) {
    case '$': return "'$' (a parameter or $(...) command substitution)";
    case '`': return "'`' (a command substitution)";
    default: return "'\\' (an escape)";
  }
}

} // namespace

std::string job_refusal::message() const {
  return err_code == router_errcode::bad_input ? "bs_router: bad job: " + reason : "bs_router: " + reason;
}

std::size_t find_evaluated_char(std::string_view value) { return value.find_first_of("$`\\"); }

std::optional<job_refusal> check_job(const job_request& job, const job_policy& policy) {
  // Command is a plain name (decode_job), so it may be quoted as it is.
  if (policy.deny_commands.count(job.command))
    return job_refusal{router_errcode::not_allowed,
                       "command \"" + job.command + "\" is not allowed on this pool (deny_commands)"};
  if (policy.commands && !policy.commands->count(job.command))
    return job_refusal{router_errcode::not_allowed,
                       "command \"" + job.command + "\" is not allowed on this pool (not in commands)"};

  if (policy.unsafe_values_everywhere) return std::nullopt;
  for (const auto& [key, value] : job.args) {
    const std::size_t at = find_evaluated_char(value);
    if (at == std::string::npos || policy.unsafe_value_keys.count(key)) continue;
    // Keys are plain names: safe to quote. The value is not quoted at all.
    return job_refusal{router_errcode::bad_input,
                       "CommandArgs." + key + ": the value has " +
                           evaluated_char_effect(value[at]) +
                           ", which cbsd evaluates as root when it reads its arguments; "
                           "not allowed (see allow_unsafe_values)"};
  }
  return std::nullopt;
}

} // namespace bs_router
