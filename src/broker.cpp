#include "bs_router/broker.hpp"

namespace bs_router {

broker_error::broker_error(std::string op, std::error_code code, const std::string& detail)
    : std::runtime_error(op + ": " + code.message() + (detail.empty() ? std::string() : ": " + detail)),
      op_(std::move(op)),
      code_(code) {}

} // namespace bs_router
