#include "bs_router/config.hpp"

#include "bs_router/beanstalk_protocol.hpp"
#include "bs_router/job.hpp"
#include "bs_router/safe_files.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace bs_router {

namespace {

using json = nlohmann::json;

// A job id is a 64-bit decimal: the reply tube <prefix><id> must still be a
// valid tube name for the largest id beanstalkd can hand out.
constexpr std::size_t max_job_id_digits = 20;
constexpr std::size_t max_reply_tube_prefix = beanstalk::max_tube_name - max_job_id_digits;

// Config files are a few hundred bytes; the bound only stops a wrong path
// (a device, a huge log) from being read whole.
constexpr std::size_t max_config_file_bytes = 1 << 20;

std::string join_path(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool equal_ignoring_ascii_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// One JSON object of the config, with the key path that leads to it. Keys are
// looked up by name and remembered, so that whatever was never asked for can
// be reported as unknown at the end.
class config_object {
 public:
  config_object(const json& object, std::string path, const std::string& source, std::vector<std::string>& warnings)
      : object_(object), path_(std::move(path)), source_(source), warnings_(warnings) {}

  // The value of `name`, or nullptr when it is absent or null (the Go router
  // decoded null as "not given", so do we). Like Go's encoding/json, a key
  // that differs only in letter case is taken when the exact one is absent,
  // with a warning.
  const json* find(const std::string& name) {
    const json* found = nullptr;
    if (auto exact = object_.find(name); exact != object_.end()) {
      used_.push_back(name);
      found = &*exact;
    } else {
      for (auto it = object_.begin(); it != object_.end(); ++it) {
        if (equal_ignoring_ascii_case(it.key(), name)) {
          used_.push_back(it.key());
          warnings_.push_back(source_ + ": key \"" + key_path(it.key()) + "\" taken as \"" + key_path(name) + "\"");
          found = &*it;
          break;
        }
      }
    }
    if (found && found->is_null()) return nullptr;
    return found;
  }

  // Warns about every key nobody asked for.
  void report_unknown_keys() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (std::find(used_.begin(), used_.end(), it.key()) == used_.end())
        warnings_.push_back(source_ + ": unknown key \"" + key_path(it.key()) + "\" ignored");
    }
  }

