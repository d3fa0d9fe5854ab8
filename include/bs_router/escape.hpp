#pragma once
// Bytes from a job or a broker shown to people: in .cmd files and log lines.

#include <cstddef>
#include <string>
#include <string_view>

namespace bs_router {

// Every byte outside printable ASCII as a C-style escape (\\, \n, \t, \r,
// otherwise \xHH): one line of plain ASCII that shows exactly which bytes
// there were, so that a newline cannot pass for a second line or an ESC
// reach a terminal.
std::string escape_bytes(std::string_view bytes);

// escape_bytes of the first max_bytes of `text`, "..." marking a cut: for an
// argument of a log line, so that a job can neither forge a line nor make
// one as long as its body.
std::string loggable(std::string_view text, std::size_t max_bytes = 1024);

} // namespace bs_router
