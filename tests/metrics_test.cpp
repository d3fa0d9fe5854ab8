#include "bs_router/metrics.hpp"
#include "bs_router/metrics_server.hpp"

#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include "support/wait.hpp"

#include <arpa/inet.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace asio = boost::asio;
using bs_router::metrics;
using bs_router::metrics_server;
using bs_router::testing::wait_until;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// Every wait in these tests is bounded by this, so a bug fails instead of hanging.
constexpr auto generous_bound = 30s;

bool contains_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

// ---------------------------------------------------------------------------
// render()

TEST(MetricsRender, FreshMetricsListEverySeriesAtZero) {
  metrics m("1.2.3", 1700000000.5);
  EXPECT_EQ(m.render(),
            "# HELP bs_router_jobs_total Jobs finished, by outcome.\n"
            "# TYPE bs_router_jobs_total counter\n"
            "bs_router_jobs_total{outcome=\"ok\"} 0\n"
            "bs_router_jobs_total{outcome=\"failed\"} 0\n"
            "bs_router_jobs_total{outcome=\"bad_input\"} 0\n"
            "bs_router_jobs_total{outcome=\"start_failed\"} 0\n"
            "bs_router_jobs_total{outcome=\"timed_out\"} 0\n"
            "bs_router_jobs_total{outcome=\"killed\"} 0\n"
            "bs_router_jobs_total{outcome=\"interrupted\"} 0\n"
            "# HELP bs_router_job_duration_seconds Time cbsd took for finished jobs that ran it.\n"
            "# TYPE bs_router_job_duration_seconds histogram\n"
            "bs_router_job_duration_seconds_bucket{le=\"0.1\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"0.5\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"1\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"5\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"15\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"60\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"300\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"900\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"3600\"} 0\n"
            "bs_router_job_duration_seconds_bucket{le=\"+Inf\"} 0\n"
            "bs_router_job_duration_seconds_sum 0\n"
            "bs_router_job_duration_seconds_count 0\n"
            "# HELP bs_router_jobs_running Jobs whose cbsd is running.\n"
            "# TYPE bs_router_jobs_running gauge\n"
            "bs_router_jobs_running 0\n"
            "# HELP bs_router_jobs_waiting Jobs held in the router, waiting for their jname or a free slot.\n"
            "# TYPE bs_router_jobs_waiting gauge\n"
            "bs_router_jobs_waiting 0\n"
            "# HELP bs_router_replies_waiting Replies not yet put on the broker.\n"
            "# TYPE bs_router_replies_waiting gauge\n"
            "bs_router_replies_waiting 0\n"
            "# HELP bs_router_broker_connected 1 while connected to beanstalkd, 0 otherwise.\n"
            "# TYPE bs_router_broker_connected gauge\n"
            "bs_router_broker_connected 0\n"
            "# HELP bs_router_reconnects_total Connections to beanstalkd made again after one was lost.\n"
            "# TYPE bs_router_reconnects_total counter\n"
            "bs_router_reconnects_total 0\n"
            "# HELP bs_router_jobs_reserved_elsewhere Jobs of the pool's tube the broker keeps reserved for a connection that is not the router's (at the last look).\n"
            "# TYPE bs_router_jobs_reserved_elsewhere gauge\n"
            "bs_router_jobs_reserved_elsewhere 0\n"
            "# HELP bs_router_jobs_taken_over_total Jobs the broker kept reserved past their TTR for another connection, served by the router from their body.\n"
            "# TYPE bs_router_jobs_taken_over_total counter\n"
            "bs_router_jobs_taken_over_total 0\n"
            "# HELP bs_router_journal_syncs_total Times the journal was made durable (one fdatasync, or a rewrite, for every job that moved meanwhile).\n"
            "# TYPE bs_router_journal_syncs_total counter\n"
            "bs_router_journal_syncs_total 0\n"
            "# HELP bs_router_journal_sync_seconds_total Time spent making the journal durable, during which the router waited for the disk.\n"
            "# TYPE bs_router_journal_sync_seconds_total counter\n"
            "bs_router_journal_sync_seconds_total 0\n"
            "# HELP bs_router_info Version of this router; always 1.\n"
            "# TYPE bs_router_info gauge\n"
            "bs_router_info{version=\"1.2.3\"} 1\n"
            "# HELP bs_router_start_time_seconds When this router started, in seconds since the Unix epoch.\n"
            "# TYPE bs_router_start_time_seconds gauge\n"
            "bs_router_start_time_seconds 1700000000.5\n");
}

