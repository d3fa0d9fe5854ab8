#include "amqp_connection_state.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

// The connection's thread: the only code that touches rabbitmq-c.

namespace bs_router {

using namespace amqp_detail;

void amqp_connection::state::loop_until_stopped() {
  for (;;) {
    std::function<void()> work;
    int fd = -1;
    {
      std::lock_guard lock(mutex);
      if (stopping) break;
      if (!requests.empty()) {
        work = std::move(requests.front());
        requests.pop_front();
      }
      fd = sockfd;
    }
    if (work) {
      work();
      continue;
    }
    const bool buffered = connected && (amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn));
    if (!buffered) {
      pollfd fds[2] = {{wake[0], POLLIN, 0}, {connected ? fd : -1, POLLIN, 0}};
      ::poll(fds, 2, connected ? static_cast<int>(poll_interval().count()) : -1);
      char drain[64];
      while (::read(wake[0], drain, sizeof drain) > 0) {
      }
    }
    if (connected) {
      try {
        read_frames();
      } catch (const thread_failure& f) {
        teardown(f);
      }
    }
  }
  teardown(thread_failure{amqp_errc::not_open, "closed", true});
  std::lock_guard lock(mutex);
  ::close(wake[0]);
  ::close(wake[1]);
  wake[0] = wake[1] = -1;
}

std::chrono::milliseconds amqp_connection::state::poll_interval() const {
  // rabbitmq-c sends a heartbeat from its read calls once one is due.
  if (settings.heartbeat.count() == 0) return longest_poll;
  return std::clamp(std::chrono::milliseconds(settings.heartbeat) / 4, std::chrono::milliseconds{100},
                    longest_poll);
}

// The connection is unusable: close the socket, fail what waits for a
// confirm, and tell the loop.
void amqp_connection::state::teardown(const thread_failure& f) {
  if (conn == nullptr) return;
  {
    std::lock_guard lock(mutex);
    sockfd = -1;
  }
  amqp_destroy_connection(conn); // closes the socket
  conn = nullptr;
  connected = false;
  for (auto& u : unconfirmed_publishes) fail(u.waiter, f);
  unconfirmed_publishes.clear();
  to_loop([self = shared_from_this(), f] { self->mark_broken(f.code, f.detail); });
}

void amqp_connection::state::require_connected(const char* what) const {
  if (!connected) throw thread_failure{amqp_errc::not_open, what, true};
}

std::string amqp_connection::state::connect_all() {
  std::string failures;
  for (const amqp_uri& uri : settings.uris) {
    try {
      connect(uri);
      return uri.redacted();
    } catch (const thread_failure& f) {
      if (conn) {
        amqp_destroy_connection(conn);
        conn = nullptr;
      }
      {
        std::lock_guard lock(mutex);
        sockfd = -1;
        if (stopping) throw thread_failure{amqp_errc::not_open, "closed", true};
      }
      if (!failures.empty()) failures += "; ";
      failures += uri.redacted() + ": " + f.detail;
      if (settings.uris.size() == 1) throw thread_failure{f.code, failures, true};
    }
  }
  throw thread_failure{amqp_errc::connection_failed, failures, true};
}

