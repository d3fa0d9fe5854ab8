#pragma once
// The two halves of bs_router-client behind run_client (client.hpp): what
// every broker shares (the --timeout clock, the printing of replies) and one
// run per broker, which puts the job and waits for its final reply.

#include <utility> // before Boost 1.74's awaitable.hpp, which uses std::exchange without it
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <iosfwd>
#include <string>

#include "bs_router/client.hpp"
#include "bs_router/config.hpp"

namespace bs_router {

class client_session {
 public:
  using clock = std::chrono::steady_clock;

  client_session(const boost::asio::any_io_executor& ex, const client_options& o, const config& c,
                 std::ostream& so, std::ostream& se)
      : options(o), cfg(c), out(so), err(se), give_up_(ex) {}

  const client_options& options;
  const config& cfg;
  std::ostream& out; // cbsd's output
  std::ostream& err; // the client's own messages
  int status = client_exit::unavailable;
  // Signing: the key the job was signed with; only replies signed with it
  // for this job count. Empty: unsigned.
  std::string key_id, key;

  // --timeout: one timer for the whole run. When it fires it calls
  // `on_timeout`, which the broker's half sets to close its connection: that
  // ends whatever the broker was asked (a silent broker included).
  std::function<void()> on_timeout;
  void start_clock();
  void stop_clock();
  // Also true in the instant between the expiry and the timer's handler,
  // when a deadline cut short by connect_within() may already have failed
  // an operation.
  bool out_of_time() const;
  // The time a broker gets to accept the connection: 10 s, or less when
  // --timeout ends sooner.
  clock::duration connect_within() const;

  // Prints one reply of job `job_id` found on `where` (a tube or a queue);
  // true when it was the final one, and then `status` is set.
  bool handle_reply(const std::string& body, const std::string& job_id, const std::string& where);
  // Sets `status` to timed_out after `what` went to err.
  void timed_out_with(const std::string& what);

 private:
  boost::asio::steady_timer give_up_;
  bool timed_out_ = false;
  std::string shown_; // live output printed so far
};

// Between attempts to reach the broker again while waiting for the reply.
inline constexpr std::chrono::seconds client_retry_pause{1};

// A message id for one RabbitMQ job: unique across runs and hosts, and
// within what the router takes (valid_message_id).
std::string make_message_id();

boost::asio::awaitable<void> run_beanstalk_client(client_session& session);
boost::asio::awaitable<void> run_rabbitmq_client(client_session& session);

} // namespace bs_router