TEST(MetricsRender, CountsJobsByOutcome) {
  metrics m("1", 0);
  m.job_finished("ok", 1);
  m.job_finished("ok", 2);
  m.job_finished("failed", 3);
  m.job_finished("bad_input", -1);
  m.job_finished("interrupted", -1);
  m.job_finished("timed_out", 60);
  std::string text = m.render();
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_total{outcome=\"ok\"} 2")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_total{outcome=\"failed\"} 1")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_total{outcome=\"bad_input\"} 1")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_total{outcome=\"start_failed\"} 0")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_total{outcome=\"timed_out\"} 1")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_total{outcome=\"killed\"} 0")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_total{outcome=\"interrupted\"} 1")) << text;
  // Only the four jobs that ran are in the histogram.
  EXPECT_TRUE(contains_line(text, "bs_router_job_duration_seconds_count 4")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_job_duration_seconds_sum 66")) << text;
}

TEST(MetricsRender, HistogramBucketsAreCumulativeAndInclusive) {
  metrics m("1", 0);
  // Exactly representable values, so the sum is exact too.
  for (double seconds : {0.0625, 0.5, 2.0, 100.0, 5000.0, 0.0}) m.job_finished("ok", seconds);
  std::string text = m.render();
  const char* expected[] = {
      "bs_router_job_duration_seconds_bucket{le=\"0.1\"} 2",
      "bs_router_job_duration_seconds_bucket{le=\"0.5\"} 3", // a bound is inclusive
      "bs_router_job_duration_seconds_bucket{le=\"1\"} 3",
      "bs_router_job_duration_seconds_bucket{le=\"5\"} 4",
      "bs_router_job_duration_seconds_bucket{le=\"15\"} 4",
      "bs_router_job_duration_seconds_bucket{le=\"60\"} 4",
      "bs_router_job_duration_seconds_bucket{le=\"300\"} 5",
      "bs_router_job_duration_seconds_bucket{le=\"900\"} 5",
      "bs_router_job_duration_seconds_bucket{le=\"3600\"} 5",
      "bs_router_job_duration_seconds_bucket{le=\"+Inf\"} 6",
      "bs_router_job_duration_seconds_sum 5102.5625",
      "bs_router_job_duration_seconds_count 6",
  };
  for (const char* line : expected) EXPECT_TRUE(contains_line(text, line)) << line << "\n" << text;
}

TEST(MetricsRender, GaugesShowTheLastValueSet) {
  metrics m("1", 0);
  m.set_jobs_running(3);
  m.set_jobs_running(2);
  m.set_jobs_waiting(7);
  m.set_replies_waiting(4);
  m.set_broker_connected(true);
  m.reconnect();
  m.reconnect();
  std::string text = m.render();
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_running 2")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_jobs_waiting 7")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_replies_waiting 4")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_broker_connected 1")) << text;
  EXPECT_TRUE(contains_line(text, "bs_router_reconnects_total 2")) << text;

  m.set_broker_connected(false);
  EXPECT_TRUE(contains_line(m.render(), "bs_router_broker_connected 0"));
}

TEST(MetricsRender, VersionLabelIsEscaped) {
  metrics m("a\"b\\c\nd", 0);
  EXPECT_TRUE(contains_line(m.render(), "bs_router_info{version=\"a\\\"b\\\\c\\nd\"} 1"))
      << m.render();
}

TEST(MetricsRender, DefaultVersionIsThisBuildsAndStartTimeIsNow) {
  auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch());
  metrics m;
  std::string text = m.render();
  EXPECT_TRUE(contains_line(text, std::string("bs_router_info{version=\"") + BS_ROUTER_VERSION +
                                      "\"} 1"))
      << text;
  auto at = text.find("\nbs_router_start_time_seconds ");
  ASSERT_NE(at, std::string::npos);
  double start = std::stod(text.substr(at + 30));
  EXPECT_NEAR(start, now.count(), 60);
}

