#include "bs_router/reply.hpp"

#include "bs_router/beanstalk_protocol.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>

namespace bs_router {

namespace {

// Below this a reply could not even hold its own field names.
constexpr std::size_t min_reply_bytes = 1024;

// Guid, DskGuid and Vnc are short values; when a reply must be cut, they are
// cut to this (escaped) size so that Message keeps the room it needs.
constexpr std::size_t short_field_budget = 128;

constexpr std::string_view replacement_character = "\xEF\xBF\xBD"; // U+FFFD

// Length of the well-formed UTF-8 sequence starting at text[i], or, when it
// is not well formed, the negative length of its longest valid beginning
// (at least 1), which is replaced by one U+FFFD.
int utf8_sequence_length(std::string_view text, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char lead = byte(i);
  if (lead < 0x80) return 1;

  int length;
  unsigned char second_low = 0x80, second_high = 0xBF; // range allowed for the 2nd byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_low = 0xA0;  // no overlong forms
    if (lead == 0xED) second_high = 0x9F; // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_low = 0x90;  // no overlong forms
    if (lead == 0xF4) second_high = 0x8F; // nothing above U+10FFFF
  } else {
    return -1;
  }

  for (int k = 1; k < length; ++k) {
    std::size_t at = i + static_cast<std::size_t>(k);
    if (at >= text.size()) return -k;
    unsigned char low = k == 1 ? second_low : 0x80;
    unsigned char high = k == 1 ? second_high : 0xBF;
    if (byte(at) < low || byte(at) > high) return -k;
  }
  return length;
}

// Calls visit(character) for each character of text in order, giving each
// ill-formed sequence as U+FFFD so that the reply is valid UTF-8 whatever
// cbsd printed. Stops early when visit returns false.
template <typename Visit> void for_each_character(std::string_view text, Visit visit) {
  std::size_t i = 0;
  while (i < text.size()) {
    int length = utf8_sequence_length(text, i);
    std::string_view character =
        length > 0 ? text.substr(i, static_cast<std::size_t>(length)) : replacement_character;
    if (!visit(character)) return;
    i += static_cast<std::size_t>(length > 0 ? length : -length);
  }
}

// Bytes one character takes inside a JSON string literal.
std::size_t escaped_size(std::string_view character) {
  if (character.size() > 1) return character.size(); // non-ASCII goes as it is
  switch (character.front()) {
  case '"':
  case '\\':
  case '\b':
  case '\f':
  case '\n':
  case '\r':
  case '\t':
    return 2;
  default:
    return static_cast<unsigned char>(character.front()) < 0x20 ? 6 : 1; // other controls: \u00XX
  }
}

// Size of the text in the reply: escaped, ill-formed sequences replaced.
std::size_t reply_size_of(std::string_view text) {
  std::size_t size = 0;
  for_each_character(text, [&](std::string_view character) {
    size += escaped_size(character);
    return true;
  });
  return size;
}

// The longest beginning of the text (ill-formed sequences replaced) whose
// reply size fits in budget bytes, ending on a character boundary. It walks
// only the part it keeps, so a cut of a huge output costs what it keeps.
std::string valid_prefix_within(std::string_view text, std::size_t budget) {
  std::string out;
  std::size_t used = 0;
  for_each_character(text, [&](std::string_view character) {
    std::size_t cost = escaped_size(character);
    if (cost > budget - used) return false;
    used += cost;
    out.append(character);
    return true;
  });
  return out;
}

std::string valid_utf8(std::string_view text) {
  return valid_prefix_within(text, std::numeric_limits<std::size_t>::max());
}

void append_escaped(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : text) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\b': out += "\\b"; break;
    case '\f': out += "\\f"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      if (c < 0x20) {
        out += "\\u00";
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xF]);
      } else {
        out.push_back(ch);
      }
    }
  }
  out.push_back('"');
}

template <typename Number> void append_number(std::string& out, Number value) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, ec == std::errc() ? end : buffer);
}

// The texts that go into a reply, already valid UTF-8 and possibly cut.
struct reply_texts {
  std::string_view message, guid, dsk_guid, vnc, stderr_text;
};

struct full_sizes {
  std::uint64_t message_bytes, stderr_bytes;
};

// The one place that lays out the reply, used both to measure the fixed part
// (with empty texts) and to produce the result, so the two cannot disagree.
std::string assemble(const reply& r, const reply_texts& texts, const full_sizes* truncated) {
  std::string out;
  out.reserve(256 + texts.message.size() + texts.stderr_text.size());
  out += "{\"ErrCode\":";
  append_number(out, r.err_code);
  out += ",\"Message\":";
  append_escaped(out, texts.message);
  out += ",\"Progress\":";
  append_number(out, r.progress);
  out += ",\"Guid\":";
  append_escaped(out, texts.guid);
  out += ",\"DskGuid\":";
  append_escaped(out, texts.dsk_guid);
  out += ",\"Vnc\":";
  append_escaped(out, texts.vnc);
  out += ",\"JobID\":";
  // A number only when it is one: the id comes from the broker.
  if (r.numeric_id && !r.job_id.empty() && r.job_id.size() <= 20 &&
      std::all_of(r.job_id.begin(), r.job_id.end(), [](char c) { return c >= '0' && c <= '9'; }))
    out += r.job_id;
  else
    append_escaped(out, r.job_id);
  out += ",\"Stderr\":";
  append_escaped(out, texts.stderr_text);
  if (r.duration_seconds >= 0 && std::isfinite(r.duration_seconds)) {
    out += ",\"Duration\":";
    append_number(out, r.duration_seconds); // shortest form; exponents are valid JSON
  }
  if (truncated) {
    out += ",\"Truncated\":true,\"MessageBytes\":";
    append_number(out, truncated->message_bytes);
    out += ",\"StderrBytes\":";
    append_number(out, truncated->stderr_bytes);
  }
  out += '}';
  return out;
}

} // namespace

