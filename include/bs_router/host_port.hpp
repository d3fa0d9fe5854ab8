#pragma once
// "host:port", "1.2.3.4:port" or "[::1]:port", as the config writes a
// beanstalkd uri or metrics_listen.

#include <cstdint>
#include <optional>
#include <string>

namespace bs_router {

struct host_port {
  std::string host;
  std::uint16_t port = 0;
};

// Returns what is wrong, or the parsed parts. Names are only checked for
// their characters: the resolver has the last word when connecting.
std::optional<host_port> parse_host_port(const std::string& text, std::string& problem);

} // namespace bs_router
