// The only test double: a stand-in for `cbsd`.
//
// The router scrubs the environment, so the fake finds its files through its
// working directory (the pool directory):
//   <cwd>/fake_cbsd.records     one JSON line per event, appended by one write()
//                               each, so concurrent runs never interleave
//   <cwd>/fake_cbsd.rules.json  optional canned answers, see answer_from_rules()
//
// A job's own run behaves as its key=value arguments say (in this order):
//   fake_spawn_child=1     fork a grandchild that sleeps in our process group
//                          (fake_child_sleep_ms=N, default 120000, bounds it)
//   fake_ignore_term=1     ignore SIGTERM (the grandchild inherits that)
//   fake_touch=PATH        create PATH: proof that the run happened
//   fake_stdout=TEXT       printed as-is
//   fake_stdout_bytes=N    N bytes of a repeating printable pattern ending "\n"
//   fake_stderr=TEXT       printed as-is on stderr
//   fake_wait_for=PATH     block until PATH exists (10 ms polls, at most 120 s;
//                          exit 124 if it never appears)
//   fake_sleep_ms=N        sleep before finishing
//   fake_exit=N            exit status (default 0)
//   fake_then_stdout=TEXT  printed after those waits, then
//   fake_then_wait_for=PATH  block again until PATH exists (as fake_wait_for)
//   fake_create_vm=EMULATOR  as bcreate does, while running: the jname's row
//                          in <cwd>/var/db/local.sqlite, then its own
//                          <cwd>/jails-system/J/local.sqlite, one statement
//                          at a time (settings row, its guid, the first disk):
//                          Guid "created-guid-J", DskGuid "created-dsk-J",
//                          VNC 0.0.0.0:5909 (tests/support/cbsd_fixture.hpp)
// Output comes before the waits so a held job has already shown its output.
// With none of the output keys it prints "fake cbsd: <command> ok\n".
//
// The look-ups the router makes after a job print fixed values:
//   bget|jget|qget|xget jname=J mode=quiet vm_zfs_guid  -> "<cmd>-guid-J"
//   bhyve-dsk mode=get jname=J dsk_path=dsk1 dsk_zfs_guid -> "dsk-guid-J"
//   bget jname=J mode=quiet bhyve_vnc_tcp_bind            -> "127.0.0.1"
//   bget jname=J mode=quiet vnc_port                      -> "5901"
//
// Exit statuses of its own: 97 rules file unreadable, 98 records file not
// writable, 124 fake_wait_for gave up.

#include <nlohmann/json.hpp>

#include "support/cbsd_fixture.hpp"

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

constexpr const char* records_file_name = "fake_cbsd.records";
constexpr const char* rules_file_name = "fake_cbsd.rules.json";
constexpr int exit_rules_unreadable = 97;
constexpr int exit_records_unwritable = 98;
constexpr int exit_wait_gave_up = 124;
constexpr long wait_poll_ms = 10;
constexpr long wait_limit_ms = 120'000;
constexpr long default_child_sleep_ms = 120'000;

// Keep in step with fake_stdout_bytes_text() in tests/support/test_pool.cpp;
// support_selftest checks that the two agree.
constexpr std::string_view stdout_pattern = "0123456789abcdefghijklmnopqrstuvwxyz";

struct invocation {
  std::vector<std::string> argv;
  std::string command; // argv[1], "" when absent
  std::map<std::string, std::string> args; // key=value arguments after the command word
  std::string last_argument; // argv.back() when there is more than the command word
};

struct answer {
  std::string out;
  std::string err;
  int exit_code = 0;
  long sleep_ms = 0;
  std::string wait_for;
};

std::int64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string current_directory() {
  std::vector<char> buf(4096);
  while (getcwd(buf.data(), buf.size()) == nullptr) {
    if (errno != ERANGE) return ".";
    buf.resize(buf.size() * 2);
  }
  return buf.data();
}

