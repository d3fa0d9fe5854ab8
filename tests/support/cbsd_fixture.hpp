#pragma once
// CBSD's SQLite files as CBSD lays them out (shared/CBSD-DB.md; columns from
// CBSD's share/local-*.schema): the global inventory W/var/db/local.sqlite, a
// link to inv.<nodename>.sqlite, and one W/jails-system/<jname>/local.sqlite
// per VM, tables made the way misc/updatesql makes them (CREATE TABLE IF NOT
// EXISTS from `column type default ...` lines), every file in WAL mode.
// Header-only: the fake cbsd writes the same files during a "create" run.

#include <sqlite3.h>

#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bs_router::testing::cbsd_fixture {

using column_list = std::vector<std::pair<std::string_view, std::string_view>>;

// A part of share/local-jails.schema: the columns the router reads and some others.
inline const column_list jails_columns = {
    {"jname", "text default 0 unique PRIMARY KEY"},
    {"jid", "integer default 0"},
    {"path", "text default 0"},
    {"host_hostname", "text default 0"},
    {"ip4_addr", "text default 0"},
    {"status", "integer default 0"},
    {"emulator", "text default \"jail\""},
    {"protected", "integer default 0"},
};

// A part of share/local-<emulator>-settings.schema.
inline column_list settings_columns(std::string_view emulator) {
  column_list columns = {
      {"vm_cpus", "integer default 1"},
      {"vm_ram", "integer default 536870912"},
      {"vm_vnc_port", "integer default 0"},
      {"cd_vnc_wait", "integer default 0"},
      {"vnc_password", "text default ''"},
  };
  if (emulator == "bhyve") {
    columns.insert(columns.end(), {{"vnc_port", "integer default 0"},
                                   {"bhyve_vnc_tcp_bind", "text default \"127.0.0.1\""},
                                   {"bhyve_vnc_resolution", "text default \"1024x768\""},
                                   {"vm_zfs_guid", "text default \"0\""}});
  } else if (emulator == "qemu") {
    columns.insert(columns.end(), {{"vnc_port", "integer default 0"},
                                   {"qemu_vnc_tcp_bind", "text default \"127.0.0.1\""},
                                   {"qemu_vnc_resolution", "text default \"1024x768\""},
                                   {"vm_zfs_guid", "text default \"0\""}});
  } else if (emulator == "xen") { // no vm_zfs_guid, no vnc_port
    columns.insert(columns.end(), {{"xen_vnc_tcp_bind", "text default \"127.0.0.1\""},
                                   {"xen_vnc_resolution", "text default \"1024x768\""}});
  }
  return columns;
}

// A part of share/local-{bhyve,qemu,xen}dsk.schema (the same shape).
inline const column_list disk_columns = {
    {"jname", "text default 0"},
    {"dsk_controller", "text default \"virtio-blk\""},
    {"dsk_path", "text default 0"},
    {"dsk_slot", "integer default 0"},
    {"dsk_type", "text default vhd"},
    {"dsk_size", "integer default 0"},
    {"bootable", "BOOLEAN DEFAULT 'false' NULL"},
    {"dsk_zfs_guid", "text default \"0\""},
    {"dsk_serial", "text default \"0\""},
};

inline std::string disk_table_of(std::string_view emulator) { return std::string(emulator) + "dsk"; }

inline void exec(sqlite3* db, const std::string& sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    std::string what = std::string("sqlite: ") + (error ? error : "?") + " in: " + sql;
    sqlite3_free(error);
    throw std::runtime_error(what);
  }
}

inline std::string create_table_sql(std::string_view table, const column_list& columns) {
  std::string sql = "CREATE TABLE IF NOT EXISTS " + std::string(table) + " ( ";
  for (std::size_t i = 0; i < columns.size(); ++i)
    sql += (i ? ", " : "") + std::string(columns[i].first) + " " + std::string(columns[i].second);
  return sql + " )";
}

