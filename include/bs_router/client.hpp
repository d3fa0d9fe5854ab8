#pragma once
// bs_router-client: puts one job on a pool's tube and waits for its replies.

#include <iosfwd>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

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

// A body found on the reply tube, as the client reads it. Only a
// well-formed reply counts: an object whose "Progress" is a number from 0
// to 100 and whose "Message" is a string; a final one (Progress 100) also
// has an integer "ErrCode". Anything else is `malformed`: the client says
// so and keeps waiting, since a body that does not say what it is cannot
// end the wait (nor be taken for cbsd's output).
struct reply_reading {
  enum class kind { malformed, progress, final_reply };
  kind what = kind::malformed;
  std::string problem;    // malformed: what is wrong, for the client's message
  std::string message;    // progress and final_reply: "Message"
  long long err_code = 0; // final_reply: "ErrCode"
  nlohmann::json reply;   // progress and final_reply: the object as parsed
};
reply_reading read_reply(std::string_view body);

// Runs the client; what it prints goes to `out` (cbsd's output) and `err`
// (the client's own messages). Returns the process exit status. With
// --timeout, the whole run (connecting, putting the job, waiting for the
// reply, reconnecting) ends by then: a broker that never answers is given
// up on at that time too.
int run_client(const client_options& options, std::ostream& out, std::ostream& err);

} // namespace bs_router
