// bs_router-client: send one job to a pool's router and print its reply.

#include <csignal>
#include <iostream>

#include "bs_router/client.hpp"
#include "bs_router/command_line.hpp"

int main(int argc, char** argv) {
  auto parsed = bs_router::parse_client_command_line(argc, argv);
  if (!parsed.options) {
    (parsed.output_is_error ? std::cerr : std::cout) << parsed.output;
    return parsed.exit_code;
  }
  std::signal(SIGPIPE, SIG_IGN);
  return bs_router::run_client(*parsed.options, std::cout, std::cerr);
}
