#pragma once
// A blocking AMQP client for tests, on rabbitmq-c's synchronous calls with
// timeouts: the controller's side of a test (publish a job, read a reply)
// and checks of the broker's state, independent of the router's own
// asynchronous client. Every call throws std::runtime_error on failure.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "bs_router/rabbitmq_c.hpp"

namespace bs_router::testing {

struct amqp_test_message {
  std::string body;
  std::string message_id;
  std::string correlation_id;
  std::string reply_to;
  bool redelivered = false;
  std::uint8_t delivery_mode = 0;
};

class amqp_test_client {
 public:
  // guest/guest on 127.0.0.1:`port`, channel 1 with publisher confirms.
  explicit amqp_test_client(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds{30});
  ~amqp_test_client();
  amqp_test_client(const amqp_test_client&) = delete;
  amqp_test_client& operator=(const amqp_test_client&) = delete;

  // A durable quorum queue; with `single_active_consumer` as the router
  // declares its queue (basic.get is refused on such a queue).
  void declare_quorum_queue(const std::string& name, bool single_active_consumer = false);
  void declare_classic_queue(const std::string& name);
  // passive queue.declare: whether it exists (a 404 closes the channel; it is opened again).
  bool queue_exists(const std::string& name);
  std::uint32_t message_count(const std::string& name);
  void delete_queue(const std::string& name);
  // Publishes to the default exchange and waits for the broker's confirm.
  void publish(const std::string& queue, const std::string& body, const std::string& message_id = {},
               const std::string& reply_to = {});
  // basic.get with auto-ack: nullopt when the queue is empty.
  std::optional<amqp_test_message> get(const std::string& queue);
  // Polls get() until a message comes or `limit` passes.
  std::optional<amqp_test_message> wait_get(const std::string& queue,
                                            std::chrono::milliseconds limit = std::chrono::seconds{30});

 private:
  void check(amqp_rpc_reply_t reply, const std::string& what);
  void open_channel();

  amqp_connection_state_t conn_ = nullptr;
  std::chrono::milliseconds timeout_;
};

} // namespace bs_router::testing
