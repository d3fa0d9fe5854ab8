#pragma once
// The look-ups that fill Guid, DskGuid and Vnc after a job's run. Pure: the
// router runs the argv and hands the outcome back to printed_value().

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bs_router/job.hpp"

namespace bs_router {

enum class lookup_field { guid, dsk_guid, vnc_bind, vnc_port };

struct lookup {
  lookup_field field;
  std::vector<std::string> args; // cbsd arguments after the executable: {"bget", "jname=J", ...}
};

// "jail" -> jget, "qemu" -> qget, "xen" -> xget, anything else -> bget.
std::string get_command_for(const std::optional<std::string>& emulator);

// Nothing without jname, nor when jname holds a character cbsd evaluates
// ($ ` \: see find_evaluated_char), whatever the config allows: then Guid and
// DskGuid stay "0" and Vnc "". With jname: guid and dsk_guid; for bstart also
// vnc_bind and vnc_port.
std::vector<lookup> lookups_for(const job_request& job);

// A look-up prints a value when it exited 0 and its stdout, one trailing
// newline trimmed, is exactly one non-empty line.
std::optional<std::string> printed_value(int exit_status, std::string_view stdout_text);

// The reply's Vnc: "<bind>:<port>" when both look-ups printed a value, else "".
std::string vnc_address(const std::optional<std::string>& bind, const std::optional<std::string>& port);

} // namespace bs_router
