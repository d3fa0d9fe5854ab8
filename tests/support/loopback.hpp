#pragma once
// Loopback helpers for tests and the benchmark: a free port, a listening or
// connected socket, a plain HTTP GET, and one sample of the router's metrics.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bs_router::testing {

// A port the kernel just called free on 127.0.0.1. Another process may take
// it before the caller binds it. Throws std::runtime_error.
std::uint16_t free_loopback_port();

// A socket listening on 127.0.0.1 at a port the kernel picks (set in
// *port). Throws std::runtime_error, its message starting with `who`.
int listen_on_loopback(std::uint16_t* port, const std::string& who);

// A socket connected to 127.0.0.1:`port`, or -1.
int connect_to_loopback(std::uint16_t port);

// Sends all of `data` (no SIGPIPE); false once the peer is gone.
bool send_all(int fd, std::string_view data);

// GET `path` from 127.0.0.1:`port` over a plain socket (HTTP/1.0, 10 s read
// timeout); the whole response, headers included, or "" if nothing answered.
std::string http_get(std::uint16_t port, const std::string& path);

// The value of the unlabelled sample `name` in the router's /metrics on
// 127.0.0.1:`port`, or nullopt when there is none.
std::optional<double> metric_sample(std::uint16_t port, const std::string& name);

} // namespace bs_router::testing
