#include "bs_router/cbsd_database.hpp"

#include <sqlite3.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

namespace bs_router {

namespace {

constexpr std::array<emulator_layout, 4> layouts{{
    {"bhyve", "vm_zfs_guid", "bhyvedsk", "bhyve_vnc_tcp_bind", "vnc_port"},
    {"qemu", "vm_zfs_guid", "qemudsk", "qemu_vnc_tcp_bind", "vnc_port"},
    // xen has no vm_zfs_guid, and keeps its port in vm_vnc_port.
    {"xen", "", "xendsk", "xen_vnc_tcp_bind", "vm_vnc_port"},
    {"jail", "", "", "", ""},
}};

// The disk whose guid is DskGuid (what `bhyve-dsk mode=get dsk_path=dsk1` asks).
constexpr std::string_view first_disk_path = "dsk1.vhd";
// A value longer than this is not one cbsd would print as a value (the same
// bound as the look-up commands' captured output).
constexpr std::size_t max_value_bytes = 4096;
constexpr std::size_t max_name_bytes = 255;

struct failure {
  database_problem problem;
  std::string detail;
};

struct statement {
  sqlite3_stmt* stmt = nullptr;
  statement() = default;
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
  ~statement() {
    if (stmt) sqlite3_finalize(stmt);
  }
};

std::string errno_text(int err) { return std::strerror(err); }

// What lstat says of `path`: a directory or a regular file as expected, or
// the failure. Never through a link: a link where CBSD keeps none is not
// CBSD's layout.
std::optional<failure> check_kind(const std::string& path, bool directory, file_identity* identity = nullptr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return failure{database_problem::missing, path + ": not there"};
    return failure{database_problem::unreadable, path + ": " + errno_text(err)};
  }
  const bool ok = directory ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
  if (!ok)
    return failure{database_problem::layout,
                   path + (directory ? ": not a directory (or a link)" : ": not a regular file (or a link)")};
  if (identity) *identity = file_identity{st.st_dev, st.st_ino};
  return std::nullopt;
}

// What the path names now, for held_databases::confirm; a path that is no
// regular file any more names no file.
file_identity identity_now(const std::string& path) {
  file_identity now;
  check_kind(path, false, &now);
  return now;
}

database_problem problem_of(int code) {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return database_problem::busy;
    case SQLITE_CANTOPEN: return database_problem::missing;
    case SQLITE_NOTADB:
    case SQLITE_ERROR: return database_problem::layout; // no such table or column
    default: return database_problem::unreadable;
  }
}

// A stored value as bget prints it: NULL, empty, too long or on several
// lines is no value.
std::optional<std::string> value_of(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  const int bytes = sqlite3_column_bytes(stmt, column);
  if (!text || bytes <= 0 || static_cast<std::size_t>(bytes) > max_value_bytes) return std::nullopt;
  std::string value(reinterpret_cast<const char*>(text), static_cast<std::size_t>(bytes));
  if (value.find_first_of("\r\n") != std::string::npos || value.find('\0') != std::string::npos)
    return std::nullopt;
  return value;
}

// Runs one statement that yields at most one row; `row` gets its columns
// (empty vector entries for no value), nullopt when there is no row.
std::optional<failure> query_row(sqlite3* db, const std::string& path, const std::string& sql,
                                 std::optional<std::string_view> parameter,
                                 std::optional<std::vector<std::optional<std::string>>>& row) {
  statement st;
  int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &st.stmt, nullptr);
  if (rc != SQLITE_OK) return failure{problem_of(rc), path + ": " + sqlite3_errmsg(db)};
  if (parameter) {
    rc = sqlite3_bind_text(st.stmt, 1, parameter->data(), static_cast<int>(parameter->size()), SQLITE_TRANSIENT);
    if (rc != SQLITE_OK) return failure{problem_of(rc), path + ": " + sqlite3_errmsg(db)};
  }
  rc = sqlite3_step(st.stmt);
  if (rc == SQLITE_DONE) {
    row.reset();
    return std::nullopt;
  }
  if (rc != SQLITE_ROW) return failure{problem_of(rc), path + ": " + sqlite3_errmsg(db)};
  std::vector<std::optional<std::string>> values;
  const int columns = sqlite3_column_count(st.stmt);
  for (int i = 0; i < columns; ++i) values.push_back(value_of(st.stmt, i));
  row = std::move(values);
  return std::nullopt;
}

