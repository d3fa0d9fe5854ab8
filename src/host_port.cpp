#include "bs_router/host_port.hpp"

#include <algorithm>

namespace bs_router {

namespace {

bool is_host_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_';
}

bool is_ipv6_char(char c) {
  return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') || c == ':' || c == '.';
}

} // namespace

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

} // namespace bs_router
