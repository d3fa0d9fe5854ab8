#include "support/rabbitmq_node.hpp"

#include "support/loopback.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <random>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bs_router::testing {

namespace {

// A quiet machine boots a node in 7-10 s, a loaded one in up to 26 s; a
// cluster member joining waits for its peers too. Only a hang reaches this.
constexpr std::chrono::seconds ready_limit{180};
constexpr const char* epmd_executable = EPMD_PATH;

std::filesystem::path make_temp_dir(const std::string& prefix) {
  std::string templ = (std::filesystem::temp_directory_path() / (prefix + ".XXXXXX")).string();
  if (mkdtemp(templ.data()) == nullptr)
    throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
  return templ;
}

std::string random_token(std::size_t n) {
  static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::random_device device;
  std::uniform_int_distribution<std::size_t> pick(0, sizeof letters - 2);
  std::string token;
  for (std::size_t i = 0; i < n; ++i) token.push_back(letters[pick(device)]);
  return token;
}

void write_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const bool ok = done == text.size();
  ::fchmod(fd, mode);
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot write " + path.string());
}

void kill_and_reap(pid_t& pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  pid = -1;
}

// A VM that exited on its own (a port taken, a bad config) is reaped here.
bool has_exited(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, WNOHANG) == pid;
}

std::string tail_of(const std::filesystem::path& path, std::size_t n) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > n ? text.substr(text.size() - n) : text;
}

} // namespace

