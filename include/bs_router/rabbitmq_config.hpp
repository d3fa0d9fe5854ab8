#pragma once
// The "rabbitmq" section of the pool's config (broker "rabbitmq"): the
// cluster's nodes as AMQP URIs, the pool's queue and the reply queues'
// prefix. The pure parts live here (URI, queue names, the password file);
// config.cpp reads the keys.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bs_router {

// One node of the cluster, from "amqp[s]://user:password@host:port/vhost".
struct amqp_uri {
  std::string text;     // as written, for messages: see redacted()
  bool tls = false;     // amqps://
  std::string host;
  std::uint16_t port = 5672; // 5671 for amqps
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";
  // "amqps://router@mq1:5671/cbsd": the URI without its password, for logs.
  std::string redacted() const;
};

struct rabbitmq_config {
  std::vector<amqp_uri> uris; // "uris" (tried in turn) or "uri"
  std::string queue;
  std::string reply_queue_prefix;
  int reconnect_timeout = 5; // seconds between reconnect attempts (>= 1)
  int publish_timeout = 5;   // seconds a publish waits for the broker's confirm (>= 1)
  int heartbeat = 10;        // seconds of AMQP heartbeat; 0 = off
  std::string logdir;        // per-job files
  // Absolute path of a file holding the password of every URI (so that the
  // config itself can stay world-readable); read by load_config.
  std::string password_file;
};

// The longest message id (the job id) the router takes, and its characters.
inline constexpr std::size_t max_message_id_chars = 128;
bool valid_message_id(const std::string& id);
// An AMQP short string holds 255 bytes: a reply queue's name is the prefix
// and a message id.
inline constexpr std::size_t max_queue_name = 255;
inline constexpr std::size_t max_reply_queue_prefix = max_queue_name - max_message_id_chars;

// Parses an AMQP URI; nullopt and `problem` set when it is not one.
std::optional<amqp_uri> parse_amqp_uri(const std::string& text, std::string& problem);

// A queue name the router may declare: 1..255 bytes of printable ASCII
// without spaces, not starting with "amq." (reserved by the broker).
// Returns what is wrong, or "" when it is fine.
std::string queue_name_problem(const std::string& name);

// Reads a password file: a regular file (not a link) that neither group nor
// others may read or write, of at most 4096 bytes; one trailing newline is
// dropped. Throws std::runtime_error naming the file.
std::string load_password_file(const std::string& path);

} // namespace bs_router