TEST(MetricsRender, UnknownOutcomeIsRefused) {
  metrics m("1", 0);
  EXPECT_THROW(m.job_finished("fine", 1), std::invalid_argument);
  EXPECT_TRUE(contains_line(m.render(), "bs_router_job_duration_seconds_count 0"));
}

// ---------------------------------------------------------------------------
// metrics_server over real sockets

// A blocking loopback client on plain POSIX sockets, every wait bounded by poll.
class http_test_client {
 public:
  explicit http_test_client(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect failed");
    }
  }
  ~http_test_client() { ::close(fd_); }
  http_test_client(const http_test_client&) = delete;
  http_test_client& operator=(const http_test_client&) = delete;

  // false when the server already closed (EPIPE, ECONNRESET).
  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Half-close: the server reads end of input, the client can still read.
  void finish_sending() { ::shutdown(fd_, SHUT_WR); }

  // True once the server has closed this connection (end of input or a
  // reset is waiting to be read); never waits. Whatever the server sent
  // before closing is discarded.
  bool closed_by_server() {
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, 0);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
      if (n <= 0) return true;
    }
  }

  // Everything the server sends until it closes (a reset counts as closed),
  // or nullopt if it is still open after `bound`.
  std::optional<std::string> read_until_closed(clock_type::duration bound = generous_bound) {
    std::string received;
    auto give_up = clock_type::now() + bound;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - clock_type::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return std::nullopt;
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return received;
      received.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_ = -1;
};

struct http_response {
  std::string status_line;
  std::vector<std::string> headers;
  std::string body;

  bool has_header(const std::string& line) const {
    for (const auto& h : headers)
      if (h == line) return true;
    return false;
  }
};

http_response parse_response(const std::string& raw) {
  http_response response;
  auto head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    response.status_line = raw;
    return response;
  }
  std::string head = raw.substr(0, head_end + 2);
  response.body = raw.substr(head_end + 4);
  auto line_end = head.find("\r\n");
  response.status_line = head.substr(0, line_end);
  for (auto at = line_end + 2; at < head.size();) {
    auto next = head.find("\r\n", at);
    response.headers.push_back(head.substr(at, next - at));
    at = next + 2;
  }
  return response;
}

// A metrics_server on 127.0.0.1, port 0, with its loop on a thread of its own.
class running_server {
 public:
  explicit running_server(std::function<std::string()> render,
                          clock_type::duration connection_deadline =
                              metrics_server::default_connection_deadline)
      : server_(io_, "127.0.0.1", 0, std::move(render)) {
    server_.set_connection_deadline(connection_deadline);
    server_.start();
    loop_ = std::thread([this] { io_.run_for(generous_bound); });
  }
  ~running_server() {
    asio::post(io_, [this] { server_.stop(); });
    loop_.join();
  }

  std::uint16_t port() const { return server_.port(); }

  http_response exchange(std::string_view request) {
    http_test_client client(port());
    client.send(request);
    auto raw = client.read_until_closed();
    if (!raw) {
      ADD_FAILURE() << "server did not close the connection";
      return {};
    }
    return parse_response(*raw);
  }

 private:
  asio::io_context io_;
  metrics_server server_;
  std::thread loop_;
};

std::function<std::string()> fixed_text(std::string text) {
  return [text] { return text; };
}

