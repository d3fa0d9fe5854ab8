#pragma once
// The small HTTP listener that hands the router's metrics (metrics.hpp) to a
// Prometheus scraper, enabled by metrics_listen.

#include <utility>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "bs_router/spawn.hpp"

namespace bs_router {

// Serves `render()` on GET /metrics, one request per connection (HTTP/1.0
// style: Content-Length and Connection: close). Any other path is 404, any
// method but GET and HEAD is 405, a request head that does not parse or
// exceeds max_request_head is 400. What a client costs is bounded: every
// connection is closed after its deadline whatever the client does, and at
// most max_connections are open at once. When all are taken, a new
// connection takes the slot of the oldest one still waiting for its request
// (else of the oldest already answered; while every one is writing its
// answer, it waits for one to finish), so clients that connect and send
// nothing, or drip their request a byte at a time, push each other out
// instead of locking out a scraper, whose request comes with its connect.
class metrics_server {
 public:
  static constexpr std::size_t max_request_head = 8 * 1024;
  static constexpr std::size_t max_connections = 16;
  static constexpr std::chrono::steady_clock::duration default_connection_deadline =
      std::chrono::seconds(5);

  metrics_server(boost::asio::io_context& io, const std::string& host, std::uint16_t port,
                 std::function<std::string()> render);
  // Stops serving; connections still open are closed. Destroy it before the
  // io_context it was given.
  ~metrics_server();
  metrics_server(const metrics_server&) = delete;
  metrics_server& operator=(const metrics_server&) = delete;

  // Binds and starts the accept loop on the io_context. Throws
  // boost::system::system_error naming host:port when the address does not
  // resolve or cannot be bound.
  void start();
  // The bound port (the one chosen when constructed with port 0); 0 before
  // start().
  std::uint16_t port() const;
  // Closes the listener and every open connection; render is not called
  // again. Idempotent.
  void stop();

  // Time a connection may take from accept to close. Set before start().
  void set_connection_deadline(std::chrono::steady_clock::duration d);
  // Told when the listener's or a connection's coroutine dies of an
  // exception (it is never silent). Set before start().
  void set_failure_report(failure_report report);

 private:
  struct shared_state;
  boost::asio::io_context& io_;
  std::string host_;
  std::uint16_t requested_port_;
  // Shared with the running coroutines, which may outlive this object by a
  // turn of the loop after stop().
  std::shared_ptr<shared_state> state_;
};

} // namespace bs_router