std::string encode_reply(const reply& r, std::size_t max_bytes) {
  const std::size_t limit = std::max(max_bytes, min_reply_bytes);

  const full_sizes sizes{std::max<std::uint64_t>(r.message_bytes, r.message.size()),
                         std::max<std::uint64_t>(r.stderr_bytes, r.stderr_text.size())};
  // The caller may have cut the output already (it keeps a bounded amount).
  const bool cut_before = sizes.message_bytes > r.message.size() || sizes.stderr_bytes > r.stderr_text.size();

  const std::size_t message_size = reply_size_of(r.message);
  const std::size_t stderr_size = reply_size_of(r.stderr_text);
  const std::size_t short_sizes = reply_size_of(r.guid) + reply_size_of(r.dsk_guid) + reply_size_of(r.vnc);
  const full_sizes* truncated = cut_before ? &sizes : nullptr;
  if (assemble(r, {}, truncated).size() + message_size + stderr_size + short_sizes <= limit) {
    const std::string message = valid_utf8(r.message), stderr_text = valid_utf8(r.stderr_text),
                      guid = valid_utf8(r.guid), dsk_guid = valid_utf8(r.dsk_guid), vnc = valid_utf8(r.vnc);
    return assemble(r, {message, guid, dsk_guid, vnc, stderr_text}, truncated);
  }

  // It does not fit: cut. The fixed part is at most about 300 bytes, and the
  // short fields at most 3 * short_field_budget, so with limit >= 1024 there
  // is always room left for the beginning of Message.
  const std::string guid = valid_prefix_within(r.guid, short_field_budget);
  const std::string dsk_guid = valid_prefix_within(r.dsk_guid, short_field_budget);
  const std::string vnc = valid_prefix_within(r.vnc, short_field_budget);
  const std::size_t fixed =
      assemble(r, {}, &sizes).size() + reply_size_of(guid) + reply_size_of(dsk_guid) + reply_size_of(vnc);
  const std::size_t room = limit > fixed ? limit - fixed : 0;

  // Message first; Stderr is promised a quarter of the room (or less if it
  // needs less), and gets whatever Message leaves beyond that.
  const std::size_t stderr_reserve = std::min(stderr_size, room / 4);
  const std::string message = valid_prefix_within(r.message, room - stderr_reserve);
  const std::string stderr_text = valid_prefix_within(r.stderr_text, room - reply_size_of(message));

  return assemble(r, {message, guid, dsk_guid, vnc, stderr_text}, &sizes);
}

std::size_t reply_limit(std::string_view claimed, std::size_t max_reply_bytes) {
  std::uint64_t max_job_size = beanstalk::default_max_job_size;
  const bool decimal = !claimed.empty() && std::all_of(claimed.begin(), claimed.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  std::uint64_t parsed = 0;
  if (decimal) {
    const auto result = std::from_chars(claimed.data(), claimed.data() + claimed.size(), parsed);
    // Past 64 bits the claim is only "huge": our own bound decides anyway.
    max_job_size = result.ec == std::errc::result_out_of_range ? std::numeric_limits<std::uint64_t>::max() : parsed;
  }
  const std::uint64_t replayable = max_job_size > binlog_replay_margin ? max_job_size - binlog_replay_margin : 0;
  return static_cast<std::size_t>(std::min<std::uint64_t>(replayable, max_reply_bytes));
}

std::size_t fitting_prefix(std::string_view text, std::size_t max_bytes) {
  std::size_t used = 0, taken = 0;
  std::size_t at = 0;
  for_each_character(text, [&](std::string_view character) {
    // A replaced sequence stands for the bytes it replaced, not for U+FFFD.
    const int length = utf8_sequence_length(text, at);
    const std::size_t source = static_cast<std::size_t>(length > 0 ? length : -length);
    // A character the end of text cuts short may be completed by what comes
    // next (live output arrives in chunks): it is not taken.
    const unsigned char lead = static_cast<unsigned char>(text[at]);
    if (length < 0 && at + source == text.size() && lead >= 0xC2 && lead <= 0xF4) return false;
    const std::size_t cost = escaped_size(character);
    if (cost > max_bytes - used) return false;
    used += cost;
    at += source;
    taken = at;
    return true;
  });
  return taken;
}

reply error_reply(std::string job_id, bool numeric_id, long long err_code, std::string message) {
  reply r;
  r.job_id = std::move(job_id);
  r.numeric_id = numeric_id;
  r.err_code = err_code;
  r.message = std::move(message);
  return r;
}

} // namespace bs_router
