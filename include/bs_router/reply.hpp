#pragma once
// The JSON reply put on <reply_tube_prefix><jobid>. Pure: no I/O.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bs_router {

// ErrCodes the router itself produces (cbsd's own exit statuses are 0..255).
namespace router_errcode {
inline constexpr int bad_input = 1000;     // the body was refused; nothing ran
inline constexpr int start_failed = 1001;  // cbsd could not be started (exec failed)
inline constexpr int timed_out = 1002;     // the run passed its timeout and was killed
inline constexpr int interrupted = 1003;   // the router stopped during the run; outcome unknown
inline constexpr int killed = 1004;        // cbsd ended by a signal
inline constexpr int not_allowed = 1005;   // the Command is not accepted on this pool; nothing ran
// Signed jobs (docs/SIGNING.md); nothing ran.
inline constexpr int unsigned_job = 1006;       // require_signed_jobs, and the job is not signed
inline constexpr int bad_signature = 1007;      // malformed envelope, unknown key id, or wrong HMAC
inline constexpr int expired = 1008;            // Expires passed, or further ahead than max_signed_job_lifetime
inline constexpr int replayed = 1009;           // the same signed job was taken already
inline constexpr int replay_memory_full = 1010; // max_remembered_signatures live signed jobs remembered
} // namespace router_errcode

struct reply {
  std::string job_id = "0"; // "JobID": the broker's name for the job
  bool numeric_id = true; // JobID written as a JSON number (beanstalkd's ids)
  long long err_code = 0;
  std::string message;        // cbsd's stdout (or the router's explanation)
  int progress = 100;
  std::string guid = "0";
  std::string dsk_guid = "0";
  std::string vnc;
  std::string stderr_text;    // cbsd's stderr: field "Stderr", new
  std::uint64_t message_bytes = 0; // full size of the output before any cut; 0 = message.size()
  std::uint64_t stderr_bytes = 0;  // likewise for stderr
  double duration_seconds = -1;    // "Duration", new; < 0 = omitted
};

// A reply of the router's own: nothing ran (or what ran is not known), so
// it carries only the ErrCode and a Message that says why.
reply error_reply(std::string job_id, bool numeric_id, long long err_code, std::string message);

// Encodes the reply as one JSON object of at most max_bytes bytes:
// ErrCode, Message, Progress, Guid, DskGuid, Vnc, plus JobID, Stderr and, when
// a text had to be cut to fit, "Truncated": true with MessageBytes and
// StderrBytes giving the full sizes. Message keeps its beginning; invalid
// UTF-8 is replaced by U+FFFD, and cuts fall on character boundaries.
// max_bytes below 1024 is treated as 1024.
std::string encode_reply(const reply& r, std::size_t max_bytes);

// beanstalkd 1.12 takes a put of exactly max-job-size bytes, but on restart
// its binlog replay refuses every job longer than max-job-size - 2 (it counts
// the trailing \r\n) and drops all later jobs of that binlog file with it.
inline constexpr std::size_t binlog_replay_margin = 2;

// The largest reply to put on a broker whose `stats` said max-job-size is
// `claimed`: what its binlog can replay, and never more than our own
// max_reply_bytes, whatever it claims. A claim that is not a decimal number
// counts as beanstalkd's default (65535).
std::size_t reply_limit(std::string_view claimed, std::size_t max_reply_bytes);

// How many bytes at the start of `text` go into a reply's Message within
// max_bytes of JSON string content (escapes and replaced invalid UTF-8
// counted), ending on a character boundary. A character that the end of
// text cuts short is left out: the rest of it may still come.
std::size_t fitting_prefix(std::string_view text, std::size_t max_bytes);

} // namespace bs_router