void amqp_connection::state::connect(const amqp_uri& uri) {
  conn = amqp_new_connection();
  if (conn == nullptr) throw thread_failure{amqp_errc::connection_failed, "out of memory", true};
  amqp_socket_t* socket = nullptr;
  if (uri.tls) {
    socket = amqp_ssl_socket_new(conn);
    if (socket == nullptr) throw thread_failure{amqp_errc::connection_failed, "cannot create a TLS socket", true};
    amqp_ssl_socket_set_verify_peer(socket, 1);
    amqp_ssl_socket_set_verify_hostname(socket, 1);
    std::string ca = settings.ca_file;
    if (ca.empty())
      for (const char* candidate : system_ca_files)
        if (::access(candidate, R_OK) == 0) {
          ca = candidate;
          break;
        }
    if (!ca.empty()) {
      const int status = amqp_ssl_socket_set_cacert(socket, ca.c_str());
      if (status != AMQP_STATUS_OK) throw library_failure("reading CA bundle " + ca, status);
    }
  } else {
    socket = amqp_tcp_socket_new(conn);
    if (socket == nullptr) throw thread_failure{amqp_errc::connection_failed, "cannot create a socket", true};
  }
  const timeval timeout = to_timeval(settings.operation_timeout);
  const int opened = amqp_socket_open_noblock(socket, uri.host.c_str(), uri.port, &timeout);
  if (opened != AMQP_STATUS_OK) throw library_failure(uri.tls ? "TLS connect" : "connect", opened);
  {
    std::lock_guard lock(mutex);
    sockfd = amqp_get_sockfd(conn);
    if (stopping) throw thread_failure{amqp_errc::not_open, "closed", true};
  }
  amqp_set_rpc_timeout(conn, &timeout);
  amqp_set_handshake_timeout(conn, &timeout);

  // Without this capability the broker would never say that it cancelled
  // our consumer (its queue deleted): the router would wait for ever.
  amqp_table_entry_t capabilities[1];
  capabilities[0].key = amqp_cstring_bytes("consumer_cancel_notify");
  capabilities[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  capabilities[0].value.value.boolean = 1;
  amqp_table_entry_t properties[2];
  properties[0].key = amqp_cstring_bytes("product");
  properties[0].value.kind = AMQP_FIELD_KIND_UTF8;
  properties[0].value.value.bytes = amqp_cstring_bytes("bs_router");
  properties[1].key = amqp_cstring_bytes("capabilities");
  properties[1].value.kind = AMQP_FIELD_KIND_TABLE;
  properties[1].value.value.table = amqp_table_t{1, capabilities};
  const amqp_table_t client_properties{2, properties};
  const amqp_rpc_reply_t login = amqp_login_with_properties(
      conn, uri.vhost.c_str(), 0, frame_max, static_cast<int>(settings.heartbeat.count()), &client_properties,
      AMQP_SASL_METHOD_PLAIN, uri.user.c_str(), uri.password.c_str());
  check_reply(login, "login");

  amqp_channel_open(conn, channel);
  check_reply(amqp_get_rpc_reply(conn), "channel.open");
  amqp_confirm_select(conn, channel);
  check_reply(amqp_get_rpc_reply(conn), "confirm.select");
  connected = true;
  next_publish_seq = 1;
}

// The next frame within `limit` (a delivery's header and body follow its
// method; they are on their way).
void amqp_connection::state::wait_frame(amqp_frame_t& frame, std::chrono::steady_clock::time_point deadline, const char* what) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  timeval timeout = to_timeval(left);
  const int status = amqp_simple_wait_frame_noblock(conn, &frame, &timeout);
  if (status != AMQP_STATUS_OK) throw library_failure(what, status);
}

// A content header and its body frames, the body kept only up to `keep`
// bytes: what the broker announces never sizes a buffer.
amqp_connection::state::content amqp_connection::state::read_content(std::size_t keep, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + settings.operation_timeout;
  content c;
  amqp_frame_t frame;
  wait_frame(frame, deadline, what);
  if (frame.frame_type != AMQP_FRAME_HEADER || frame.channel != channel)
    throw thread_failure{amqp_errc::protocol_error, std::string(what) + ": expected a content header", true};
  c.body_size = frame.payload.properties.body_size;
  const auto* p = static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded);
  if (p != nullptr) {
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
      c.has_message_id = true;
      c.message_id = string_of(p->message_id);
    }
    if (p->_flags & AMQP_BASIC_REPLY_TO_FLAG) c.reply_to = string_of(p->reply_to);
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) c.correlation_id = string_of(p->correlation_id);
  }
  c.too_large = c.body_size > keep;
  if (!c.too_large) c.body.reserve(static_cast<std::size_t>(c.body_size));
  std::uint64_t got = 0;
  while (got < c.body_size) {
    wait_frame(frame, deadline, what);
    if (frame.frame_type != AMQP_FRAME_BODY || frame.channel != channel)
      throw thread_failure{amqp_errc::protocol_error, std::string(what) + ": expected a body frame", true};
    const auto& fragment = frame.payload.body_fragment;
    got += fragment.len;
    if (got > c.body_size)
      throw thread_failure{amqp_errc::protocol_error, std::string(what) + ": body longer than announced", true};
    if (!c.too_large) c.body.append(static_cast<const char*>(fragment.bytes), fragment.len);
  }
  return c;
}

