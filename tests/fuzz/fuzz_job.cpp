// libFuzzer target for the two pure ends of a job: decoding whatever a
// controller puts on the tube, and encoding whatever cbsd prints.
//
// Properties checked:
// - a decoded job gives an argv of C strings (no NUL) whose elements after the
//   command are all key=value, with a plain-name command and keys;
// - a reply made of arbitrary bytes is valid JSON (and so valid UTF-8) and
//   never larger than its limit (raised to 1024).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "bs_router/job.hpp"
#include "bs_router/lookup.hpp"
#include "bs_router/reply.hpp"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

void check_decode(std::string_view body) {
  auto result = bs_router::decode_job(body);
  if (!result.job) {
    require(!result.error.empty());
    return;
  }
  const auto& job = *result.job;
  require(bs_router::is_plain_name(job.command));
  auto argv = job.argv("/usr/local/bin/cbsd");
  require(argv.size() == job.args.size() + 2);
  for (const auto& element : argv) require(element.find('\0') == std::string::npos);
  for (std::size_t i = 2; i < argv.size(); ++i) {
    auto equals = argv[i].find('=');
    require(equals != std::string::npos);
    require(bs_router::is_plain_name(std::string_view(argv[i]).substr(0, equals)));
  }
  for (const auto& lookup : bs_router::lookups_for(job))
    for (const auto& element : lookup.args) require(element.find('\0') == std::string::npos);
}

void check_reply(const bs_router::reply& r, std::size_t max_bytes) {
  auto text = bs_router::encode_reply(r, max_bytes);
  require(text.size() <= std::max<std::size_t>(max_bytes, 1024));
  auto parsed = nlohmann::json::parse(text, nullptr, false); // refuses invalid UTF-8 too
  require(!parsed.is_discarded());
  require(parsed.is_object());
  require(parsed["Message"].is_string() && parsed["Stderr"].is_string());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  check_decode(bytes);

  bs_router::reply whole;
  whole.message = std::string(bytes);
  whole.stderr_text = std::string(bytes);
  // The same bytes split between all the texts, so that short fields are
  // exercised with arbitrary content as well.
  bs_router::reply split;
  std::size_t half = size / 2, quarter = size / 4;
  split.message = std::string(bytes.substr(0, quarter));
  split.stderr_text = std::string(bytes.substr(quarter, quarter));
  split.guid = std::string(bytes.substr(half, quarter));
  split.dsk_guid = std::string(bytes.substr(half + quarter));
  split.vnc = split.guid;
  // 0 stands for "below the floor"; 1100 cuts most inputs; 65535 is
  // beanstalkd's default max-job-size and cuts only long ones.
  for (std::size_t max_bytes : {std::size_t{0}, std::size_t{1100}, std::size_t{65535}}) {
    check_reply(whole, max_bytes);
    check_reply(split, max_bytes);
  }
  return 0;
}
