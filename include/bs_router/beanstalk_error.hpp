#pragma once
// Errors of the beanstalk client as error codes: one per server error word,
// plus the client's own failures. They travel through Asio as error_code.

#include <boost/system/error_code.hpp>
#include <type_traits>

#include "bs_router/beanstalk_protocol.hpp"

namespace bs_router::beanstalk {

enum class errc {
  // server responses that are errors
  out_of_memory = 1,
  internal_error,
  bad_format,
  unknown_command,
  expected_crlf,
  job_too_big,
  draining,
  not_found,
  not_ignored,
  buried,          // put: server ran out of memory growing the queue; job buried
  // client side
  bad_response,    // bytes the protocol does not allow
  unexpected_response, // a valid response, but not one this command can get
  unrequested_response, // bytes beyond the answers to the commands sent
  timed_out,       // the deadline of an operation passed (dead or silent broker)
  bad_tube_name,   // a tube name beanstalkd refuses: use, watch, ignore, stats-tube sent nothing
};

const boost::system::error_category& error_category() noexcept;
boost::system::error_code make_error_code(errc e) noexcept;

// The error a server response word stands for; a default (success) code for
// the words that are not errors. BURIED maps to errc::buried: it is the
// failure of put and release, but the success of bury, whose caller checks
// the kind instead.
boost::system::error_code to_error(response_kind kind) noexcept;

} // namespace bs_router::beanstalk

namespace boost::system {
template <> struct is_error_code_enum<bs_router::beanstalk::errc> : std::true_type {};
} // namespace boost::system