TEST(MetricsServer, ServesRenderOnGetMetrics) {
  metrics m("1.2.3", 1700000000);
  m.job_finished("ok", 0.25);
  m.set_broker_connected(true);
  running_server server([&m] { return m.render(); });
  ASSERT_NE(server.port(), 0);

  auto response = server.exchange("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(response.status_line, "HTTP/1.0 200 OK");
  EXPECT_TRUE(response.has_header("Content-Type: text/plain; version=0.0.4"));
  EXPECT_TRUE(response.has_header("Content-Length: " + std::to_string(m.render().size())));
  EXPECT_TRUE(response.has_header("Connection: close"));
  EXPECT_EQ(response.body, m.render());
}

TEST(MetricsServer, HeadGetsTheHeadersOnly) {
  running_server server(fixed_text("x 1\n"));
  auto response = server.exchange("HEAD /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(response.status_line, "HTTP/1.0 200 OK");
  EXPECT_TRUE(response.has_header("Content-Length: 4"));
  EXPECT_EQ(response.body, "");
}

TEST(MetricsServer, QueryStringIsIgnoredAndBareNewlinesAccepted) {
  running_server server(fixed_text("x 1\n"));
  auto response = server.exchange("GET /metrics?name[]=x HTTP/1.0\nUser-Agent: t\n\n");
  EXPECT_EQ(response.status_line, "HTTP/1.0 200 OK");
  EXPECT_EQ(response.body, "x 1\n");
}

TEST(MetricsServer, RequestArrivingByteByByteIsAnswered) {
  running_server server(fixed_text("x 1\n"));
  http_test_client client(server.port());
  for (char c : std::string("GET /metrics HTTP/1.0\r\nHost: a\r\n\r\n")) {
    ASSERT_TRUE(client.send(std::string_view(&c, 1)));
    std::this_thread::sleep_for(1ms);
  }
  auto raw = client.read_until_closed();
  ASSERT_TRUE(raw);
  EXPECT_EQ(parse_response(*raw).body, "x 1\n");
}

TEST(MetricsServer, OtherPathsAreNotFound) {
  running_server server(fixed_text("x 1\n"));
  EXPECT_EQ(server.exchange("GET / HTTP/1.0\r\n\r\n").status_line, "HTTP/1.0 404 Not Found");
  EXPECT_EQ(server.exchange("GET /metricsx HTTP/1.0\r\n\r\n").status_line,
            "HTTP/1.0 404 Not Found");
}

TEST(MetricsServer, OtherMethodsAreNotAllowed) {
  running_server server(fixed_text("x 1\n"));
  auto response = server.exchange("POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(response.status_line, "HTTP/1.0 405 Method Not Allowed");
  EXPECT_TRUE(response.has_header("Allow: GET, HEAD"));
}

TEST(MetricsServer, MalformedRequestsAreBadRequests) {
  running_server server(fixed_text("x 1\n"));
  for (std::string request : {
           "garbage\r\n\r\n",
           "GET /metrics\r\n\r\n",               // HTTP/0.9
           "GET /metrics HTTP/2.0\r\n\r\n",
           "GET  /metrics HTTP/1.0\r\n\r\n",     // empty target
           "GET /metrics HTTP/1.0\r\nno colon\r\n\r\n",
           "GET /metrics HTTP/1.0\r\n folded: x\r\n\r\n",
           "GET /metrics HTTP/1.0\r\nX: a\x01" "b\r\n\r\n",
       }) {
    EXPECT_EQ(server.exchange(request).status_line, "HTTP/1.0 400 Bad Request") << request;
  }
}

TEST(MetricsServer, HeadCutShortByTheClientIsABadRequest) {
  running_server server(fixed_text("x 1\n"));
  http_test_client client(server.port());
  client.send("GET /metrics HTTP/1.0\r\n");
  client.finish_sending(); // the server reads end of input before the blank line
  auto raw = client.read_until_closed();
  ASSERT_TRUE(raw);
  EXPECT_EQ(parse_response(*raw).status_line, "HTTP/1.0 400 Bad Request");
}

TEST(MetricsServer, OverLongHeadIsRefused) {
  running_server server(fixed_text("x 1\n"));
  http_test_client client(server.port());
  std::string request = "GET /metrics HTTP/1.0\r\nX-Long: " +
                        std::string(metrics_server::max_request_head, 'a') + "\r\n\r\n";
  client.send(request); // may fail part way once the server has answered
  auto raw = client.read_until_closed();
  ASSERT_TRUE(raw) << "server kept the connection open";
  // The server reads what is left of the head after its answer, so no reset
  // destroys the 400 before it is read.
  EXPECT_EQ(parse_response(*raw).status_line, "HTTP/1.0 400 Bad Request");
}

TEST(MetricsServer, SilentClientDoesNotBlockOthers) {
  // A deadline longer than the test: the silent client is never closed for it.
  running_server server(fixed_text("x 1\n"), 1h);
  http_test_client silent(server.port());
  auto response = server.exchange("GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(response.status_line, "HTTP/1.0 200 OK");
  EXPECT_FALSE(silent.closed_by_server());
}

TEST(MetricsServer, SilentClientIsClosedAtTheDeadline) {
  running_server server(fixed_text("x 1\n"), 300ms);
  http_test_client silent(server.port());
  auto started = clock_type::now();
  auto raw = silent.read_until_closed();
  ASSERT_TRUE(raw) << "silent client never closed";
  EXPECT_EQ(*raw, "");
  EXPECT_GE(clock_type::now() - started, 250ms);
}

// Connects `n` clients that send nothing, in order.
std::vector<std::unique_ptr<http_test_client>> idle_clients(std::uint16_t port, std::size_t n) {
  std::vector<std::unique_ptr<http_test_client>> clients;
  for (std::size_t i = 0; i < n; ++i) clients.push_back(std::make_unique<http_test_client>(port));
  return clients;
}

// How long a scraper waits for its answer (Prometheus' default scrape_timeout).
constexpr auto scrape_timeout = 10s;

// One scrape: true when the whole answer is a 200 with `body`.
bool scrape(std::uint16_t port, const std::string& body) {
  http_test_client scraper(port);
  scraper.send("GET /metrics HTTP/1.0\r\n\r\n");
  auto raw = scraper.read_until_closed(scrape_timeout);
  if (!raw) return false;
  auto response = parse_response(*raw);
  return response.status_line == "HTTP/1.0 200 OK" && response.body == body;
}

// A long deadline, so that only a new connection can make the server close
// an old one during the test.
constexpr auto no_deadline_in_this_test = std::chrono::hours(1);

TEST(MetricsServer, ANewConnectionTakesTheSlotOfTheOldestIdleOne) {
  running_server server(fixed_text("x 1\n"), no_deadline_in_this_test);
  auto idle = idle_clients(server.port(), metrics_server::max_connections);

  // Every slot is taken: the server closes the oldest idle client for it.
  EXPECT_TRUE(scrape(server.port(), "x 1\n"));
  EXPECT_TRUE(wait_until([&] { return idle[0]->closed_by_server(); }))
      << "the oldest idle client kept its slot";
  for (std::size_t i = 1; i < idle.size(); ++i)
    EXPECT_FALSE(idle[i]->closed_by_server()) << "idle client " << i << " closed";
}

TEST(MetricsServer, ClientsThatNeverCloseDoNotLockOutScrapes) {
  running_server server(fixed_text("x 1\n"), no_deadline_in_this_test);
  // Each asks, is answered, and then neither reads nor closes.
  auto lingering = idle_clients(server.port(), metrics_server::max_connections);
  for (auto& client : lingering) client->send("GET /metrics HTTP/1.0\r\n\r\n");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(scrape(server.port(), "x 1\n")) << "scrape " << i;
}

TEST(MetricsServer, ManySocketsHoldNoMoreThanMaxConnectionsOpen) {
  running_server server(fixed_text("x 1\n"), no_deadline_in_this_test);
  constexpr std::size_t attackers = 200;
  auto idle = idle_clients(server.port(), attackers);
  const std::size_t oldest_kept = attackers - metrics_server::max_connections;

  // Every socket but the newest max_connections is closed, each as soon as
  // a newer one needed its slot; the newest stay open.
  EXPECT_TRUE(wait_until([&] {
    for (std::size_t i = 0; i < oldest_kept; ++i)
      if (idle[i] && idle[i]->closed_by_server()) idle[i].reset();
    return std::all_of(idle.begin(), idle.begin() + oldest_kept, [](auto& c) { return !c; });
  })) << "the server holds more than " << metrics_server::max_connections << " connections";
  for (std::size_t i = oldest_kept; i < attackers; ++i)
    EXPECT_FALSE(idle[i]->closed_by_server()) << "socket " << i << " of the newest closed";
  EXPECT_TRUE(scrape(server.port(), "x 1\n"));
}

// Clients that each hold a connection by sending a request head a byte at a
// time and never finishing it. One the server closes is connected again
// before its next byte, so that `count` of them are connected all along.
class dripping_clients {
 public:
  dripping_clients(std::uint16_t port, std::size_t count) : port_(port) {
    for (std::size_t i = 0; i < count; ++i) clients_.push_back({connect(), 0});
    thread_ = std::thread([this] { drip(); });
  }
  ~dripping_clients() {
    stopping_ = true;
    thread_.join();
  }
  dripping_clients(const dripping_clients&) = delete;
  dripping_clients& operator=(const dripping_clients&) = delete;

  std::size_t reconnects() const { return reconnects_; }

 private:
  // The attacker's pace: a byte from every client each round.
  static constexpr auto round_interval = 100ms;
  static constexpr std::string_view head_start = "GET /metrics HTTP/1.0\r\nX-Drip: ";
  // Well below max_request_head: the server must not be able to refuse the
  // head for its size.
  static constexpr std::size_t longest_head = metrics_server::max_request_head / 2;

  struct client {
    std::unique_ptr<http_test_client> connection;
    std::size_t sent;
  };

  std::unique_ptr<http_test_client> connect() { return std::make_unique<http_test_client>(port_); }

  void drip() {
    while (!stopping_) {
      for (auto& c : clients_) {
        if (c.connection->closed_by_server()) {
          c = {connect(), 0};
          ++reconnects_;
        }
        if (c.sent >= longest_head) continue;
        char byte = c.sent < head_start.size() ? head_start[c.sent] : 'a';
        if (c.connection->send(std::string_view(&byte, 1))) ++c.sent;
      }
      std::this_thread::sleep_for(round_interval);
    }
  }

  std::uint16_t port_;
  std::vector<client> clients_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> reconnects_{0};
  std::thread thread_;
};

TEST(MetricsServer, SixteenDrippingClientsDoNotLockOutScrapes) {
  running_server server(fixed_text("x 1\n")); // the default deadline
  dripping_clients drippers(server.port(), metrics_server::max_connections);
  // Spread over more than a deadline, so that the drippers' connections are
  // also closed by it and made again meanwhile.
  constexpr int scrapes = 48;
  constexpr auto scrape_interval = 150ms;
  int succeeded = 0;
  for (int i = 0; i < scrapes; ++i) {
    if (scrape(server.port(), "x 1\n")) ++succeeded;
    std::this_thread::sleep_for(scrape_interval);
  }
  EXPECT_EQ(succeeded, scrapes) << "scrapes that got their answer, of " << scrapes
                                << ", with " << metrics_server::max_connections
                                << " dripping clients (connected again " << drippers.reconnects()
                                << " times)";
}

TEST(MetricsServer, StopClosesOpenConnections) {
  asio::io_context io;
  metrics_server server(io, "127.0.0.1", 0, fixed_text("x 1\n"));
  // A deadline longer than the test: only stop() can close the connection.
  server.set_connection_deadline(1h);
  server.start();
  std::thread loop([&] { io.run_for(generous_bound); });
  http_test_client silent(server.port());
  // Connections are accepted in the order they came: once a later one is
  // answered, the silent one is open in the server, not in the backlog.
  {
    http_test_client later(server.port());
    later.send("GET /metrics HTTP/1.0\r\n\r\n");
    later.finish_sending();
    auto answer = later.read_until_closed();
    ASSERT_TRUE(answer);
    EXPECT_EQ(parse_response(*answer).status_line, "HTTP/1.0 200 OK");
  }
  EXPECT_FALSE(silent.closed_by_server());
  asio::post(io, [&] { server.stop(); });
  auto raw = silent.read_until_closed();
  loop.join();
  ASSERT_TRUE(raw) << "stop() left the connection open";
}

TEST(MetricsServer, StartNamesTheAddressItCannotBind) {
  asio::io_context io;
  metrics_server first(io, "127.0.0.1", 0, fixed_text(""));
  first.start();
  metrics_server second(io, "127.0.0.1", first.port(), fixed_text(""));
  try {
    second.start();
    FAIL() << "a second listener on the same port started";
  } catch (const boost::system::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(first.port())),
              std::string::npos)
        << e.what();
  }
}

} // namespace
