#include "bs_router/metrics_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include "bs_router/async_event.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace bs_router {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr std::string_view metrics_path = "/metrics";
constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4";

// RFC 9110 token characters (methods, header names).
bool is_token_char(char c) {
  if (c >= '0' && c <= '9') return true;
  if (c >= 'a' && c <= 'z') return true;
  if (c >= 'A' && c <= 'Z') return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_token_char);
}

bool is_visible(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) > 0x20 && c != 0x7f; });
}

// Where the request head ends (just past its blank line), or npos. Bare LF
// line ends are accepted, as RFC 9112 allows. `from` skips what earlier
// calls already searched (looking back from a newline needs no new data).
std::size_t end_of_head(std::string_view data, std::size_t from) {
  for (std::size_t i = from; i < data.size(); ++i) {
    if (data[i] != '\n') continue;
    if (i >= 1 && data[i - 1] == '\n') return i + 1;
    if (i >= 2 && data[i - 1] == '\r' && data[i - 2] == '\n') return i + 1;
  }
  return std::string_view::npos;
}

struct request_line {
  std::string_view method;
  std::string_view target;
};

// Checks a whole request head (request line, header lines, blank line) and
// returns its request line, or nullopt when it is not HTTP/1.x.
std::optional<request_line> parse_request_head(std::string_view head) {
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    auto newline = head.find('\n');
    if (newline == std::string_view::npos) return std::nullopt;
    auto line = head.substr(0, newline);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    head.remove_prefix(newline + 1);
  }
  if (lines.size() < 2 || !lines.back().empty()) return std::nullopt;
  lines.pop_back();

  // method SP request-target SP HTTP/d.d
  std::string_view first = lines.front();
  auto space1 = first.find(' ');
  if (space1 == std::string_view::npos) return std::nullopt;
  auto space2 = first.find(' ', space1 + 1);
  if (space2 == std::string_view::npos) return std::nullopt;
  request_line request{first.substr(0, space1), first.substr(space1 + 1, space2 - space1 - 1)};
  std::string_view version = first.substr(space2 + 1);
  if (!is_token(request.method) || request.target.empty() || !is_visible(request.target))
    return std::nullopt;
  if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." || version[7] < '0' ||
      version[7] > '9')
    return std::nullopt;

  // name: value, no folded continuation lines, no control characters
  for (auto line = lines.begin() + 1; line != lines.end(); ++line) {
    auto colon = line->find(':');
    if (colon == std::string_view::npos || !is_token(line->substr(0, colon))) return std::nullopt;
    for (char c : line->substr(colon + 1)) {
      auto byte = static_cast<unsigned char>(c);
      if ((byte < 0x20 && c != '\t') || byte == 0x7f) return std::nullopt;
    }
  }
  return request;
}

std::string make_response(std::string_view status, std::string_view content_type,
                          std::string_view body, bool include_body,
                          std::string_view extra_headers = {}) {
  std::string out;
  out.reserve(160 + body.size());
  out += "HTTP/1.0 ";
  out += status;
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\nConnection: close\r\n";
  out += extra_headers;
  out += "\r\n";
  if (include_body) out += body;
  return out;
}

std::string error_response(std::string_view status, std::string_view extra_headers = {}) {
  std::string body(status);
  body += '\n';
  return make_response(status, "text/plain; charset=utf-8", body, true, extra_headers);
}

// One accepted client. The deadline timer closes the socket, which ends
// whatever read or write is pending.
struct http_connection {
  // What the connection waits for. Only a connection that is writing its
  // answer is never closed to make room for a new one.
  enum class phase {
    reading_request, // for the client's request head: nothing to lose
    writing,         // for the kernel to take the answer
    lingering,       // answered; for the client to close
  };

  http_connection(tcp::socket s, std::uint64_t accepted)
      : socket(std::move(s)), deadline(socket.get_executor()), serial(accepted) {}

  void close() noexcept {
    error_code ignored;
    if (socket.is_open()) {
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
    }
    deadline.cancel();
  }

  tcp::socket socket;
  asio::steady_timer deadline;
  const std::uint64_t serial; // accept order: lower is older
  phase state = phase::reading_request;
};

} // namespace