std::string hex_of(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    hex += digits[c >> 4];
    hex += digits[c & 0xf];
  }
  return hex;
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void sleep_ms(long ms) {
  timespec left{ms / 1000, (ms % 1000) * 1'000'000};
  while (nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// One record is one write() on an O_APPEND descriptor: the kernel appends it
// whole, so records of concurrent runs never mix.
bool append_record(const std::string& records_path, const nlohmann::json& record) {
  const std::string line =
      record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  const int fd = open(records_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const ssize_t n = write(fd, line.data(), line.size());
  close(fd);
  return n == static_cast<ssize_t>(line.size());
}

nlohmann::json argv_json(const invocation& inv) {
  return inv.argv;
}

nlohmann::json argv_hex_json(const invocation& inv) {
  nlohmann::json hex = nlohmann::json::array();
  for (const auto& a : inv.argv) hex.push_back(hex_of(a));
  return hex;
}

nlohmann::json environment_json(std::size_t& count) {
  nlohmann::json env = nlohmann::json::object();
  count = 0;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e, ++count) {
    const std::string_view entry(*e);
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos)
      env[std::string(entry)] = nullptr;
    else
      env[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  return env;
}

invocation parse_invocation(int argc, char** argv) {
  invocation inv;
  for (int i = 0; i < argc; ++i) inv.argv.emplace_back(argv[i]);
  if (argc > 1) inv.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string_view a(argv[i]);
    const auto eq = a.find('=');
    if (eq != std::string_view::npos)
      inv.args.emplace(std::string(a.substr(0, eq)), std::string(a.substr(eq + 1)));
  }
  if (argc > 2) inv.last_argument = argv[argc - 1];
  return inv;
}

std::optional<std::string> arg(const invocation& inv, const std::string& key) {
  const auto it = inv.args.find(key);
  if (it == inv.args.end()) return std::nullopt;
  return it->second;
}

long number_arg(const invocation& inv, const std::string& key, long fallback) {
  const auto value = arg(inv, key);
  if (!value) return fallback;
  return std::strtol(value->c_str(), nullptr, 10);
}

// Rules are keyed "<command> <last argument>" (or "<command> *" for any run of
// that command); a match replaces whatever the fake would otherwise do.
// Value: {"stdout": "...", "stderr": "...", "exit": N, "sleep_ms": N, "wait_for": PATH}.
std::optional<answer> answer_from_rules(const std::string& cwd, const invocation& inv) {
  const std::string path = cwd + "/" + rules_file_name;
  std::ifstream in(path);
  if (!in) return std::nullopt;
  nlohmann::json rules;
  try {
    rules = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    answer broken;
    broken.err = std::string("fake cbsd: cannot parse ") + path + ": " + e.what() + "\n";
    broken.exit_code = exit_rules_unreadable;
    return broken;
  }
  if (!rules.is_object()) return std::nullopt;
  const std::string exact =
      inv.last_argument.empty() ? inv.command : inv.command + " " + inv.last_argument;
  auto it = rules.find(exact);
  if (it == rules.end()) it = rules.find(inv.command + " *");
  if (it == rules.end() || !it->is_object()) return std::nullopt;
  answer a;
  a.out = it->value("stdout", "");
  a.err = it->value("stderr", "");
  a.exit_code = it->value("exit", 0);
  a.sleep_ms = it->value("sleep_ms", 0L);
  a.wait_for = it->value("wait_for", "");
  return a;
}

// The look-ups the router makes after a job with a jname.
std::optional<answer> lookup_default(const invocation& inv) {
  const std::string jname = arg(inv, "jname").value_or("");
  const bool is_get = inv.command == "bget" || inv.command == "jget" ||
                      inv.command == "qget" || inv.command == "xget";
  answer a;
  if (is_get && inv.last_argument == "vm_zfs_guid") {
    a.out = inv.command + "-guid-" + jname + "\n";
  } else if (inv.command == "bhyve-dsk" && inv.last_argument == "dsk_zfs_guid") {
    a.out = "dsk-guid-" + jname + "\n";
  } else if (inv.command == "bget" && inv.last_argument == "bhyve_vnc_tcp_bind") {
    a.out = "127.0.0.1\n";
  } else if (inv.command == "bget" && inv.last_argument == "vnc_port") {
    a.out = "5901\n";
  } else {
    return std::nullopt;
  }
  return a;
}

std::string pattern_bytes(std::size_t n) {
  std::string out;
  if (n == 0) return out;
  out.reserve(n);
  for (std::size_t i = 0; i + 1 < n; ++i) out += stdout_pattern[i % stdout_pattern.size()];
  out += '\n';
  return out;
}

answer answer_from_arguments(const invocation& inv) {
  answer a;
  const auto out = arg(inv, "fake_stdout");
  const auto out_bytes = arg(inv, "fake_stdout_bytes");
  const auto err = arg(inv, "fake_stderr");
  if (!out && !out_bytes && !err) {
    a.out = "fake cbsd: " + inv.command + " ok\n";
  } else {
    if (out) a.out += *out;
    if (out_bytes) a.out += pattern_bytes(std::strtoull(out_bytes->c_str(), nullptr, 10));
    if (err) a.err = *err;
  }
  a.exit_code = static_cast<int>(number_arg(inv, "fake_exit", 0));
  a.sleep_ms = number_arg(inv, "fake_sleep_ms", 0);
  a.wait_for = arg(inv, "fake_wait_for").value_or("");
  return a;
}

// A grandchild in our process group that outlives us unless the router kills
// the whole group; it keeps our stdout and stderr open, as a daemon started
// by a real cbsd command would.
pid_t spawn_sleeping_grandchild(long sleep_for_ms) {
  const pid_t pid = fork();
  if (pid == 0) {
    sleep_ms(sleep_for_ms);
    _exit(0);
  }
  return pid;
}

// What bcreate writes of a new VM, in its order and without a transaction.
void create_vm(const std::string& cwd, const std::string& jname, const std::string& emulator) {
  namespace fixture = bs_router::testing::cbsd_fixture;
  if (!std::filesystem::exists(fixture::inventory_path(cwd))) fixture::create_inventory(cwd);
  fixture::add_to_inventory(cwd, jname, emulator);
  fixture::create_vm_tables(cwd, jname, emulator);
  fixture::database db(fixture::vm_database_path(cwd, jname));
  const std::string port_column = emulator == "xen" ? "vm_vnc_port" : "vnc_port";
  std::map<std::string, std::string> settings = {{"vm_cpus", "2"}};
  if (emulator != "jail") {
    settings[emulator + "_vnc_tcp_bind"] = "0.0.0.0";
    settings[port_column] = "5909";
  }
  fixture::insert_row(db.get(), "settings", settings);
  if (emulator == "bhyve" || emulator == "qemu")
    db.exec("UPDATE settings SET vm_zfs_guid = " + fixture::quoted_value("created-guid-" + jname));
  if (emulator != "jail")
    fixture::insert_row(db.get(), fixture::disk_table_of(emulator),
                        {{"jname", jname}, {"dsk_path", "dsk1.vhd"}, {"dsk_zfs_guid", "created-dsk-" + jname}});
}

bool wait_for_file(const std::string& path) {
  for (long waited = 0; waited < wait_limit_ms; waited += wait_poll_ms) {
    if (file_exists(path)) return true;
    sleep_ms(wait_poll_ms);
  }
  return file_exists(path);
}

} // namespace

int main(int argc, char** argv) {
  const std::string cwd = current_directory();
  const std::string records_path = cwd + "/" + records_file_name;
  const invocation inv = parse_invocation(argc, argv);

  std::optional<answer> planned = answer_from_rules(cwd, inv);
  const bool own_run = !planned && !lookup_default(inv);
  if (!planned) planned = lookup_default(inv);
  if (!planned) planned = answer_from_arguments(inv);

  if (own_run && arg(inv, "fake_ignore_term") == "1") std::signal(SIGTERM, SIG_IGN);

  std::size_t env_count = 0;
  nlohmann::json start = {
      {"event", "start"},
      {"pid", getpid()},
      {"argv", argv_json(inv)},
      {"argv_hex", argv_hex_json(inv)},
      {"env", environment_json(env_count)},
      {"cwd", cwd},
  };
  start["env_count"] = env_count;
  if (own_run && arg(inv, "fake_spawn_child") == "1") {
    start["grandchild_pid"] = spawn_sleeping_grandchild(
        number_arg(inv, "fake_child_sleep_ms", default_child_sleep_ms));
  }
  start["time_ns"] = realtime_ns();
  if (!append_record(records_path, start)) {
    const std::string msg = "fake cbsd: cannot append to " + records_path + ": " +
                            std::strerror(errno) + "\n";
    write_all(STDERR_FILENO, msg);
    return exit_records_unwritable;
  }

  if (own_run) {
    if (const auto touch = arg(inv, "fake_touch")) {
      const int fd = open(touch->c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd >= 0) close(fd);
    }
    if (const auto emulator = arg(inv, "fake_create_vm")) {
      try {
        create_vm(cwd, arg(inv, "jname").value_or(""), *emulator);
      } catch (const std::exception& e) {
        write_all(STDERR_FILENO, std::string("fake cbsd: ") + e.what() + "\n");
        planned->exit_code = 1;
      }
    }
  }
  write_all(STDOUT_FILENO, planned->out);
  write_all(STDERR_FILENO, planned->err);

  int exit_code = planned->exit_code;
  if (!planned->wait_for.empty() && !wait_for_file(planned->wait_for)) {
    write_all(STDERR_FILENO, "fake cbsd: gave up waiting for " + planned->wait_for + "\n");
    exit_code = exit_wait_gave_up;
  }
  if (planned->sleep_ms > 0) sleep_ms(planned->sleep_ms);
  // A second stage: output that comes only once the test says so.
  if (own_run) {
    if (const auto text = arg(inv, "fake_then_stdout")) write_all(STDOUT_FILENO, *text);
    if (const auto gate = arg(inv, "fake_then_wait_for"); gate && !wait_for_file(*gate)) {
      write_all(STDERR_FILENO, "fake cbsd: gave up waiting for " + *gate + "\n");
      exit_code = exit_wait_gave_up;
    }
  }

  const nlohmann::json end = {
      {"event", "end"},
      {"pid", getpid()},
      {"argv", argv_json(inv)},
      {"argv_hex", argv_hex_json(inv)},
      {"exit", exit_code},
      {"time_ns", realtime_ns()},
  };
  append_record(records_path, end);
  return exit_code;
}