void amqp_connection::state::read_frames() {
  for (int i = 0; i < frames_per_round && connected; ++i) {
    amqp_frame_t frame;
    timeval zero{0, 0};
    const int status = amqp_simple_wait_frame_noblock(conn, &frame, &zero);
    if (status == AMQP_STATUS_TIMEOUT) break;
    if (status != AMQP_STATUS_OK) throw library_failure("reading", status);
    dispatch(frame);
  }
  if (connected) amqp_maybe_release_buffers(conn);
}

void amqp_connection::state::dispatch(const amqp_frame_t& frame) {
  if (frame.frame_type != AMQP_FRAME_METHOD)
    throw thread_failure{amqp_errc::protocol_error, "content outside a message", true};
  const amqp_method_t& method = frame.payload.method;
  switch (method.id) {
    case AMQP_BASIC_DELIVER_METHOD: {
      const auto* m = static_cast<const amqp_basic_deliver_t*>(method.decoded);
      amqp_delivery d;
      d.delivery_tag = m->delivery_tag;
      d.redelivered = m->redelivered != 0;
      content c = read_content(settings.max_body_bytes, "basic.deliver");
      d.body = std::move(c.body);
      d.body_size = c.body_size;
      d.body_too_large = c.too_large;
      d.has_message_id = c.has_message_id;
      d.message_id = std::move(c.message_id);
      d.reply_to = std::move(c.reply_to);
      d.correlation_id = std::move(c.correlation_id);
      to_loop([self = shared_from_this(), d = std::move(d)]() mutable {
        if (self->broken) return;
        self->deliveries.push_back(std::move(d));
        if (self->arrival_waker) self->arrival_waker->cancel();
      });
      return;
    }
    case AMQP_BASIC_RETURN_METHOD: {
      const auto* m = static_cast<const amqp_basic_return_t*>(method.decoded);
      const std::string text = std::to_string(m->reply_code) + " " + loggable(string_of(m->reply_text), max_broker_text);
      const content c = read_content(0, "basic.return");
      // The broker returns a message before it confirms it.
      for (auto& u : unconfirmed_publishes)
        if (!u.returned && u.message_id == c.message_id) {
          u.returned = true;
          u.return_text = text;
          break;
        }
      return;
    }
    case AMQP_BASIC_ACK_METHOD: {
      const auto* m = static_cast<const amqp_basic_ack_t*>(method.decoded);
      settle_confirms(m->delivery_tag, m->multiple != 0, true);
      return;
    }
    case AMQP_BASIC_NACK_METHOD: {
      const auto* m = static_cast<const amqp_basic_nack_t*>(method.decoded);
      settle_confirms(m->delivery_tag, m->multiple != 0, false);
      return;
    }
    case AMQP_BASIC_CANCEL_METHOD:
      throw thread_failure{amqp_errc::cancelled, "basic.cancel: the broker ended the consumer", true};
    case AMQP_CHANNEL_CLOSE_METHOD: {
      const auto* m = static_cast<const amqp_channel_close_t*>(method.decoded);
      throw thread_failure{amqp_errc::closed_by_broker,
                           "channel closed: " + std::to_string(m->reply_code) + " " +
                               loggable(string_of(m->reply_text), max_broker_text),
                           true};
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
      const auto* m = static_cast<const amqp_connection_close_t*>(method.decoded);
      throw thread_failure{amqp_errc::closed_by_broker,
                           "connection closed: " + std::to_string(m->reply_code) + " " +
                               loggable(string_of(m->reply_text), max_broker_text),
                           true};
    }
    default:
      return; // connection.blocked and the like: nothing to do
  }
}

void amqp_connection::state::settle_confirms(std::uint64_t tag, bool multiple, bool acked) {
  while (!unconfirmed_publishes.empty()) {
    auto& u = unconfirmed_publishes.front();
    if (u.seq > tag) break;
    if (multiple || u.seq == tag) {
      if (!acked) {
        // A channel that got a nack was seen to nack everything after (a
        // quorum queue whose leader died): the connection is given up.
        fail(u.waiter, thread_failure{amqp_errc::nacked, "message " + u.message_id, true});
      } else if (u.returned) {
        fail(u.waiter, thread_failure{amqp_errc::returned, u.return_text, false});
      } else {
        complete(u.waiter, none{});
      }
      unconfirmed_publishes.pop_front();
      if (!multiple) return;
    } else {
      unconfirmed_publishes.pop_front(); // older than an ack for one: cannot be
    }
  }
}

} // namespace bs_router
