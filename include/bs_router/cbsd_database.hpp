#pragma once
// Guid, DskGuid and Vnc read from CBSD's own SQLite files instead of asking
// `cbsd bget`/`bhyve-dsk` (lookup.hpp), which costs a start of cbsd each.
// Where the values are (shared/CBSD-DB.md), with W = cbsdenv:
//   W/var/db/local.sqlite                 jails(jname, emulator): the emulator
//   W/jails-system/<jname>/local.sqlite   settings (one row) and the disks
// Every file is opened read-only (never created, never changed) and each
// read is one statement at a time, finalized when it ends: a WAL reader
// never blocks CBSD's writers and holds back no checkpoint. The connections
// stay open between reads, each tied to its file (held_databases.hpp).
// Anything unexpected is a reason to ask cbsd instead (the caller falls
// back), never to fail the job.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "bs_router/held_databases.hpp"

namespace bs_router {

// Where one emulator keeps its values, the one place that says so. An empty
// column or table: the emulator has none (Guid stays "0", Vnc "").
struct emulator_layout {
  std::string_view emulator;        // jails.emulator
  std::string_view guid_column;     // in settings
  std::string_view disk_table;      // one row per disk: dsk_path, dsk_zfs_guid
  std::string_view vnc_bind_column; // in settings
  std::string_view vnc_port_column; // in settings
};

// The layout of `emulator` ("bhyve", "qemu", "xen", "jail"), nullptr for one
// the router does not know.
const emulator_layout* layout_of(std::string_view emulator);

// The reply fields, with what the cbsd commands give: "0" for a value that is
// empty, NULL or absent; Vnc "" unless asked for and the VM has a settings row.
struct lookup_values {
  std::string guid = "0";
  std::string dsk_guid = "0";
  std::string vnc;
};

// Why a read gave no values (the caller asks cbsd then, and logs each cause once).
enum class database_problem {
  unsafe_name, // the jname is not a plain file name: never a path component
  missing,     // a database or its directory is not there
  busy,        // locked past the busy timeout
  layout,      // a table, a column or a link is not as CBSD lays them out
  unreadable,  // any other SQLite or file error
};
std::string_view to_string(database_problem problem);

struct database_read {
  std::optional<lookup_values> values; // set on success
  database_problem problem = database_problem::unreadable;
  std::string detail; // for the log: which file, SQLite's message
};

// A jname that may become a path component: letters, digits, '_', '-', '.',
// not starting with '.', at most 255 bytes.
bool is_plain_name(std::string_view jname);

class cbsd_database {
 public:
  explicit cbsd_database(std::string cbsdenv,
                         std::chrono::milliseconds busy_timeout = std::chrono::milliseconds{100});

  // For lookups=auto: nullopt when the global inventory is there with
  // jails(jname, emulator), else what is not as expected.
  std::optional<std::string> check_inventory();

  // The values of `jname`. `want_vnc`: a bstart, whose reply carries Vnc.
  // A jname the inventory does not know gets "0", as bget gives.
  database_read read(std::string_view jname, bool want_vnc);

  // Closes the connections kept open between reads (reads have stopped).
  void close_connections() {
    inventory_.close_all();
    vms_.close_all();
  }
  std::size_t open_connections() const { return inventory_.size() + vms_.size(); }

  const std::string& inventory_path() const { return inventory_path_; }

 private:
  std::string cbsdenv_;
  std::string inventory_path_; // W/var/db/local.sqlite
  // Apart, so that a burst over more VMs than vms_ holds never pushes out
  // the inventory, which every read uses.
  held_databases inventory_;
  held_databases vms_;
};

} // namespace bs_router
