#include "bs_router/config.hpp"

#include "bs_router/config_brokers.hpp"
#include "bs_router/config_object.hpp"
#include "bs_router/host_port.hpp"
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
using namespace config_detail;

// Config files are a few hundred bytes; the bound only stops a wrong path
// (a device, a huge log) from being read whole.
constexpr std::size_t max_config_file_bytes = 1 << 20;

std::string join_path(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
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
