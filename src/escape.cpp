#include "bs_router/escape.hpp"

namespace bs_router {

std::string escape_bytes(std::string_view bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size());
  for (unsigned char c : bytes) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out += static_cast<char>(c);
        } else {
          out += "\\x";
          out += hex[c >> 4];
          out += hex[c & 0xf];
        }
    }
  }
  return out;
}

std::string loggable(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return escape_bytes(text);
  return escape_bytes(text.substr(0, max_bytes)) + "...";
}

} // namespace bs_router