bool amqp_handshakes(std::uint16_t port, std::chrono::milliseconds limit) {
  const int fd = connect_to_loopback(port);
  if (fd < 0) return false;
  timeval timeout{static_cast<time_t>(limit.count() / 1000),
                  static_cast<suseconds_t>((limit.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  bool answered = false;
  if (send_all(fd, std::string_view("AMQP\x00\x00\x09\x01", 8))) {
    // The server's first frame: type 1 (method) on channel 0, whose class
    // and method are 10, 10 (connection.start), at offset 7.
    unsigned char frame[11];
    std::size_t got = 0;
    while (got < sizeof frame) {
      const ssize_t n = ::read(fd, frame + got, sizeof frame - got);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    answered = got == sizeof frame && frame[0] == 1 && frame[1] == 0 && frame[2] == 0 && frame[7] == 0 &&
               frame[8] == 10 && frame[9] == 0 && frame[10] == 10;
  }
  ::close(fd);
  return answered;
}

std::string unique_name(const std::string& prefix) {
  static std::atomic<unsigned> counter{0};
  return prefix + "." + std::to_string(::getpid()) + "." + std::to_string(++counter);
}

// --- epmd ------------------------------------------------------------------

epmd_daemon::epmd_daemon() {
  for (int attempt = 0; attempt < 5 && pid_ < 0; ++attempt) {
    const std::uint16_t port = free_loopback_port();
    spawn_options spawn;
    spawn.env = std::vector<std::string>{"PATH=/usr/bin:/bin"};
    const pid_t pid = spawn_process({epmd_executable, "-port", std::to_string(port), "-address", "127.0.0.1"}, spawn);
    bool exited = false;
    const bool listening = wait_until([&] {
      if (has_exited(pid)) return exited = true;
      const int fd = connect_to_loopback(port);
      if (fd < 0) return false;
      ::close(fd);
      return true;
    }, std::chrono::seconds{10});
    if (listening && !exited) {
      pid_ = pid;
      port_ = port;
    } else if (!exited) {
      pid_t stray = pid;
      kill_and_reap(stray);
    }
  }
  if (pid_ < 0) throw std::runtime_error("epmd_daemon: could not start " + std::string(epmd_executable));
}

epmd_daemon::~epmd_daemon() { kill_and_reap(pid_); }

// --- node ------------------------------------------------------------------

rabbitmq_node::rabbitmq_node() : rabbitmq_node(options{}) {}

rabbitmq_node::rabbitmq_node(options opts) : options_(std::move(opts)) {
  if (options_.dir.empty()) {
    options_.dir = make_temp_dir("bs_router_rabbitmq");
    own_dir_ = true;
  }
  try {
    if (options_.epmd_port == 0) {
      epmd_ = std::make_unique<epmd_daemon>();
      options_.epmd_port = epmd_->port();
    }
    if (options_.cookie.empty()) options_.cookie = random_token(20);
    amqp_port_ = free_loopback_port();
    dist_port_ = free_loopback_port();
    if (options_.name.empty()) options_.name = "t" + std::to_string(amqp_port_) + "@localhost";
    write_files();
    if (options_.start) start();
  } catch (...) {
    kill();
    epmd_.reset();
    std::error_code ignored;
    if (own_dir_) std::filesystem::remove_all(options_.dir, ignored);
    throw;
  }
}

rabbitmq_node::~rabbitmq_node() {
  kill();
  epmd_.reset();
  std::error_code ignored;
  if (own_dir_) std::filesystem::remove_all(options_.dir, ignored);
}

std::string rabbitmq_node::uri() const {
  return "amqp://guest:guest@127.0.0.1:" + std::to_string(amqp_port_) + "/";
}

void rabbitmq_node::write_files() const {
  const auto home = options_.dir / "home";
  std::filesystem::create_directories(home);
  std::filesystem::create_directories(options_.dir / "log");
  const auto cookie = home / ".erlang.cookie";
  if (!std::filesystem::exists(cookie)) write_file(cookie, options_.cookie, 0400);
  write_file(options_.dir / "enabled_plugins", "[].\n", 0600);
  std::string conf;
  if (!options_.peers.empty()) {
    conf += "cluster_formation.peer_discovery_backend = classic_config\n";
    for (std::size_t i = 0; i < options_.peers.size(); ++i)
      conf += "cluster_formation.classic_config.nodes." + std::to_string(i + 1) + " = " + options_.peers[i] + "\n";
  }
  conf += options_.extra_conf;
  write_file(options_.dir / "rabbitmq.conf", conf, 0600);
}

std::vector<std::string> rabbitmq_node::environment() const {
  const std::string d = options_.dir.string();
  // Distribution stays on loopback: nodes and the CLI talk over 127.0.0.1.
  const std::string dist_args = "-kernel inet_dist_use_interface {127,0,0,1}";
  return {
      "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
      "HOME=" + d + "/home",
      "LANG=C.UTF-8",
      "ERL_EPMD_PORT=" + std::to_string(options_.epmd_port),
      "ERL_EPMD_ADDRESS=127.0.0.1",
      "RABBITMQ_NODENAME=" + options_.name,
      "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
      "RABBITMQ_NODE_PORT=" + std::to_string(amqp_port_),
      "RABBITMQ_DIST_PORT=" + std::to_string(dist_port_),
      "RABBITMQ_MNESIA_BASE=" + d + "/mnesia",
      "RABBITMQ_LOG_BASE=" + d + "/log",
      "RABBITMQ_PID_FILE=" + d + "/pid",
      "RABBITMQ_CONFIG_FILE=" + d + "/rabbitmq.conf",
      "RABBITMQ_ADVANCED_CONFIG_FILE=" + d + "/advanced.config",
      "RABBITMQ_ENABLED_PLUGINS_FILE=" + d + "/enabled_plugins",
      "RABBITMQ_CONF_ENV_FILE=/dev/null",
      // The script then execs the VM instead of waiting on it as a child:
      // the pid spawned is the VM's, and kill -9 reaches it.
      "RABBITMQ_ALLOW_INPUT=1",
      "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-noinput " + dist_args,
      "RABBITMQ_CTL_ERL_ARGS=" + dist_args,
  };
}

void rabbitmq_node::launch() {
  if (pid_ > 0) return;
  spawn_options spawn;
  spawn.env = environment();
  spawn.cwd = options_.dir.string();
  spawn.output_path = (options_.dir / "node.out").string();
  launched_at_ = std::chrono::steady_clock::now();
  pid_ = spawn_process({executable}, spawn);
}

void rabbitmq_node::wait_ready() {
  bool exited = false;
  const bool ready = wait_until([&] {
    if (has_exited(pid_)) return exited = true;
    return amqp_handshakes(amqp_port_);
  }, ready_limit, std::chrono::milliseconds{100});
  if (exited) pid_ = -1;
  if (!ready || exited) {
    const std::string output = tail_of(options_.dir / "node.out", 2000);
    kill();
    throw std::runtime_error("rabbitmq_node " + options_.name + ": " +
                             (exited ? "the VM exited during boot" : "not ready in time") + "; its output ends:\n" +
                             output);
  }
  last_boot_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - launched_at_).count();
}

void rabbitmq_node::start() {
  launch();
  wait_ready();
}

void rabbitmq_node::kill() { kill_and_reap(pid_); }

void rabbitmq_node::suspend() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void rabbitmq_node::resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

void rabbitmq_node::restart() {
  kill();
  start();
}

// --- cluster ---------------------------------------------------------------

rabbitmq_cluster::rabbitmq_cluster() : dir_(make_temp_dir("bs_router_rabbitmq_cluster")) {
  try {
    epmd_ = std::make_unique<epmd_daemon>();
    const std::string cookie = random_token(20);
    std::vector<std::string> names;
    for (int i = 1; i <= 3; ++i) names.push_back("n" + std::to_string(i) + "@localhost");
    for (std::size_t i = 0; i < names.size(); ++i) {
      rabbitmq_node::options opts;
      opts.name = names[i];
      opts.dir = dir_ / ("n" + std::to_string(i + 1));
      std::filesystem::create_directories(opts.dir);
      opts.epmd_port = epmd_->port();
      opts.cookie = cookie;
      opts.peers = names;
      opts.start = false;
      nodes_.push_back(std::make_unique<rabbitmq_node>(opts));
    }
    const auto began = std::chrono::steady_clock::now();
    // The first forms the cluster; the other two find it through their
    // peer list and join while they boot.
    nodes_[0]->start();
    nodes_[1]->launch();
    nodes_[2]->launch();
    nodes_[1]->wait_ready();
    nodes_[2]->wait_ready();
    form_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  } catch (...) {
    nodes_.clear();
    epmd_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    throw;
  }
}

rabbitmq_cluster::~rabbitmq_cluster() {
  nodes_.clear();
  epmd_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::vector<std::string> rabbitmq_cluster::uris() const {
  std::vector<std::string> result;
  for (const auto& node : nodes_) result.push_back(node->uri());
  return result;
}

// --- the run's node --------------------------------------------------------

rabbitmq_node& shared_rabbitmq_node() {
  // Destroyed (killed, its directory removed) by exit(), after main returns.
  static rabbitmq_node node;
  return node;
}

} // namespace bs_router::testing
