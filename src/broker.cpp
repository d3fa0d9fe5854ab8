#include "bs_router/broker.hpp"

namespace bs_router {

namespace {
std::string broker_error_text(const std::string& op, std::error_code code, const std::string& detail) {
  std::string text = op + ": ";
  text += detail.empty() ? code.message() : detail;
  return text;
}
} // namespace

broker_error::broker_error(std::string op, std::error_code code, const std::string& detail)
    : std::runtime_error(broker_error_text(op, code, detail)), op_(std::move(op)), code_(code) {}

} // namespace bs_router
