#include "bs_router/signature.hpp"

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "bs_router/job.hpp"

namespace bs_router {

namespace {

constexpr std::size_t max_key_id_bytes = 64;
constexpr std::size_t max_job_id_bytes = 128; // as the RabbitMQ message id
constexpr std::size_t max_expires_digits = 18;  // far beyond any date, and no overflow

// The pieces of a body whose HMAC is computed: everything before " <hmac>",
// and everything from the "\n" on.
struct signed_pieces {
  std::string_view head; // "<tag> <field> <field>"
  std::string_view rest; // "\n<payload>"
};

struct evp_mac_ctx_free {
  void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
};

// The HMAC algorithm, fetched once (fetching looks it up in the providers).
EVP_MAC* hmac_algorithm() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!mac) throw std::runtime_error("OpenSSL has no HMAC");
  return mac;
}

std::string hmac_hex(std::string_view key, std::initializer_list<std::string_view> message) {
  std::unique_ptr<EVP_MAC_CTX, evp_mac_ctx_free> ctx(EVP_MAC_CTX_new(hmac_algorithm()));
  if (!ctx) throw std::runtime_error("OpenSSL: cannot make an HMAC context");
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                         OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(key.data()), key.size(), params) != 1)
    throw std::runtime_error("OpenSSL: HMAC-SHA256 init failed");
  for (std::string_view piece : message)
    if (EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(piece.data()), piece.size()) != 1)
      throw std::runtime_error("OpenSSL: HMAC-SHA256 update failed");
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t length = 0;
  if (EVP_MAC_final(ctx.get(), out, &length, sizeof out) != 1 || length * 2 != hmac_hex_chars)
    throw std::runtime_error("OpenSSL: HMAC-SHA256 final failed");
  static constexpr char hex[] = "0123456789abcdef";
  std::string text(hmac_hex_chars, '0');
  for (std::size_t i = 0; i < length; ++i) {
    text[2 * i] = hex[out[i] >> 4];
    text[2 * i + 1] = hex[out[i] & 0xF];
  }
  return text;
}

bool is_lower_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool is_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// A job id as the broker layers name jobs: beanstalkd's decimal ids, or a
// RabbitMQ message id ([A-Za-z0-9._:-]).
bool is_job_id(std::string_view s) {
  if (s.empty() || s.size() > max_job_id_bytes) return false;
  for (char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == ':' || c == '-'))
      return false;
  return true;
}

// Splits "<tag> <a> <b> <hmac>\n<payload>" with `tag` known. nullopt with
// `problem` set when the header is not of that form.
struct header {
  std::string_view a, b, hmac;
  signed_pieces pieces;
  std::string_view payload;
};
std::optional<header> split(std::string_view body, std::string_view tag, std::string* problem) {
  const std::size_t newline = body.substr(0, max_signed_header_bytes).find('\n');
  if (newline == std::string_view::npos) {
    *problem = "the signed envelope has no header line";
    return std::nullopt;
  }
  std::string_view line = body.substr(0, newline);
  if (line.substr(0, tag.size()) != tag || line.size() <= tag.size() || line[tag.size()] != ' ') {
    *problem = "the header line does not start with \"" + std::string(tag) + " \"";
    return std::nullopt;
  }
  std::string_view fields = line.substr(tag.size() + 1);
  std::string_view parts[3];
  for (int i = 0; i < 2; ++i) {
    const std::size_t space = fields.find(' ');
    if (space == std::string_view::npos) {
      *problem = "the header line has too few fields";
      return std::nullopt;
    }
    parts[i] = fields.substr(0, space);
    fields.remove_prefix(space + 1);
  }
  parts[2] = fields;
  if (parts[2].size() != hmac_hex_chars || !is_lower_hex(parts[2])) {
    *problem = "the HMAC is not 64 lower-case hex digits";
    return std::nullopt;
  }
  header h;
  h.a = parts[0];
  h.b = parts[1];
  h.hmac = parts[2];
  h.pieces.head = line.substr(0, line.size() - hmac_hex_chars - 1);
  h.pieces.rest = body.substr(newline);
  h.payload = body.substr(newline + 1);
  return h;
}

std::string signed_body(std::string_view tag, std::string_view a, std::string_view b, std::string_view key,
                        std::string_view payload) {
  std::string head;
  head.reserve(tag.size() + a.size() + b.size() + 2);
  head.append(tag).append(" ").append(a).append(" ").append(b);
  std::string out;
  out.reserve(head.size() + hmac_hex_chars + 2 + payload.size());
  out.append(head).append(" ");
  out.append(hmac_hex(key, {head, "\n", payload}));
  out.append("\n").append(payload);
  return out;
}

} // namespace