struct metrics_server::shared_state {
  shared_state(asio::io_context& io, std::function<std::string()> render_metrics)
      : acceptor(io), accept_pause(io), slot_changed(io.get_executor()),
        render(std::move(render_metrics)) {}

  awaitable<void> accept_loop(std::shared_ptr<shared_state> self);
  awaitable<void> serve(std::shared_ptr<shared_state> self,
                        std::shared_ptr<http_connection> connection);
  awaitable<std::string> answer(http_connection& connection);
  // Closes the connection a new one should replace when every slot is
  // taken; false when all of them are writing their answer.
  bool make_room();

  tcp::acceptor acceptor;
  asio::steady_timer accept_pause;
  // Notified when a connection has written its answer, or has left.
  async_event slot_changed;
  std::function<std::string()> render;
  std::chrono::steady_clock::duration connection_deadline = default_connection_deadline;
  // The open connections; one closed to make room leaves at once, though its
  // coroutine ends a turn of the loop later.
  std::unordered_set<std::shared_ptr<http_connection>> connections;
  std::uint64_t accepted = 0;
  std::uint16_t bound_port = 0;
  bool stopped = false;
  failure_report report;
};

awaitable<void> metrics_server::shared_state::accept_loop(std::shared_ptr<shared_state> self) {
  while (!stopped) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopped || ec == asio::error::operation_aborted) break;
    if (ec) {
      // Out of descriptors (EMFILE) and the like fail every accept at once:
      // pause instead of spinning, and keep serving once they are back.
      accept_pause.expires_after(std::chrono::milliseconds(100));
      error_code ignored;
      co_await accept_pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      continue;
    }
    // While every connection is writing its answer (the kernel takes it at
    // once; the coroutine resumes a turn later), wait for one to finish
    // rather than turn the newcomer away. Each is bounded by its deadline.
    while (!stopped && connections.size() >= max_connections && !make_room())
      co_await slot_changed.wait();
    if (stopped) break;
    auto connection = std::make_shared<http_connection>(std::move(socket), ++accepted);
    connections.insert(connection);
    asio::co_spawn(acceptor.get_executor(), serve(self, std::move(connection)),
                   report_failure(report, "metrics connection"));
  }
}

// The newcomer takes the slot of the oldest connection still waiting for its
// request, else of the oldest answered one. Clients that hold connections
// open without asking (or without leaving) thus push each other out, and a
// scraper, whose request follows its connect at once, is served unless
// max_connections newer connections come in before its request does. The
// listener never holds more than max_connections sockets, so no number of
// them can use up the router's descriptors.
bool metrics_server::shared_state::make_room() {
  std::shared_ptr<http_connection> victim;
  auto rank = [](const http_connection& c) {
    return c.state == http_connection::phase::reading_request ? 0 : 1;
  };
  for (const auto& c : connections) {
    if (c->state == http_connection::phase::writing) continue;
    if (!victim || std::pair(rank(*c), c->serial) < std::pair(rank(*victim), victim->serial))
      victim = c;
  }
  if (!victim) return false;
  victim->close();
  connections.erase(victim);
  return true;
}