// Names come only from the table above. Never in double quotes: SQLite takes
// a double-quoted name that is no column for a string, and would give that.
std::string sql_name(std::string_view name) { return std::string(name); }

std::string join(const std::string& dir, std::string_view name) { return dir + "/" + std::string(name); }

} // namespace

const emulator_layout* layout_of(std::string_view emulator) {
  for (const emulator_layout& layout : layouts)
    if (layout.emulator == emulator) return &layout;
  return nullptr;
}

std::string_view to_string(database_problem problem) {
  switch (problem) {
    case database_problem::unsafe_name: return "a jname that is not a plain file name";
    case database_problem::missing: return "a database that is not there";
    case database_problem::busy: return "a database locked past the busy timeout";
    case database_problem::layout: return "a database not laid out as expected";
    case database_problem::unreadable: return "a database that could not be read";
  }
  return "unknown";
}

bool is_plain_name(std::string_view jname) {
  if (jname.empty() || jname.size() > max_name_bytes || jname.front() == '.') return false;
  for (char c : jname) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

cbsd_database::cbsd_database(std::string cbsdenv, std::chrono::milliseconds busy_timeout)
    : cbsdenv_(std::move(cbsdenv)),
      inventory_path_(join(join(join(cbsdenv_, "var"), "db"), "local.sqlite")),
      inventory_(busy_timeout, 1), vms_(busy_timeout) {}

namespace {

// W/var/db/local.sqlite is a link to inv.<nodename>.sqlite beside it: the
// only link followed, and only to a plain name in the same directory.
std::optional<failure> resolve_inventory(const std::string& cbsdenv, std::string& path, file_identity& identity) {
  const std::string var = join(cbsdenv, "var");
  const std::string db_dir = join(var, "db");
  for (const std::string& dir : {var, db_dir})
    if (auto bad = check_kind(dir, true)) return bad;
  const std::string link = join(db_dir, "local.sqlite");
  struct stat st {};
  if (::lstat(link.c_str(), &st) != 0) {
    const int err = errno;
    return failure{err == ENOENT ? database_problem::missing : database_problem::unreadable,
                   link + ": " + errno_text(err)};
  }
  path = link;
  if (S_ISLNK(st.st_mode)) {
    std::array<char, max_name_bytes + 1> target{};
    const ssize_t n = ::readlink(link.c_str(), target.data(), target.size());
    if (n <= 0 || static_cast<std::size_t>(n) >= target.size())
      return failure{database_problem::layout, link + ": a link that could not be read"};
    const std::string_view name(target.data(), static_cast<std::size_t>(n));
    if (!is_plain_name(name))
      return failure{database_problem::layout, link + ": a link to somewhere else than a file beside it"};
    path = join(db_dir, name);
  }
  return check_kind(path, false, &identity);
}

std::optional<failure> connect(held_databases& held, const std::string& path, file_identity seen, sqlite3*& db) {
  int code = SQLITE_OK;
  std::string message;
  db = held.get(path, seen, code, message);
  if (!db) return failure{problem_of(code), path + ": " + message};
  return std::nullopt;
}

} // namespace

std::optional<std::string> cbsd_database::check_inventory() {
  std::string path;
  file_identity identity;
  if (auto bad = resolve_inventory(cbsdenv_, path, identity)) return bad->detail;
  sqlite3* db = nullptr;
  if (auto bad = connect(inventory_, path, identity, db)) return bad->detail;
  std::set<std::string> columns;
  std::optional<std::string> error;
  {
    statement st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA table_info(jails)", -1, &st.stmt, nullptr);
    if (rc == SQLITE_OK) {
      while ((rc = sqlite3_step(st.stmt)) == SQLITE_ROW)
        if (const unsigned char* name = sqlite3_column_text(st.stmt, 1))
          columns.insert(reinterpret_cast<const char*>(name));
    }
    if (rc != SQLITE_DONE) error = path + ": " + sqlite3_errmsg(db);
  }
  // The router's first read comes at the end of its first job: not held till then.
  inventory_.close_all();
  if (error) return error;
  if (columns.empty()) return path + ": no table jails";
  for (const char* needed : {"jname", "emulator"})
    if (!columns.count(needed)) return path + ": jails has no column " + needed;
  return std::nullopt;
}

database_read cbsd_database::read(std::string_view jname, bool want_vnc) {
  database_read out;
  // A failed read closes the connection it used, so that the next one
  // starts from the file as it is then.
  auto fail = [&out](failure f, held_databases* held = nullptr, const std::string& path = {}) {
    if (held) held->drop(path);
    out.problem = f.problem;
    out.detail = std::move(f.detail);
    return out;
  };
  if (!is_plain_name(jname)) return fail({database_problem::unsafe_name, "the jname is not a plain file name"});

  // The emulator, from the global inventory.
  std::string inventory;
  file_identity inventory_seen;
  if (auto bad = resolve_inventory(cbsdenv_, inventory, inventory_seen)) return fail(std::move(*bad));
  std::optional<std::vector<std::optional<std::string>>> row;
  sqlite3* db = nullptr;
  if (auto bad = connect(inventory_, inventory, inventory_seen, db)) return fail(std::move(*bad));
  if (auto bad = query_row(db, inventory, "SELECT emulator FROM jails WHERE jname = ?1 LIMIT 1", jname, row))
    return fail(std::move(*bad), &inventory_, inventory);
  inventory_.confirm(inventory, inventory_seen, identity_now(inventory));
  lookup_values values;
  if (!row) { // unknown to CBSD: what bget gives
    out.values = values;
    return out;
  }
  const std::string emulator = (*row)[0].value_or("");
  const emulator_layout* layout = layout_of(emulator);
  if (!layout) return fail({database_problem::layout, inventory + ": an emulator the router does not know"});

  std::vector<std::string> settings_columns;
  if (!layout->guid_column.empty()) settings_columns.push_back(sql_name(layout->guid_column));
  const bool vnc = want_vnc && !layout->vnc_bind_column.empty();
  if (vnc) {
    settings_columns.push_back(sql_name(layout->vnc_bind_column));
    settings_columns.push_back(sql_name(layout->vnc_port_column));
  }
  if (settings_columns.empty() && layout->disk_table.empty()) { // a jail: nothing to read
    out.values = values;
    return out;
  }

  const std::string system_dir = join(cbsdenv_, "jails-system");
  const std::string vm_dir = join(system_dir, jname);
  const std::string vm_db = join(vm_dir, "local.sqlite");
  for (const std::string& dir : {system_dir, vm_dir})
    if (auto bad = check_kind(dir, true)) return fail(std::move(*bad), &vms_, vm_db);
  file_identity vm_seen;
  if (auto bad = check_kind(vm_db, false, &vm_seen)) return fail(std::move(*bad), &vms_, vm_db);
  if (auto bad = connect(vms_, vm_db, vm_seen, db)) return fail(std::move(*bad));

  if (!settings_columns.empty()) {
    std::string sql = "SELECT ";
    for (std::size_t i = 0; i < settings_columns.size(); ++i) sql += (i ? ", " : "") + settings_columns[i];
    sql += " FROM settings LIMIT 1";
    if (auto bad = query_row(db, vm_db, sql, std::nullopt, row)) return fail(std::move(*bad), &vms_, vm_db);
    if (row) {
      std::size_t i = 0;
      if (!layout->guid_column.empty()) values.guid = (*row)[i++].value_or("0");
      if (vnc) {
        // bget prints "0" for an empty value, so the command way gives "0:0" too.
        const std::string bind = (*row)[i].value_or("0");
        const std::string port = (*row)[i + 1].value_or("0");
        values.vnc = bind + ":" + port;
      }
    }
  }
  if (!layout->disk_table.empty()) {
    const std::string sql = "SELECT dsk_zfs_guid FROM " + sql_name(layout->disk_table) + " WHERE dsk_path = ?1 LIMIT 1";
    if (auto bad = query_row(db, vm_db, sql, first_disk_path, row)) return fail(std::move(*bad), &vms_, vm_db);
    if (row) values.dsk_guid = (*row)[0].value_or("0");
  }
  vms_.confirm(vm_db, vm_seen, identity_now(vm_db));
  out.values = std::move(values);
  return out;
}

} // namespace bs_router