std::string load_key_file(const std::string& path) {
  auto fail = [&path](const std::string& what) { return std::runtime_error(path + ": " + what); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw fail(std::string("cannot open the key file: ") + std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_it{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw fail(std::string("cannot check the key file: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw fail("the key file is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw fail(std::string("the key file has mode ") + mode +
               ": group and others must have no access to it (chmod 600)");
  }
  if (st.st_size < static_cast<off_t>(min_key_bytes) || st.st_size > static_cast<off_t>(max_key_bytes))
    throw fail("a key file holds " + std::to_string(min_key_bytes) + " to " + std::to_string(max_key_bytes) +
               " bytes, this one " + std::to_string(st.st_size));
  std::string key(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < key.size()) {
    const ssize_t n = ::read(fd, key.data() + got, key.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(std::string("cannot read the key file: ") + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got != key.size()) throw fail("the key file changed while it was read");
  return key;
}

std::string hmac_sha256_hex(std::string_view key, std::string_view message) { return hmac_hex(key, {message}); }

bool equal_in_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string sign_job(std::string_view key_id, std::string_view key, std::int64_t expires, std::string_view job) {
  return signed_body(signed_job_tag, key_id, std::to_string(expires), key, job);
}

opened_job open_job(std::string_view body, const key_ring& keys, std::int64_t now, std::int64_t max_lifetime) {
  opened_job r;
  r.job = body;
  // Anything that looks like an envelope is one: a signed job with a typo
  // in its tag must not run as an unsigned one.
  constexpr std::string_view family = "bs_router-signed-";
  if (body.substr(0, family.size()) != family) return r;
  r.check = job_check::bad_signature;
  std::optional<header> h = split(body, signed_job_tag, &r.problem);
  if (!h) return r;
  if (!is_plain_name(h->a, max_key_id_bytes)) {
    r.problem = "the key id is not a plain name";
    return r;
  }
  auto key = keys.find(h->a);
  if (key == keys.end()) {
    r.problem = "unknown key id \"" + std::string(h->a) + "\"";
    return r;
  }
  if (!is_digits(h->b) || h->b.size() > max_expires_digits) {
    r.problem = "Expires is not a number of seconds since 1970";
    return r;
  }
  const std::string expected = hmac_hex(key->second, {h->pieces.head, h->pieces.rest});
  if (!equal_in_constant_time(expected, h->hmac)) {
    r.problem = "the HMAC does not match (wrong key, or the job was changed)";
    return r;
  }
  r.key_id = std::string(h->a);
  r.expires = std::stoll(std::string(h->b));
  r.job = h->payload;
  r.hmac = std::string(h->hmac);
  if (r.expires < now) {
    r.check = job_check::expired;
    r.problem = "the job expired " + std::to_string(now - r.expires) + " s ago";
  } else if (r.expires - now > max_lifetime) {
    r.check = job_check::too_far;
    r.problem = "Expires is " + std::to_string(r.expires - now) + " s ahead, more than max_signed_job_lifetime (" +
                std::to_string(max_lifetime) + " s)";
  } else {
    r.check = job_check::good;
  }
  return r;
}

job_envelope peel_job(std::string_view body) {
  std::string problem;
  std::optional<header> h = split(body, signed_job_tag, &problem);
  if (!h) return {body, std::nullopt};
  return {h->payload, std::string(h->a)};
}

std::string sign_reply(std::string_view key_id, std::string_view key, std::string_view job_id, std::string_view reply) {
  return signed_body(signed_reply_tag, key_id, job_id, key, reply);
}

std::optional<std::string_view> open_reply(std::string_view body, std::string_view key_id, std::string_view key,
                                           std::string_view job_id, std::string* problem) {
  std::optional<header> h = split(body, signed_reply_tag, problem);
  if (!h) {
    if (body.substr(0, signed_reply_tag.size()) != signed_reply_tag) *problem = "it is not signed";
    return std::nullopt;
  }
  if (h->a != key_id) {
    *problem = "it is signed with another key than \"" + std::string(key_id) + "\"";
    return std::nullopt;
  }
  if (!is_job_id(h->b) || h->b != job_id) {
    *problem = "it is signed for another job";
    return std::nullopt;
  }
  const std::string expected = hmac_hex(key, {h->pieces.head, h->pieces.rest});
  if (!equal_in_constant_time(expected, h->hmac)) {
    *problem = "its HMAC does not match";
    return std::nullopt;
  }
  return h->payload;
}

} // namespace bs_router