awaitable<void> metrics_server::shared_state::serve(std::shared_ptr<shared_state> self,
                                                    std::shared_ptr<http_connection> connection) {
  connection->deadline.expires_after(connection_deadline);
  connection->deadline.async_wait([weak = std::weak_ptr(connection)](error_code ec) {
    if (ec) return; // cancelled: the connection finished in time
    if (auto c = weak.lock()) c->close();
  });

  std::string response = co_await answer(*connection);
  error_code ec;
  if (!response.empty() && !stopped && connection->socket.is_open()) {
    connection->state = http_connection::phase::writing;
    co_await asio::async_write(connection->socket, asio::buffer(response),
                               asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!ec && !stopped && connection->socket.is_open()) {
    connection->state = http_connection::phase::lingering;
    slot_changed.notify();
    // Closing with unread input makes the kernel send a reset, which can
    // destroy the response before the client reads it (a 400 for a head
    // still arriving). So: end our side, then read until the client closes
    // or the deadline closes for it.
    connection->socket.shutdown(tcp::socket::shutdown_send, ec);
    std::array<char, 1024> discard;
    while (!ec) {
      co_await connection->socket.async_read_some(asio::buffer(discard),
                                                  asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  connection->close();
  self->connections.erase(connection);
  slot_changed.notify();
}

// Reads the request head and returns the whole response, or "" when the
// client went away (or the deadline passed) before sending anything.
awaitable<std::string> metrics_server::shared_state::answer(http_connection& connection) {
  std::string head;
  std::size_t searched = 0;
  std::size_t head_size = std::string::npos;
  std::array<char, 1024> chunk;
  while (head_size == std::string::npos) {
    if (head.size() > max_request_head) co_return error_response("400 Bad Request");
    // One byte past the limit is enough to know it was passed.
    std::size_t room = std::min(chunk.size(), max_request_head + 1 - head.size());
    error_code ec;
    std::size_t n = co_await connection.socket.async_read_some(
        asio::buffer(chunk.data(), room), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      // A truncated head that ended with the client's side of the
      // connection still deserves an answer; a deadline or reset does not.
      if (ec == asio::error::eof && !head.empty()) co_return error_response("400 Bad Request");
      co_return std::string();
    }
    head.append(chunk.data(), n);
    head_size = end_of_head(head, searched);
    searched = head.size();
  }
  if (head_size > max_request_head) co_return error_response("400 Bad Request");

  auto request = parse_request_head(std::string_view(head).substr(0, head_size));
  if (!request) co_return error_response("400 Bad Request");
  bool is_head = request->method == "HEAD";
  if (request->method != "GET" && !is_head)
    co_return error_response("405 Method Not Allowed", "Allow: GET, HEAD\r\n");
  std::string_view path = request->target.substr(0, request->target.find('?'));
  if (path != metrics_path) co_return error_response("404 Not Found");

  if (stopped) co_return std::string(); // render may refer to what is being torn down
  std::string body;
  try {
    body = render();
  } catch (const std::exception&) {
    co_return error_response("500 Internal Server Error");
  }
  co_return make_response("200 OK", metrics_content_type, body, !is_head);
}

metrics_server::metrics_server(asio::io_context& io, const std::string& host, std::uint16_t port,
                               std::function<std::string()> render)
    : io_(io), host_(host), requested_port_(port),
      state_(std::make_shared<shared_state>(io, std::move(render))) {}

metrics_server::~metrics_server() { stop(); }

void metrics_server::set_connection_deadline(std::chrono::steady_clock::duration d) {
  state_->connection_deadline = d;
}

void metrics_server::set_failure_report(failure_report report) { state_->report = std::move(report); }

void metrics_server::start() {
  std::string where = host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_;
  where += ':' + std::to_string(requested_port_);

  tcp::resolver resolver(io_);
  error_code ec;
  auto endpoints = resolver.resolve(host_, std::to_string(requested_port_),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec) throw boost::system::system_error(ec, "metrics_listen " + where);

  tcp::acceptor& acceptor = state_->acceptor;
  if (endpoints.empty()) ec = asio::error::host_not_found;
  for (const auto& entry : endpoints) {
    error_code ignored;
    acceptor.close(ignored);
    acceptor.open(entry.endpoint().protocol(), ec);
    if (ec) continue;
    // A restarted router must not wait for the old sockets' TIME_WAIT.
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(entry.endpoint(), ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) break;
  }
  if (ec) {
    error_code ignored;
    acceptor.close(ignored);
    throw boost::system::system_error(ec, "metrics_listen " + where);
  }

  state_->bound_port = acceptor.local_endpoint().port();
  state_->stopped = false;
  asio::co_spawn(io_, state_->accept_loop(state_), report_failure(state_->report, "metrics listener"));
}

std::uint16_t metrics_server::port() const { return state_->bound_port; }

void metrics_server::stop() {
  shared_state& state = *state_;
  state.stopped = true;
  error_code ignored;
  state.acceptor.close(ignored);
  state.accept_pause.cancel();
  state.slot_changed.notify();
  // Closing ends each connection's pending operation; its coroutine then
  // removes it from the set, on a later turn of the loop.
  for (const auto& connection : state.connections) connection->close();
}

} // namespace bs_router
