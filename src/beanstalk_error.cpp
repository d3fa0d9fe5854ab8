#include "bs_router/beanstalk_error.hpp"

#include <string>

namespace bs_router::beanstalk {

namespace {

class beanstalk_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "beanstalk"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::out_of_memory: return "beanstalkd is out of memory (OUT_OF_MEMORY)";
      case errc::internal_error: return "beanstalkd internal error (INTERNAL_ERROR)";
      case errc::bad_format: return "beanstalkd refused a badly formatted command (BAD_FORMAT)";
      case errc::unknown_command: return "beanstalkd does not know the command (UNKNOWN_COMMAND)";
      case errc::expected_crlf: return "job body not followed by CRLF (EXPECTED_CRLF)";
      case errc::job_too_big: return "job body larger than beanstalkd's max-job-size (JOB_TOO_BIG)";
      case errc::draining: return "beanstalkd is draining and accepts no new jobs (DRAINING)";
      case errc::not_found: return "no such job or tube, or job not reserved by this connection (NOT_FOUND)";
      case errc::not_ignored: return "cannot ignore the only watched tube (NOT_IGNORED)";
      case errc::buried: return "beanstalkd ran out of memory and buried the job (BURIED)";
      case errc::bad_response: return "response from beanstalkd violates the protocol";
      case errc::unexpected_response: return "response from beanstalkd does not answer the command sent";
      case errc::unrequested_response: return "beanstalkd sent more than the answers to the commands sent";
      case errc::timed_out: return "beanstalkd did not answer in time";
      case errc::bad_tube_name: return "invalid beanstalk tube name";
    }
    return "unknown beanstalk error " + std::to_string(value);
  }
};

} // namespace

const boost::system::error_category& error_category() noexcept {
  static const beanstalk_category category;
  return category;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

// BURIED is an error only as the answer to put (and to release, when the
// server could not grow its queue); as the answer to bury it is the success,
// so a caller of bury checks the kind before asking for an error.
boost::system::error_code to_error(response_kind kind) noexcept {
  switch (kind) {
    case response_kind::out_of_memory: return make_error_code(errc::out_of_memory);
    case response_kind::internal_error: return make_error_code(errc::internal_error);
    case response_kind::bad_format: return make_error_code(errc::bad_format);
    case response_kind::unknown_command: return make_error_code(errc::unknown_command);
    case response_kind::expected_crlf: return make_error_code(errc::expected_crlf);
    case response_kind::job_too_big: return make_error_code(errc::job_too_big);
    case response_kind::draining: return make_error_code(errc::draining);
    case response_kind::not_found: return make_error_code(errc::not_found);
    case response_kind::not_ignored: return make_error_code(errc::not_ignored);
    case response_kind::buried: return make_error_code(errc::buried);
    // TIMED_OUT and DEADLINE_SOON are ordinary outcomes of reserve, not
    // failures; errc::timed_out is the client's own deadline.
    case response_kind::inserted:
    case response_kind::using_tube:
    case response_kind::watching:
    case response_kind::reserved:
    case response_kind::deadline_soon:
    case response_kind::timed_out:
    case response_kind::deleted:
    case response_kind::released:
    case response_kind::touched:
    case response_kind::kicked:
    case response_kind::found:
    case response_kind::ok:
    case response_kind::paused:
      return {};
  }
  return make_error_code(errc::bad_response);
}

} // namespace bs_router::beanstalk
