// libFuzzer target for the envelope of signed jobs and replies: whatever
// anyone puts on a tube or a reply tube.
//
// Properties checked:
// - opening never crashes, and a job it accepts is the tail of the body;
// - no body is accepted unless its HMAC is the key's: since the fuzzer does
//   not know the key, a body accepted is one the code itself signed
//   (sign_job / sign_reply give back the very same bytes);
// - a body signed by the code opens to its payload.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bs_router/signature.hpp"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

const std::string key = "fuzzing key, 32 bytes or more....";

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const bs_router::key_ring ring{{"k1", key}};

  bs_router::opened_job opened = bs_router::open_job(body, ring, 1000, 3600);
  require(body.size() >= opened.job.size() && body.substr(body.size() - opened.job.size()) == opened.job);
  if (opened.check == bs_router::job_check::good) require(opened.key_id == "k1" && opened.hmac.size() == 64);

  std::string problem;
  auto reply = bs_router::open_reply(body, "k1", key, "5", &problem);
  if (reply) require(bs_router::sign_reply("k1", key, "5", *reply) == body);

  // What the code signs, it opens.
  const std::string job = bs_router::sign_job("k1", key, 2000, body);
  bs_router::opened_job again = bs_router::open_job(job, ring, 1000, 3600);
  require(again.check == bs_router::job_check::good && again.job == body && again.expires == 2000);
  const std::string signed_reply = bs_router::sign_reply("k1", key, "5", body);
  auto back = bs_router::open_reply(signed_reply, "k1", key, "5", &problem);
  require(back && *back == body);
  require(!bs_router::open_reply(signed_reply, "k1", key, "6", &problem));
  return 0;
}