  std::string key_path(const std::string& name) const { return path_.empty() ? name : path_ + "." + name; }

  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    throw config_error(source_ + ": " + key_path(name) + ": " + what);
  }

  std::optional<std::string> optional_string(const std::string& name) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_string()) fail(name, std::string("expected a string, got ") + value->type_name());
    return value->get<std::string>();
  }

  std::string required_string(const std::string& name) {
    std::optional<std::string> value = optional_string(name);
    if (!value || value->empty()) fail(name, "missing");
    return *value;
  }

  std::optional<bool> optional_bool(const std::string& name) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_boolean()) fail(name, std::string("expected true or false, got ") + value->type_name());
    return value->get<bool>();
  }

  // Integers only, as Go's decoder into an int: 5.0 and "5" are refused.
  std::optional<std::int64_t> optional_integer(const std::string& name, std::int64_t min, std::int64_t max) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_number_integer()) {
      if (value->is_number()) fail(name, "expected an integer, got " + value->dump());
      fail(name, std::string("expected an integer, got ") + value->type_name());
    }
    // nlohmann stores non-negative integers as uint64, negative ones as int64.
    bool too_small = false;
    bool too_large = false;
    if (value->is_number_unsigned()) {
      auto number = value->get<std::uint64_t>();
      too_small = min > 0 && number < static_cast<std::uint64_t>(min);
      too_large = number > static_cast<std::uint64_t>(max);
    } else {
      auto number = value->get<std::int64_t>();
      too_small = number < min;
      too_large = number > max;
    }
    if (too_small || too_large) {
      bool unbounded = max == std::numeric_limits<int>::max();
      std::string range = !unbounded ? "between " + std::to_string(min) + " and " + std::to_string(max)
                          : too_small ? "at least " + std::to_string(min)
                                      : "at most " + std::to_string(max);
      fail(name, "must be " + range + ", got " + value->dump());
    }
    return value->get<std::int64_t>();
  }

  int required_int(const std::string& name, int min, int max = std::numeric_limits<int>::max()) {
    std::optional<std::int64_t> value = optional_integer(name, min, max);
    if (!value) fail(name, "missing");
    return static_cast<int>(*value);
  }

  void read_int(const std::string& name, int& target, int min, int max = std::numeric_limits<int>::max()) {
    if (auto value = optional_integer(name, min, max)) target = static_cast<int>(*value);
  }

  // An array of plain names (is_plain_name), e.g. the command names of
  // "commands"; `what` names what they are, for the message. Repeated names
  // count once.
  std::optional<std::set<std::string, std::less<>>> optional_name_list(const std::string& name,
                                                                       const std::string& what) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    return name_list(name, *value, what);
  }

  std::set<std::string, std::less<>> name_list(const std::string& name, const json& value, const std::string& what) {
    if (!value.is_array()) fail(name, "expected an array of " + what + "s, got " + value.type_name());
    std::set<std::string, std::less<>> names;
    for (std::size_t i = 0; i < value.size(); ++i) {
      const json& element = value[i];
      const std::string where = name + "[" + std::to_string(i) + "]";
      if (!element.is_string()) fail(where, "expected a " + what + ", got " + element.type_name());
      const std::string& text = element.get_ref<const std::string&>();
      // dump() quotes it safely, control characters and all.
      if (!is_plain_name(text))
        fail(where, element.dump(-1, ' ', false, json::error_handler_t::replace) + " is not a " + what +
                        " (1 to 64 characters from A-Z a-z 0-9 _ . -, not starting with . or -)");
      names.insert(text);
    }
    return names;
  }

  // A sub-object; missing is an error only when the caller says so.
  std::optional<config_object> optional_object(const std::string& name) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_object()) fail(name, std::string("expected an object, got ") + value->type_name());
    return config_object(*value, key_path(name), source_, warnings_);
  }

 private:
  const json& object_;
  std::string path_;
  const std::string& source_;
  std::vector<std::string>& warnings_;
  std::vector<std::string> used_;
};

struct host_port {
  std::string host;
  std::uint16_t port = 0;
};

bool is_host_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_';
}

bool is_ipv6_char(char c) {
  return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') || c == ':' || c == '.';
}

// "host:port", "1.2.3.4:port" or "[::1]:port". Returns what is wrong, or the
// parsed parts. Names are only checked for their characters: the resolver
// has the last word when connecting.
std::optional<host_port> parse_host_port(const std::string& text, std::string& problem) {
  std::string host;
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      problem = "expected [IPv6 address]:port, got \"" + text + "\"";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    if (host.empty() || host.find(':') == std::string::npos || !std::all_of(host.begin(), host.end(), is_ipv6_char)) {
      problem = "\"" + host + "\" is not an IPv6 address";
      return std::nullopt;
    }
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      problem = "expected host:port, got \"" + text + "\"";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      problem = "an IPv6 address needs brackets: [address]:port, got \"" + text + "\"";
      return std::nullopt;
    }
    if (host.empty() || !std::all_of(host.begin(), host.end(), is_host_name_char)) {
      problem = "\"" + host + "\" is not a host name or address";
      return std::nullopt;
    }
  }
  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    problem = "port \"" + port_text + "\" is not a number";
    return std::nullopt;
  }
  int port = std::stoi(port_text);
  if (port < 1 || port > 65535) {
    problem = "port " + port_text + " is not between 1 and 65535";
    return std::nullopt;
  }
  return host_port{host, static_cast<std::uint16_t>(port)};
}

const char* const tube_name_rule =
    "1 to 200 bytes of letters, digits and - + / ; . $ _ ( ), not starting with '-'";

