#pragma once
// Signed jobs and signed replies (docs/SIGNING.md): the envelope, and the
// HMAC-SHA256 of OpenSSL over exact bytes. Pure apart from load_key_file; the
// broker is not involved, the job id being whatever text the broker layer
// names the job by.
//
//   job:   "bs_router-signed-job-v1 <key id> <expires> <hmac>\n<job JSON>"
//   reply: "bs_router-signed-reply-v1 <key id> <job id> <hmac>\n<reply JSON>"
//
// The HMAC is over the body without " <hmac>": the header line as it is up
// to the last field before the HMAC, the "\n", and the payload, byte for
// byte. Nothing is ever re-serialised before it is verified.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace bs_router {

inline constexpr std::string_view signed_job_tag = "bs_router-signed-job-v1";
inline constexpr std::string_view signed_reply_tag = "bs_router-signed-reply-v1";
inline constexpr std::size_t hmac_hex_chars = 64; // SHA-256, lower-case hex
inline constexpr std::size_t min_key_bytes = 32;
inline constexpr std::size_t max_key_bytes = 4096;
// The longest header line: the tag, a key id and a job id of 128 characters
// at most, a number, the HMAC. A reply signed fits in its budget plus this.
inline constexpr std::size_t max_signed_header_bytes = 400;

// Key id -> secret (the key file's bytes as they are).
using key_ring = std::map<std::string, std::string, std::less<>>;

// Reads a key file: a regular file (not a link), of min_key_bytes to
// max_key_bytes bytes, that neither group nor others may read, write or run.
// Throws std::runtime_error with a message that names the file.
std::string load_key_file(const std::string& path);

// HMAC-SHA256 of `message` under `key`, as 64 lower-case hex digits.
std::string hmac_sha256_hex(std::string_view key, std::string_view message);

// Compares in a time that depends only on the lengths (CRYPTO_memcmp).
bool equal_in_constant_time(std::string_view a, std::string_view b);

// --- jobs ---------------------------------------------------------------------

// The signed form of `job`, as a controller puts it.
std::string sign_job(std::string_view key_id, std::string_view key, std::int64_t expires, std::string_view job);

enum class job_check {
  unsigned_job, // no envelope: a job as old controllers send it
  good,
  bad_signature, // malformed envelope, unknown key id, or an HMAC that does not match
  expired,       // Expires has passed
  too_far,       // Expires is further ahead than the longest lifetime allowed
};

struct opened_job {
  job_check check = job_check::unsigned_job;
  std::string_view job;    // the job JSON (the whole body when unsigned)
  std::string key_id;      // good, expired, too_far: the key it was signed with
  std::int64_t expires = 0;
  std::string hmac;        // good, expired, too_far: the HMAC as sent (what replay memory keeps)
  std::string problem;     // otherwise: what was wrong, for the reply and the log
};

// Verifies a job body. `now` and `max_lifetime` in seconds; the HMAC is
// checked before anything else, so an expiry is believed only when signed.
// `job` points into `body`.
opened_job open_job(std::string_view body, const key_ring& keys, std::int64_t now, std::int64_t max_lifetime);

// The job JSON and key id of a body the router took already (from its own
// journal): no verification.
struct job_envelope {
  std::string_view job;
  std::optional<std::string> key_id; // set when the body is signed
};
job_envelope peel_job(std::string_view body);

// --- replies ------------------------------------------------------------------

std::string sign_reply(std::string_view key_id, std::string_view key, std::string_view job_id, std::string_view reply);

// The reply JSON when `body` is a reply to job `job_id` signed with `key`
// under `key_id`; otherwise nullopt and `problem` says why.
std::optional<std::string_view> open_reply(std::string_view body, std::string_view key_id, std::string_view key,
                                           std::string_view job_id, std::string* problem);

} // namespace bs_router
