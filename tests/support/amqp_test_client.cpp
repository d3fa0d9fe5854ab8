#include "support/amqp_test_client.hpp"

#include "support/wait.hpp"

#include <stdexcept>
#include <sys/time.h>

namespace bs_router::testing {

namespace {

constexpr amqp_channel_t channel = 1;

timeval to_timeval(std::chrono::milliseconds d) {
  return timeval{static_cast<time_t>(d.count() / 1000), static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

amqp_bytes_t bytes_of(const std::string& s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

std::string string_of(amqp_bytes_t b) { return std::string(static_cast<const char*>(b.bytes), b.len); }

amqp_table_entry_t string_entry(const char* key, const char* value) {
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes(key);
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = amqp_cstring_bytes(value);
  return e;
}

amqp_table_entry_t bool_entry(const char* key, bool value) {
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes(key);
  e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  e.value.value.boolean = value;
  return e;
}

} // namespace

amqp_test_client::amqp_test_client(std::uint16_t port, std::chrono::milliseconds timeout) : timeout_(timeout) {
  conn_ = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn_);
  const timeval tv = to_timeval(timeout_);
  if (socket == nullptr || amqp_socket_open_noblock(socket, "127.0.0.1", port, &tv) != AMQP_STATUS_OK) {
    amqp_destroy_connection(conn_);
    throw std::runtime_error("amqp_test_client: cannot connect to 127.0.0.1:" + std::to_string(port));
  }
  amqp_set_rpc_timeout(conn_, &tv);
  amqp_set_handshake_timeout(conn_, &tv);
  try {
    check(amqp_login(conn_, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
    open_channel();
  } catch (...) {
    amqp_destroy_connection(conn_);
    throw;
  }
}

amqp_test_client::~amqp_test_client() {
  amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn_);
}

void amqp_test_client::check(amqp_rpc_reply_t reply, const std::string& what) {
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) return;
  std::string detail;
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
    detail = amqp_error_string2(reply.library_error);
  } else if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* close = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
    detail = "channel closed " + std::to_string(close->reply_code) + " " + string_of(close->reply_text);
  } else if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* close = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
    detail = "connection closed " + std::to_string(close->reply_code) + " " + string_of(close->reply_text);
  } else {
    detail = "server error";
  }
  throw std::runtime_error("amqp_test_client: " + what + ": " + detail);
}

void amqp_test_client::open_channel() {
  amqp_channel_open(conn_, channel);
  check(amqp_get_rpc_reply(conn_), "channel.open");
  amqp_confirm_select(conn_, channel);
  check(amqp_get_rpc_reply(conn_), "confirm.select");
}

void amqp_test_client::declare_quorum_queue(const std::string& name, bool single_active_consumer) {
  amqp_table_entry_t entries[] = {string_entry("x-queue-type", "quorum"),
                                  bool_entry("x-single-active-consumer", true)};
  amqp_queue_declare(conn_, channel, bytes_of(name), 0, 1, 0, 0,
                     amqp_table_t{single_active_consumer ? 2 : 1, entries});
  check(amqp_get_rpc_reply(conn_), "queue.declare " + name);
}

void amqp_test_client::declare_classic_queue(const std::string& name) {
  amqp_queue_declare(conn_, channel, bytes_of(name), 0, 1, 0, 0, amqp_empty_table);
  check(amqp_get_rpc_reply(conn_), "queue.declare " + name);
}

bool amqp_test_client::queue_exists(const std::string& name) {
  amqp_queue_declare(conn_, channel, bytes_of(name), 1, 0, 0, 0, amqp_empty_table);
  const amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn_);
  if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
      static_cast<amqp_channel_close_t*>(reply.reply.decoded)->reply_code == AMQP_NOT_FOUND) {
    amqp_channel_close_ok_t close_ok{};
    amqp_send_method(conn_, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
    open_channel();
    return false;
  }
  check(reply, "queue.declare passive " + name);
  return true;
}

std::uint32_t amqp_test_client::message_count(const std::string& name) {
  const auto* ok = amqp_queue_declare(conn_, channel, bytes_of(name), 1, 0, 0, 0, amqp_empty_table);
  check(amqp_get_rpc_reply(conn_), "queue.declare passive " + name);
  return ok->message_count;
}

void amqp_test_client::delete_queue(const std::string& name) {
  amqp_queue_delete(conn_, channel, bytes_of(name), 0, 0);
  check(amqp_get_rpc_reply(conn_), "queue.delete " + name);
}

void amqp_test_client::publish(const std::string& queue, const std::string& body, const std::string& message_id,
                               const std::string& reply_to) {
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = 2;
  if (!message_id.empty()) {
    props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    props.message_id = bytes_of(message_id);
  }
  if (!reply_to.empty()) {
    props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
    props.reply_to = bytes_of(reply_to);
  }
  if (amqp_basic_publish(conn_, channel, amqp_empty_bytes, bytes_of(queue), 1, 0, &props, bytes_of(body)) !=
      AMQP_STATUS_OK)
    throw std::runtime_error("amqp_test_client: basic.publish to " + queue + " failed");
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) throw std::runtime_error("amqp_test_client: no confirm for a publish to " + queue);
    timeval tv = to_timeval(left);
    amqp_frame_t frame;
    const int status = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
    if (status != AMQP_STATUS_OK) {
      if (status == AMQP_STATUS_TIMEOUT) continue;
      throw std::runtime_error(std::string("amqp_test_client: waiting for a confirm: ") + amqp_error_string2(status));
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) return;
    if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD)
      throw std::runtime_error("amqp_test_client: publish to " + queue + " nacked");
    if (frame.payload.method.id == AMQP_BASIC_RETURN_METHOD)
      throw std::runtime_error("amqp_test_client: publish to " + queue + " returned (no such queue)");
  }
}

std::optional<amqp_test_message> amqp_test_client::get(const std::string& queue) {
  const amqp_rpc_reply_t reply = amqp_basic_get(conn_, channel, bytes_of(queue), 1);
  check(reply, "basic.get " + queue);
  if (reply.reply.id != AMQP_BASIC_GET_OK_METHOD) return std::nullopt;
  const bool redelivered = static_cast<amqp_basic_get_ok_t*>(reply.reply.decoded)->redelivered;
  amqp_message_t message;
  check(amqp_read_message(conn_, channel, &message, 0), "reading a message of " + queue);
  amqp_test_message result;
  result.body = string_of(message.body);
  const amqp_basic_properties_t& p = message.properties;
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) result.message_id = string_of(p.message_id);
  if (p._flags & AMQP_BASIC_CORRELATION_ID_FLAG) result.correlation_id = string_of(p.correlation_id);
  if (p._flags & AMQP_BASIC_REPLY_TO_FLAG) result.reply_to = string_of(p.reply_to);
  if (p._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) result.delivery_mode = p.delivery_mode;
  result.redelivered = redelivered;
  amqp_destroy_message(&message);
  amqp_maybe_release_buffers(conn_);
  return result;
}

std::optional<amqp_test_message> amqp_test_client::wait_get(const std::string& queue,
                                                            std::chrono::milliseconds limit) {
  std::optional<amqp_test_message> result;
  wait_until([&] { return (result = get(queue)).has_value(); }, limit, std::chrono::milliseconds{20});
  return result;
}

} // namespace bs_router::testing