void read_beanstalkd(config_object& object, beanstalkd_config& out) {
  out.uri = object.required_string("uri");
  std::string problem;
  auto address = parse_host_port(out.uri, problem);
  if (!address) object.fail("uri", problem);
  out.host = address->host;
  out.port = address->port;

  out.tube = object.required_string("tube");
  if (!beanstalk::valid_tube_name(out.tube)) object.fail("tube", "\"" + out.tube + "\" is not a tube name: " + tube_name_rule);

  out.reply_tube_prefix = object.required_string("reply_tube_prefix");
  if (!beanstalk::valid_tube_name(out.reply_tube_prefix))
    object.fail("reply_tube_prefix", "\"" + out.reply_tube_prefix + "\" is not a tube name: " + tube_name_rule);
  if (out.reply_tube_prefix.size() > max_reply_tube_prefix)
    object.fail("reply_tube_prefix", "longer than " + std::to_string(max_reply_tube_prefix) +
                                         " bytes: no room left for a job id in a 200-byte tube name");

  out.reconnect_timeout = object.required_int("reconnect_timeout", 1);
  out.reserve_timeout = object.required_int("reserve_timeout", 1);
  out.publish_timeout = object.required_int("publish_timeout", 1);
  out.logdir = object.required_string("logdir");
}

bool is_absolute_path(const std::string& path) { return !path.empty() && path.front() == '/'; }

void read_queue_name(config_object& object, const std::string& name, std::string& out, std::size_t max) {
  out = object.required_string(name);
  std::string problem = queue_name_problem(out);
  if (problem.empty() && out.size() > max)
    problem = "longer than " + std::to_string(max) + " bytes: no room left for a message id of " +
              std::to_string(max_message_id_chars) + " in a " + std::to_string(max_queue_name) + "-byte queue name";
  if (!problem.empty()) object.fail(name, "\"" + out + "\" is not a queue name: " + problem);
}

// The "rabbitmq" section (see rabbitmq_config.hpp).
void read_rabbitmq(config_object& object, rabbitmq_config& out) {
  const json* list = object.find("uris");
  const json* single = object.find("uri");
  if (list && single) object.fail("uri", "give either uris or uri, not both");
  std::vector<std::pair<std::string, std::string>> texts; // key path, URI
  if (list) {
    if (!list->is_array() || list->empty())
      object.fail("uris", std::string("expected a non-empty array of AMQP URIs, got ") +
                              (list->is_array() ? "an empty array" : list->type_name()));
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string where = "uris[" + std::to_string(i) + "]";
      if (!(*list)[i].is_string()) object.fail(where, std::string("expected a string, got ") + (*list)[i].type_name());
      texts.emplace_back(where, (*list)[i].get<std::string>());
    }
  } else {
    texts.emplace_back("uri", object.required_string("uri"));
  }
  for (const auto& [where, text] : texts) {
    std::string problem;
    auto uri = parse_amqp_uri(text, problem);
    // The URI may hold a password: the message names its place, not its text.
    if (!uri) object.fail(where, problem);
    out.uris.push_back(*uri);
  }
  read_queue_name(object, "queue", out.queue, max_queue_name);
  read_queue_name(object, "reply_queue_prefix", out.reply_queue_prefix, max_reply_queue_prefix);
  object.read_int("reconnect_timeout", out.reconnect_timeout, 1, max_timeout_seconds);
  object.read_int("publish_timeout", out.publish_timeout, 1, max_timeout_seconds);
  object.read_int("heartbeat", out.heartbeat, 0, 3600);
  out.logdir = object.required_string("logdir");
  if (auto file = object.optional_string("password_file")) {
    if (!is_absolute_path(*file)) object.fail("password_file", "expected an absolute path, got \"" + *file + "\"");
    out.password_file = *file;
  }
}

