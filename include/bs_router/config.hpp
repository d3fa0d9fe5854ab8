#pragma once
// The pool's JSON config: the Go router's keys with their old meaning, plus
// new optional keys. Loading validates everything before anything connects.

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bs_router/job_policy.hpp"
#include "bs_router/rabbitmq_config.hpp"
#include "bs_router/signature.hpp"

namespace bs_router {

struct beanstalkd_config {
  std::string uri;        // "host:port" as written
  std::string host;       // parsed from uri
  std::uint16_t port = 11300;
  std::string tube;
  std::string reply_tube_prefix;
  int reconnect_timeout = 5; // seconds between reconnect attempts (>= 1)
  int reserve_timeout = 5;   // seconds per reserve-with-timeout (>= 1)
  int publish_timeout = 5;   // TTR of reply jobs (>= 1)
  std::string logdir;        // per-job files
};

// Where Guid, DskGuid and Vnc come from (key "lookups", see cbsd_database.hpp):
// auto = CBSD's databases when <cbsdenv>/var/db/local.sqlite is there as
// expected at start, else the cbsd commands; database; cbsd.
enum class lookup_source { automatic, database, cbsd };

struct config {
  std::string source; // the file it came from, for messages

  // compat keys
  std::string cbsdenv;
  bool cbsdcolor = false;
  std::string broker; // "beanstalkd" or "rabbitmq"
  std::string logfile;
  // With broker "rabbitmq", the section "beanstalkd" is not read, and
  // logdir, reconnect_timeout and publish_timeout here mirror those of
  // "rabbitmq", so that code serving both brokers finds them in one place.
  beanstalkd_config beanstalkd;
  rabbitmq_config rabbitmq; // broker "rabbitmq" only
  bool uses_rabbitmq() const { return broker == "rabbitmq"; }
  const std::string& logdir() const { return uses_rabbitmq() ? rabbitmq.logdir : beanstalkd.logdir; }
  // Seconds between attempts to reach the broker (its reconnect_timeout).
  int reconnect_seconds() const { return uses_rabbitmq() ? rabbitmq.reconnect_timeout : beanstalkd.reconnect_timeout; }

  // new keys (all optional)
  std::string cbsd_path = "/usr/local/bin/cbsd";
  std::string statedir;              // default: <cbsdenv>/.bs_router
  int max_jobs = 4;                  // cbsd runs at once
  int max_waiting = 64;              // jobs held behind a busy jname
  int job_timeout = 0;               // seconds, a ceiling for each run; 0 = none
  int kill_grace = 10;               // seconds between SIGTERM and SIGKILL
  bool progress = false;             // replies with Progress < 100 while a job runs
  lookup_source lookups = lookup_source::automatic;
  int shutdown_timeout = 60;         // seconds SIGTERM waits for running jobs
  std::size_t max_body_bytes = 65536; // job bodies larger than this are refused
  int joblog_max_age_days = 30;      // per-job files older than this are removed (0 = keep)
  int joblog_max_files = 10000;      // at most this many jobs' files kept (0 = no limit)
  // Bytes of all per-job files in logdir kept at most, the oldest jobs
  // removed first (0 = no limit).
  std::uint64_t joblog_max_bytes = 1024ull * 1024 * 1024;
  // Bytes of cbsd's output kept in each of a job's .out and .err; the rest is
  // counted, not written, and a marker line says where it was cut (0 = all).
  std::uint64_t joblog_max_output_bytes = 16ull * 1024 * 1024;
  // The largest reply put, whatever the broker's max-job-size claims: it
  // bounds the output the router holds per job.
  std::size_t max_reply_bytes = 1024 * 1024;
  std::string metrics_listen;        // "host:port" for /metrics, empty = off
  std::string metrics_host;          // parsed from metrics_listen (brackets of IPv6 removed)
  std::uint16_t metrics_port = 0;    // parsed from metrics_listen, 0 when off
  // "commands", "deny_commands" (arrays of plain names; a name in both is an
  // error) and "allow_unsafe_values" (true, false or an array of key names).
  job_policy policy;

  // Signed jobs (docs/SIGNING.md).
  std::map<std::string, std::string> job_key_files; // "job_keys": key id -> key file
  key_ring job_keys;                 // key id -> secret: filled by load_config (load_job_keys)
  bool require_signed_jobs = false;  // unsigned jobs are refused
  int max_signed_job_lifetime = 3600; // seconds: a later Expires is refused (bounds the replay memory's time)
  int max_remembered_signatures = 100000; // replay memory entries; when full, new signed jobs are refused
  std::string client_key;            // bs_router-client: the key id of job_keys it signs with

  std::vector<std::string> warnings; // unknown keys, deprecated forms: logged, not fatal
};

// Thrown with a message that names the file and the key, e.g.
// "pool1.json: beanstalkd.reserve_timeout: expected an integer".
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Values given on the command line; a config value wins when non-empty.
struct config_overrides {
  std::string cbsdenv;
  std::string broker;
};

config load_config(const std::string& path, const config_overrides& overrides = {});
// For bs_router-client: only cbsdenv-independent keys are required (the
// beanstalkd or rabbitmq part); the daemon's own keys may be absent.
config load_client_config(const std::string& path);
// Reads the key file of each of cfg.job_key_files into cfg.job_keys (all of
// them, or only `only` when not empty). Throws config_error naming the key
// and the file (a file that group or others can read, a short key, ...).
void load_job_keys(config& cfg, const std::string& only = {});
// Reads rabbitmq.password_file, when given, as the password of every URI.
// Throws config_error naming the key and the file.
void load_rabbitmq_password(config& cfg);
config parse_config(const std::string& json_text, const std::string& source,
                    const config_overrides& overrides = {});

// Throws config_error naming <cbsdenv>/nc.inventory when the workspace is not
// an initialised CBSD workdir.
void check_workspace(const config& cfg);

} // namespace bs_router
