#pragma once
// bs_router-client: puts one job on a pool's tube and waits for its replies.

#include <iosfwd>

#include "bs_router/command_line.hpp"

namespace bs_router {

namespace client_exit {
inline constexpr int usage = 2;
inline constexpr int router_error = 1;   // the reply's ErrCode is outside 1..255
inline constexpr int unavailable = 69;   // EX_UNAVAILABLE: broker unreachable
inline constexpr int config = 78;        // EX_CONFIG
inline constexpr int timed_out = 124;    // no final reply within --timeout
} // namespace client_exit

// The exit status for a final reply's ErrCode: the code itself when it fits
// an exit status (0..255), router_error otherwise.
int exit_status_for(long long err_code);

// Runs the client; what it prints goes to `out` (cbsd's output) and `err`
// (the client's own messages). Returns the process exit status.
int run_client(const client_options& options, std::ostream& out, std::ostream& err);

} // namespace bs_router