// The bounds on what one job's output costs: memory (the reply) and disk.
void read_output_bounds(config_object& object, config& cfg) {
  constexpr std::int64_t tebibyte = std::int64_t{1} << 40;
  if (auto bytes = object.optional_integer("max_reply_bytes", 1024, 64 * 1024 * 1024))
    cfg.max_reply_bytes = static_cast<std::size_t>(*bytes);
  if (auto bytes = object.optional_integer("joblog_max_bytes", 0, tebibyte))
    cfg.joblog_max_bytes = static_cast<std::uint64_t>(*bytes);
  if (auto bytes = object.optional_integer("joblog_max_output_bytes", 0, tebibyte))
    cfg.joblog_max_output_bytes = static_cast<std::uint64_t>(*bytes);
}

// Who may run what (job_policy.hpp). Absent keys leave today's behaviour:
// every command; values with $ ` \ refused.
void read_policy(config_object& object, config& cfg) {
  job_policy& policy = cfg.policy;
  policy.commands = object.optional_name_list("commands", "command name");
  if (auto denied = object.optional_name_list("deny_commands", "command name")) policy.deny_commands = *denied;
  if (policy.commands) {
    for (const std::string& name : policy.deny_commands)
      if (policy.commands->count(name))
        object.fail("deny_commands", "\"" + name + "\" is also in commands: a command is either accepted or denied");
    if (policy.commands->empty())
      cfg.warnings.push_back(cfg.source + ": commands is empty: every job is refused");
  }
  if (const json* unsafe = object.find("allow_unsafe_values")) {
    if (unsafe->is_boolean())
      policy.unsafe_values_everywhere = unsafe->get<bool>();
    else if (unsafe->is_array())
      policy.unsafe_value_keys = object.name_list("allow_unsafe_values", *unsafe, "key name");
    else
      object.fail("allow_unsafe_values",
                  std::string("expected true, false or an array of key names, got ") + unsafe->type_name());
    if (policy.unsafe_values_everywhere || !policy.unsafe_value_keys.empty())
      cfg.warnings.push_back(cfg.source + ": allow_unsafe_values: values with $ ` \\ reach cbsd, which evaluates "
                                          "them as root: anyone who can put a job can run any command");
  }
}

// job_keys, require_signed_jobs, max_signed_job_lifetime,
// max_remembered_signatures, client_key. The key files are read later (see
// load_job_keys): a client reads only the one it signs with.
void read_signing_keys(config_object& object, config& cfg) {
  if (const json* keys = object.find("job_keys")) {
    if (!keys->is_object()) object.fail("job_keys", std::string("expected an object, got ") + keys->type_name());
    for (auto it = keys->begin(); it != keys->end(); ++it) {
      const std::string name = "job_keys." + it.key();
      if (!is_plain_name(it.key(), 64)) object.fail(name, "a key id is a plain name ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 64)");
      if (!it->is_string()) object.fail(name, std::string("expected the path of a key file, got ") + it->type_name());
      const std::string path = it->get<std::string>();
      if (!is_absolute_path(path)) object.fail(name, "expected an absolute path, got \"" + path + "\"");
      cfg.job_key_files[it.key()] = path;
    }
  }
  if (auto required = object.optional_bool("require_signed_jobs")) cfg.require_signed_jobs = *required;
  if (cfg.require_signed_jobs && cfg.job_key_files.empty())
    object.fail("require_signed_jobs", "true, but job_keys names no key");
  object.read_int("max_signed_job_lifetime", cfg.max_signed_job_lifetime, 1, max_timeout_seconds);
  object.read_int("max_remembered_signatures", cfg.max_remembered_signatures, 1, 10000000);
  if (auto key = object.optional_string("client_key")) {
    if (!cfg.job_key_files.count(*key)) object.fail("client_key", "\"" + *key + "\" is not a key of job_keys");
    cfg.client_key = *key;
  }
}

