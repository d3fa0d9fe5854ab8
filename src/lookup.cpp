#include "bs_router/lookup.hpp"

#include "bs_router/job_policy.hpp"

namespace bs_router {

std::string get_command_for(const std::optional<std::string>& emulator) {
  if (emulator == "jail") return "jget";
  if (emulator == "qemu") return "qget";
  if (emulator == "xen") return "xget";
  return "bget";
}

std::vector<lookup> lookups_for(const job_request& job) {
  std::vector<lookup> out;
  if (!job.jname) return out;
  // cbsd would evaluate such a jname (find_evaluated_char) as root. A job
  // runs with one only where the config lets it through; the router's own
  // look-ups never pass it on, whatever the config says.
  if (find_evaluated_char(*job.jname) != std::string::npos) return out;
  const std::string jname_arg = "jname=" + *job.jname;

  out.push_back({lookup_field::guid, {get_command_for(job.emulator), jname_arg, "mode=quiet", "vm_zfs_guid"}});
  out.push_back({lookup_field::dsk_guid, {"bhyve-dsk", "mode=get", jname_arg, "dsk_path=dsk1", "dsk_zfs_guid"}});
  if (job.command == "bstart") {
    // Asked one key at a time: "vnc" is not a key bget knows, and an unknown
    // key makes it print every setting.
    out.push_back({lookup_field::vnc_bind, {"bget", jname_arg, "mode=quiet", "bhyve_vnc_tcp_bind"}});
    out.push_back({lookup_field::vnc_port, {"bget", jname_arg, "mode=quiet", "vnc_port"}});
  }
  return out;
}

std::optional<std::string> printed_value(int exit_status, std::string_view stdout_text) {
  if (exit_status != 0) return std::nullopt;
  std::string_view line = stdout_text;
  if (line.ends_with("\r\n"))
    line.remove_suffix(2);
  else if (line.ends_with('\n'))
    line.remove_suffix(1);
  // Several lines mean cbsd printed something other than the one value asked
  // for (typically every setting, for a key it does not know).
  if (line.empty() || line.find('\n') != std::string_view::npos) return std::nullopt;
  return std::string(line);
}

std::string vnc_address(const std::optional<std::string>& bind, const std::optional<std::string>& port) {
  if (!bind || !port) return {};
  return *bind + ":" + *port;
}

} // namespace bs_router
