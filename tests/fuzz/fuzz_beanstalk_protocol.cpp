// Feeds arbitrary bytes to the beanstalk response parser and the stats YAML
// parsers. Besides not crashing, the parser must frame consistently: what it
// decides about a prefix of the input must still hold once more bytes arrive,
// because the connection calls it again on a growing buffer.
//
// Input layout: the first byte chooses where the rest is split into "what has
// arrived" and "what arrives later".

#include "bs_router/beanstalk_protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace bs = bs_router::beanstalk;

namespace {

// Small, so that body limits are hit often and bodies stay cheap.
constexpr std::size_t fuzz_max_body = 64;

void check(bool condition) {
  if (!condition) std::abort();
}

bool same(const bs::parse_result& a, const bs::parse_result& b) {
  return a.status == b.status && a.consumed == b.consumed && a.value == b.value;
}

// The wire bytes a complete response came from. Parsing accepts only the
// canonical spelling, so this is unique except that a zero count may be
// either absent or "0" (BURIED, KICKED).
bool is_wire_of(const bs::response& r, std::string_view wire) {
  std::string line{bs::response_word(r.kind)};
  switch (r.kind) {
    case bs::response_kind::inserted:
    case bs::response_kind::watching:
      line += ' ' + std::to_string(r.value);
      break;
    case bs::response_kind::buried:
    case bs::response_kind::kicked:
      if (r.value != 0 || wire.substr(0, line.size() + 1) == line + ' ') line += ' ' + std::to_string(r.value);
      break;
    case bs::response_kind::using_tube:
      line += ' ' + r.tube;
      break;
    case bs::response_kind::reserved:
    case bs::response_kind::found:
      line += ' ' + std::to_string(r.value) + ' ' + std::to_string(r.body.size()) + "\r\n" + r.body;
      break;
    case bs::response_kind::ok:
      line += ' ' + std::to_string(r.body.size()) + "\r\n" + r.body;
      break;
    default:
      break;
  }
  line += "\r\n";
  return wire == line;
}

void check_one(std::string_view input, const bs::parse_result& result) {
  check(result.consumed <= input.size());
  switch (result.status) {
    case bs::parse_status::complete: {
      check(result.consumed > 0);
      check(result.value.body.size() <= fuzz_max_body);
      check(result.value.kind != bs::response_kind::using_tube || bs::valid_tube_name(result.value.tube));
      check(is_wire_of(result.value, input.substr(0, result.consumed)));
      // Exactly the consumed bytes are enough, and one fewer is not.
      const auto exact = bs::parse_response(input.substr(0, result.consumed), fuzz_max_body);
      check(same(exact, result));
      const auto short_by_one = bs::parse_response(input.substr(0, result.consumed - 1), fuzz_max_body);
      check(short_by_one.status == bs::parse_status::need_more);
      break;
    }
    case bs::parse_status::need_more:
      check(result.consumed == 0);
      check(result.expected_size == 0 || result.expected_size > input.size());
      break;
    case bs::parse_status::bad:
      check(result.consumed == 0);
      check(!result.error.empty());
      break;
  }
}

void fuzz_yaml(std::string_view body) {
  for (const auto& [key, value] : bs::parse_yaml_map(body)) {
    check(!key.empty());
    check(key.find('\n') == std::string::npos && value.find('\n') == std::string::npos);
  }
  for (const auto& item : bs::parse_yaml_list(body)) {
    check(!item.empty());
    check(item.find('\n') == std::string::npos);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view all{reinterpret_cast<const char*>(data + 1), size - 1};
  const std::size_t split = all.size() * data[0] / 255;
  const auto arrived = all.substr(0, split);

  const auto early = bs::parse_response(arrived, fuzz_max_body);
  const auto later = bs::parse_response(all, fuzz_max_body);
  check_one(arrived, early);
  check_one(all, later);

  // More bytes never change a decision already made.
  if (early.status == bs::parse_status::complete) check(same(early, later));
  if (early.status == bs::parse_status::bad) check(later.status == bs::parse_status::bad);
  if (early.status == bs::parse_status::need_more && early.expected_size != 0 &&
      later.status != bs::parse_status::bad && all.size() >= early.expected_size)
    check(later.status == bs::parse_status::complete && later.consumed == early.expected_size);

  fuzz_yaml(all);
  return 0;
}