void read_new_keys(config_object& object, config& cfg) {
  if (auto path = object.optional_string("cbsd_path")) {
    if (!is_absolute_path(*path)) object.fail("cbsd_path", "expected an absolute path, got \"" + *path + "\"");
    cfg.cbsd_path = *path;
  }
  if (auto dir = object.optional_string("statedir")) {
    if (!is_absolute_path(*dir)) object.fail("statedir", "expected an absolute path, got \"" + *dir + "\"");
    cfg.statedir = *dir;
  } else {
    cfg.statedir = join_path(cfg.cbsdenv, ".bs_router");
  }
  object.read_int("max_jobs", cfg.max_jobs, 1, 1024);
  object.read_int("max_waiting", cfg.max_waiting, 0, 100000);
  object.read_int("job_timeout", cfg.job_timeout, 0, max_timeout_seconds);
  object.read_int("kill_grace", cfg.kill_grace, 1);
  if (auto progress = object.optional_bool("progress")) cfg.progress = *progress;
  if (auto lookups = object.optional_string("lookups")) {
    if (*lookups == "auto")
      cfg.lookups = lookup_source::automatic;
    else if (*lookups == "database")
      cfg.lookups = lookup_source::database;
    else if (*lookups == "cbsd")
      cfg.lookups = lookup_source::cbsd;
    else
      object.fail("lookups", "expected \"auto\", \"database\" or \"cbsd\", got \"" + *lookups + "\"");
  }
  object.read_int("shutdown_timeout", cfg.shutdown_timeout, 0);
  if (auto bytes = object.optional_integer("max_body_bytes", 1024, 16 * 1024 * 1024))
    cfg.max_body_bytes = static_cast<std::size_t>(*bytes);
  object.read_int("joblog_max_age_days", cfg.joblog_max_age_days, 0);
  object.read_int("joblog_max_files", cfg.joblog_max_files, 0);
  read_output_bounds(object, cfg);
  read_signing_keys(object, cfg);
  if (auto listen = object.optional_string("metrics_listen"); listen && !listen->empty()) {
    std::string problem;
    auto address = parse_host_port(*listen, problem);
    if (!address) object.fail("metrics_listen", problem);
    cfg.metrics_listen = *listen;
    cfg.metrics_host = address->host;
    cfg.metrics_port = address->port;
  }
  read_policy(object, cfg);
}

// Command-line values stand in for missing or empty ones in the file (the Go
// router's rule: the file wins when it says something).
std::string value_or_override(config_object& object, const std::string& name, const std::string& override_value) {
  std::string value = object.optional_string(name).value_or("");
  if (value.empty()) value = override_value;
  if (value.empty()) object.fail(name, "missing");
  return value;
}

// nlohmann prefixes its messages with "[json.exception.parse_error.101] ";
// the operator needs only the part that says where and what.
std::string parser_message(const json::exception& error) {
  std::string message = error.what();
  if (!message.empty() && message.front() == '[') {
    auto end = message.find("] ");
    if (end != std::string::npos) message.erase(0, end + 2);
  }
  return message;
}

} // namespace

config parse_config(const std::string& json_text, const std::string& source, const config_overrides& overrides) {
  json document;
  try {
    document = json::parse(json_text);
  } catch (const json::exception& error) { // parse_error, or out_of_range for a number like 1e400
    throw config_error(source + ": not valid JSON: " + parser_message(error));
  }
  if (!document.is_object())
    throw config_error(source + ": expected a JSON object at the top, got " + std::string(document.type_name()));

  config cfg;
  cfg.source = source;
  config_object top(document, "", source, cfg.warnings);

  cfg.cbsdenv = value_or_override(top, "cbsdenv", overrides.cbsdenv);
  if (auto color = top.optional_bool("cbsdcolor")) cfg.cbsdcolor = *color;
  cfg.broker = value_or_override(top, "broker", overrides.broker);
  if (cfg.broker != "beanstalkd" && cfg.broker != "rabbitmq")
    top.fail("broker", "unknown broker \"" + cfg.broker + "\" (beanstalkd or rabbitmq)");
  cfg.logfile = top.required_string("logfile");

  // Only the chosen broker's section is read; the other one, if present,
  // is left alone (a config may carry both while a pool moves).
  const std::string section = cfg.broker;
  auto broker = top.optional_object(section);
  if (!broker) top.fail(section, "missing");
  if (cfg.uses_rabbitmq()) {
    read_rabbitmq(*broker, cfg.rabbitmq);
    cfg.beanstalkd.logdir = cfg.rabbitmq.logdir;
    cfg.beanstalkd.reconnect_timeout = cfg.rabbitmq.reconnect_timeout;
    cfg.beanstalkd.publish_timeout = cfg.rabbitmq.publish_timeout;
    top.find("beanstalkd"); // the other section is not unknown, only unused
  } else {
    read_beanstalkd(*broker, cfg.beanstalkd);
    top.find("rabbitmq");
  }
  read_new_keys(top, cfg);

  top.report_unknown_keys();
  broker->report_unknown_keys();
  return cfg;
}