inline std::string quoted_value(std::string_view value) {
  std::string out = "'";
  for (char c : value) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// INSERT of the given values; a column not given keeps its default. The
// value "NULL" is stored as NULL.
inline void insert_row(sqlite3* db, std::string_view table, const std::map<std::string, std::string>& values) {
  std::string names, literals;
  for (const auto& [name, value] : values) {
    names += (names.empty() ? "" : ", ") + name;
    literals += (literals.empty() ? "" : ", ") + (value == "NULL" ? std::string("NULL") : quoted_value(value));
  }
  exec(db, "INSERT INTO " + std::string(table) + " (" + names + ") VALUES (" + literals + ")");
}

// A read-write connection as CBSD opens one: WAL mode set on each open.
class database {
 public:
  explicit database(const std::filesystem::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
      std::string what = "sqlite: cannot open " + path.string() + ": " + sqlite3_errmsg(db_);
      sqlite3_close(db_);
      throw std::runtime_error(what);
    }
    sqlite3_busy_timeout(db_, 5000);
    cbsd_fixture::exec(db_, "PRAGMA journal_mode=WAL");
  }
  ~database() { sqlite3_close(db_); }
  database(const database&) = delete;
  database& operator=(const database&) = delete;
  sqlite3* get() const { return db_; }
  void exec(const std::string& sql) const { cbsd_fixture::exec(db_, sql); }

 private:
  sqlite3* db_ = nullptr;
};

inline std::filesystem::path inventory_path(const std::filesystem::path& cbsdenv) {
  return cbsdenv / "var" / "db" / "local.sqlite";
}
inline std::filesystem::path vm_database_path(const std::filesystem::path& cbsdenv, std::string_view jname) {
  return cbsdenv / "jails-system" / std::string(jname) / "local.sqlite";
}

// W/var/db/inv.<node>.sqlite with its jails table, and the local.sqlite link to it.
inline void create_inventory(const std::filesystem::path& cbsdenv, const column_list& columns = jails_columns) {
  const std::filesystem::path dir = cbsdenv / "var" / "db";
  std::filesystem::create_directories(dir);
  database db(dir / "inv.testnode.sqlite");
  db.exec(create_table_sql("jails", columns));
  std::error_code ec;
  std::filesystem::remove(dir / "local.sqlite", ec);
  std::filesystem::create_symlink("inv.testnode.sqlite", dir / "local.sqlite");
}

inline void add_to_inventory(const std::filesystem::path& cbsdenv, std::string_view jname,
                             std::string_view emulator) {
  database db(inventory_path(cbsdenv));
  insert_row(db.get(), "jails", {{"jname", std::string(jname)}, {"emulator", std::string(emulator)}});
}

// W/jails-system/<jname>/local.sqlite with the emulator's tables (none for a jail but settings).
inline void create_vm_tables(const std::filesystem::path& cbsdenv, std::string_view jname,
                             std::string_view emulator) {
  std::filesystem::create_directories(cbsdenv / "jails-system" / std::string(jname));
  database db(vm_database_path(cbsdenv, jname));
  db.exec(create_table_sql("settings", settings_columns(emulator)));
  if (emulator != "jail") db.exec(create_table_sql(disk_table_of(emulator), disk_columns));
}

struct vm_values {
  std::map<std::string, std::string> settings; // column -> value
  std::string dsk_zfs_guid;                    // of dsk1.vhd; empty: no disk row
};

// A VM as bcreate leaves it: its inventory row, then its own database with a
// settings row and its first disk.
inline void create_vm(const std::filesystem::path& cbsdenv, std::string_view jname, std::string_view emulator,
                      const vm_values& values) {
  add_to_inventory(cbsdenv, jname, emulator);
  create_vm_tables(cbsdenv, jname, emulator);
  database db(vm_database_path(cbsdenv, jname));
  insert_row(db.get(), "settings", values.settings);
  if (!values.dsk_zfs_guid.empty())
    insert_row(db.get(), disk_table_of(emulator),
               {{"jname", std::string(jname)}, {"dsk_path", "dsk1.vhd"}, {"dsk_zfs_guid", values.dsk_zfs_guid}});
}

} // namespace bs_router::testing::cbsd_fixture