namespace {

std::string read_config_file(const std::string& path) {
  auto cannot_read = [&path](int error) { return config_error(path + ": cannot read: " + std::strerror(error)); };

  // O_NONBLOCK: a FIFO must be refused, not waited on for a writer.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) throw cannot_read(errno);
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    const int error = errno;
    ::close(fd);
    throw cannot_read(error);
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd);
    if (S_ISDIR(status.st_mode)) throw cannot_read(EISDIR);
    throw config_error(path + ": cannot read: " + file_type_name(status.st_mode) + ", not a regular file");
  }
  std::string text;
  char buffer[8192];
  for (;;) {
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      ::close(fd);
      throw cannot_read(error);
    }
    if (got == 0) break;
    text.append(buffer, static_cast<std::size_t>(got));
    if (text.size() > max_config_file_bytes) {
      ::close(fd);
      throw config_error(path + ": cannot read: larger than " + std::to_string(max_config_file_bytes) + " bytes");
    }
  }
  ::close(fd);
  return text;
}

} // namespace

void load_rabbitmq_password(config& cfg) {
  if (!cfg.uses_rabbitmq() || cfg.rabbitmq.password_file.empty()) return;
  try {
    const std::string password = load_password_file(cfg.rabbitmq.password_file);
    for (amqp_uri& uri : cfg.rabbitmq.uris) uri.password = password;
  } catch (const std::runtime_error& ex) {
    throw config_error(cfg.source + ": rabbitmq.password_file: " + ex.what());
  }
}

void load_job_keys(config& cfg, const std::string& only) {
  for (const auto& [id, file] : cfg.job_key_files) {
    if (!only.empty() && id != only) continue;
    try {
      cfg.job_keys[id] = load_key_file(file);
    } catch (const std::runtime_error& ex) {
      throw config_error(cfg.source + ": job_keys." + id + ": " + ex.what());
    }
  }
}

config load_config(const std::string& path, const config_overrides& overrides) {
  config cfg = parse_config(read_config_file(path), path, overrides);
  load_job_keys(cfg);
  load_rabbitmq_password(cfg);
  return cfg;
}

config load_client_config(const std::string& path) {
  std::string text = read_config_file(path);
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_object()) {
    // The client needs only the broker part; the Go client's config had no
    // pool keys, so stand-ins fill what it leaves out.
    const nlohmann::json stand_ins = {{"cbsdenv", "/"}, {"broker", "beanstalkd"}, {"logfile", "/dev/null"}};
    for (const auto& [key, value] : stand_ins.items())
      if (!doc.contains(key)) doc[key] = value;
    for (const char* section : {"beanstalkd", "rabbitmq"})
      if (doc.contains(section) && doc[section].is_object() && !doc[section].contains("logdir"))
        doc[section]["logdir"] = "/tmp";
    text = doc.dump();
  }
  config cfg = parse_config(text, path);
  load_rabbitmq_password(cfg);
  return cfg;
}

void check_workspace(const config& cfg) {
  std::string inventory = join_path(cfg.cbsdenv, "nc.inventory");
  struct stat status {};
  if (::stat(inventory.c_str(), &status) == 0) return;
  int error = errno;
  if (error == ENOENT || error == ENOTDIR)
    throw config_error(inventory + ": missing: " + cfg.cbsdenv + " is not an initialised CBSD workdir");
  throw config_error(inventory + ": cannot check: " + std::strerror(error));
}

} // namespace bs_router
