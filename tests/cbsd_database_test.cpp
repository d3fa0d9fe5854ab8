// Guid, DskGuid and Vnc read from CBSD's databases: the reader alone, then
// the router end to end (one cbsd run per job, fallback to the commands).

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "bs_router/cbsd_database.hpp"
#include "support/beanstalkd_server.hpp"
#include "support/cbsd_fixture.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

namespace fs = std::filesystem;
namespace fixture = cbsd_fixture;
using nlohmann::json;
using body = nlohmann::ordered_json;

// A fresh cbsdenv with the global inventory and a VM per emulator.
class CbsdDatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/bs_router_cbsd_db.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir = pattern;
    fixture::create_inventory(dir);
    fixture::create_vm(dir, "vm1", "bhyve",
                       {{{"vm_zfs_guid", "1111"}, {"bhyve_vnc_tcp_bind", "127.0.0.2"}, {"vnc_port", "5902"}}, "2222"});
    fixture::create_vm(dir, "q1", "qemu",
                       {{{"vm_zfs_guid", "3333"}, {"qemu_vnc_tcp_bind", "0.0.0.0"}, {"vnc_port", "5903"}}, "4444"});
    fixture::create_vm(dir, "x1", "xen", {{{"xen_vnc_tcp_bind", "10.0.0.1"}, {"vm_vnc_port", "5904"}}, "5555"});
    fixture::add_to_inventory(dir, "jail1", "jail");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  lookup_values read_ok(std::string_view jname, bool want_vnc) {
    const database_read r = cbsd_database(dir.string()).read(jname, want_vnc);
    EXPECT_TRUE(r.values.has_value()) << to_string(r.problem) << ": " << r.detail;
    return r.values.value_or(lookup_values{"?", "?", "?"});
  }
  database_problem read_problem(std::string_view jname) {
    const database_read r = cbsd_database(dir.string()).read(jname, true);
    EXPECT_FALSE(r.values.has_value());
    return r.problem;
  }

  fs::path dir;
};

// Every path under `dir` but the -wal and -shm files that opening a WAL
// database may add beside an existing one, as any reader does (cbsd's own
// read-only look-ups included).
std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string name = e.path().string();
    for (const char* side : {"-wal", "-shm"}) {
      if (name.ends_with(side)) {
        const std::string main_file = name.substr(0, name.size() - 4);
        EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(main_file))) << name;
        name.clear();
        break;
      }
    }
    if (!name.empty()) names.insert(name);
  }
  return names;
}

TEST_F(CbsdDatabaseTest, ValuesPerEmulator) {
  lookup_values v = read_ok("vm1", true);
  EXPECT_EQ(v.guid, "1111");
  EXPECT_EQ(v.dsk_guid, "2222");
  EXPECT_EQ(v.vnc, "127.0.0.2:5902");
  EXPECT_EQ(read_ok("vm1", false).vnc, ""); // only bstart carries Vnc

  v = read_ok("q1", true);
  EXPECT_EQ(v.guid, "3333");
  EXPECT_EQ(v.dsk_guid, "4444");
  EXPECT_EQ(v.vnc, "0.0.0.0:5903");

  v = read_ok("x1", true); // no vm_zfs_guid; the port in vm_vnc_port
  EXPECT_EQ(v.guid, "0");
  EXPECT_EQ(v.dsk_guid, "5555");
  EXPECT_EQ(v.vnc, "10.0.0.1:5904");

  v = read_ok("jail1", true); // a jail has none, and no database is asked
  EXPECT_EQ(v.guid, "0");
  EXPECT_EQ(v.dsk_guid, "0");
  EXPECT_EQ(v.vnc, "");
}

std::string contents(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(CbsdDatabaseTest, UnknownJnameGetsZeroAsBgetGives) {
  const auto before = listing(dir);
  const std::string inventory = contents(dir / "var" / "db" / "inv.testnode.sqlite");
  lookup_values v = read_ok("nosuchvm", true);
  EXPECT_EQ(v.guid, "0");
  EXPECT_EQ(v.dsk_guid, "0");
  EXPECT_EQ(v.vnc, "");
  EXPECT_EQ(listing(dir), before);
  EXPECT_EQ(contents(dir / "var" / "db" / "inv.testnode.sqlite"), inventory); // read, never written
}

TEST_F(CbsdDatabaseTest, EmptyNullAndMultiLineValuesGiveZero) {
  fixture::create_vm(dir, "vm2", "bhyve",
                     {{{"vm_zfs_guid", ""}, {"bhyve_vnc_tcp_bind", "NULL"}, {"vnc_port", "5905"}}, "a\nb"});
  lookup_values v = read_ok("vm2", true);
  EXPECT_EQ(v.guid, "0");
  EXPECT_EQ(v.dsk_guid, "0");
  EXPECT_EQ(v.vnc, "0:5905"); // bget prints 0 for an empty bind
  // No settings row and no disk row: "0", and no Vnc.
  fixture::add_to_inventory(dir, "vm3", "bhyve");
  fixture::create_vm_tables(dir, "vm3", "bhyve");
  v = read_ok("vm3", true);
  EXPECT_EQ(v.guid, "0");
  EXPECT_EQ(v.dsk_guid, "0");
  EXPECT_EQ(v.vnc, "");
}

TEST_F(CbsdDatabaseTest, ReadsWhileAWriterHoldsAWriteTransaction) {
  fixture::database writer(fixture::vm_database_path(dir, "vm1"));
  writer.exec("BEGIN IMMEDIATE");
  writer.exec("UPDATE settings SET vm_zfs_guid = 'uncommitted'");
  fixture::database inventory_writer(fixture::inventory_path(dir));
  inventory_writer.exec("BEGIN IMMEDIATE");
  inventory_writer.exec("UPDATE jails SET emulator = 'jail' WHERE jname = 'vm1'");
  // The committed values, at once: a WAL reader waits for no writer.
  lookup_values v = read_ok("vm1", true);
  EXPECT_EQ(v.guid, "1111");
  EXPECT_EQ(v.dsk_guid, "2222");
  writer.exec("COMMIT");
  inventory_writer.exec("ROLLBACK");
  EXPECT_EQ(read_ok("vm1", true).guid, "uncommitted");
}

// The connections kept open between reads (held_databases.hpp) follow the
// files: a database CBSD replaces, or a VM removed and created again under
// its name, is read anew, never through the connection to the old file.
TEST_F(CbsdDatabaseTest, AReplacedInventoryIsReadAnew) {
  cbsd_database db(dir.string());
  ASSERT_TRUE(db.read("vm1", true).values);
  EXPECT_EQ(db.read("vm1", true).values->guid, "1111");
  EXPECT_EQ(db.open_connections(), 2u); // the inventory and vm1's

  // A new inventory file renamed over the old one, where vm1 is a jail.
  const fs::path db_dir = dir / "var" / "db";
  {
    fixture::database fresh(db_dir / "inv.new.sqlite");
    fresh.exec(fixture::create_table_sql("jails", fixture::jails_columns));
    fixture::insert_row(fresh.get(), "jails", {{"jname", "vm1"}, {"emulator", "jail"}});
  }
  fs::rename(db_dir / "inv.new.sqlite", db_dir / "inv.testnode.sqlite");
  const database_read r = db.read("vm1", true);
  ASSERT_TRUE(r.values) << r.detail;
  EXPECT_EQ(r.values->guid, "0");
  EXPECT_EQ(r.values->dsk_guid, "0");
}

TEST_F(CbsdDatabaseTest, AVmCreatedAgainUnderItsNameIsReadAnew) {
  cbsd_database db(dir.string());
  ASSERT_TRUE(db.read("vm1", true).values);
  // bremove, then bcreate again with other values, with no read between.
  fs::remove_all(dir / "jails-system" / "vm1");
  fixture::create_vm_tables(dir, "vm1", "bhyve");
  {
    fixture::database vm(fixture::vm_database_path(dir, "vm1"));
    fixture::insert_row(vm.get(), "settings", {{"vm_zfs_guid", "9999"}, {"vnc_port", "5999"}});
    fixture::insert_row(vm.get(), "bhyvedsk", {{"jname", "vm1"}, {"dsk_path", "dsk1.vhd"}, {"dsk_zfs_guid", "8888"}});
  }
  const database_read r = db.read("vm1", true);
  ASSERT_TRUE(r.values) << r.detail;
  EXPECT_EQ(r.values->guid, "9999");
  EXPECT_EQ(r.values->dsk_guid, "8888");
  EXPECT_EQ(r.values->vnc, "127.0.0.1:5999");
}

// A connection held between reads holds no read transaction: CBSD's writes
// are seen by the next read, and a checkpoint that must wait for every
// reader (TRUNCATE) completes and empties the -wal.
TEST_F(CbsdDatabaseTest, HeldConnectionsHoldBackNoCheckpoint) {
  cbsd_database db(dir.string());
  ASSERT_TRUE(db.read("vm1", true).values);
  ASSERT_EQ(db.open_connections(), 2u);
  for (const fs::path& file : {fixture::vm_database_path(dir, "vm1"), fixture::inventory_path(dir)}) {
    fixture::database writer(file);
    if (file == fixture::inventory_path(dir)) writer.exec("UPDATE jails SET emulator = 'bhyve' WHERE jname = 'vm1'");
    else writer.exec("UPDATE settings SET vm_zfs_guid = 'written'");
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(writer.get(), "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(st, 0), 0) << file << ": the checkpoint was held back";
    sqlite3_finalize(st);
    EXPECT_EQ(fs::file_size(fs::canonical(file).string() + "-wal"), 0u) << file;
  }
  EXPECT_EQ(db.read("vm1", true).values->guid, "written");
}

TEST_F(CbsdDatabaseTest, HeldConnectionsAreBoundedAndCanBeClosed) {
  cbsd_database db(dir.string());
  for (int i = 0; i < 40; ++i) {
    const std::string jname = "many" + std::to_string(i);
    fixture::create_vm(dir, jname, "bhyve", {{{"vm_zfs_guid", std::to_string(i)}}, "d" + std::to_string(i)});
    const database_read r = db.read(jname, false);
    ASSERT_TRUE(r.values) << r.detail;
    EXPECT_EQ(r.values->guid, std::to_string(i));
    EXPECT_LE(db.open_connections(), held_databases::default_max_held + 1); // the VMs', and the inventory's
  }
  EXPECT_EQ(db.open_connections(), held_databases::default_max_held + 1);
  db.close_connections();
  EXPECT_EQ(db.open_connections(), 0u);
  EXPECT_EQ(db.read("many3", false).values->dsk_guid, "d3"); // and opened again when needed
}

TEST_F(CbsdDatabaseTest, MissingDatabasesAreReportedAndNothingIsCreated) {
  fixture::add_to_inventory(dir, "nodb", "bhyve");
  const auto before = listing(dir);
  EXPECT_EQ(read_problem("nodb"), database_problem::missing);
  EXPECT_FALSE(fs::exists(dir / "jails-system" / "nodb"));
  fs::create_directories(dir / "jails-system" / "nodb");
  EXPECT_EQ(read_problem("nodb"), database_problem::missing);
  EXPECT_FALSE(fs::exists(fixture::vm_database_path(dir, "nodb")));
  fs::remove(dir / "jails-system" / "nodb");
  EXPECT_EQ(listing(dir), before);

  fs::remove(dir / "var" / "db" / "local.sqlite");
  EXPECT_EQ(read_problem("vm1"), database_problem::missing);
  EXPECT_TRUE(cbsd_database(dir.string()).check_inventory().has_value());
  EXPECT_FALSE(fs::exists(dir / "var" / "db" / "local.sqlite"));
}

TEST_F(CbsdDatabaseTest, UnexpectedLayoutsAreReported) {
  // A settings table without the column asked for (an older layout).
  fs::remove_all(dir / "jails-system" / "vm1");
  fs::create_directories(dir / "jails-system" / "vm1");
  {
    fixture::database db(fixture::vm_database_path(dir, "vm1"));
    db.exec("CREATE TABLE settings (vm_cpus integer default 1)");
    db.exec("CREATE TABLE bhyvedsk (jname text, dsk_path text, dsk_zfs_guid text)");
  }
  EXPECT_EQ(read_problem("vm1"), database_problem::layout);
  // An emulator the router does not know.
  fixture::add_to_inventory(dir, "vbox1", "virtualbox");
  EXPECT_EQ(read_problem("vbox1"), database_problem::layout);
  // A file that is not a database.
  { std::ofstream(fixture::vm_database_path(dir, "q1"), std::ios::trunc) << "not a database, just text\n"; }
  EXPECT_NE(read_problem("q1"), database_problem::missing);
  // A link where CBSD keeps a file or a directory, and an inventory link that leaves var/db.
  fs::remove(fixture::vm_database_path(dir, "x1"));
  fs::create_symlink(fixture::vm_database_path(dir, "vm1"), fixture::vm_database_path(dir, "x1"));
  EXPECT_EQ(read_problem("x1"), database_problem::layout);
  fs::remove_all(dir / "jails-system" / "x1");
  fs::create_directory_symlink(dir / "jails-system" / "vm1", dir / "jails-system" / "x1");
  EXPECT_EQ(read_problem("x1"), database_problem::layout);
  fs::remove(dir / "var" / "db" / "local.sqlite");
  fs::create_symlink("../../jails-system/vm1/local.sqlite", dir / "var" / "db" / "local.sqlite");
  EXPECT_EQ(read_problem("vm1"), database_problem::layout);
  EXPECT_TRUE(cbsd_database(dir.string()).check_inventory().has_value());
}

TEST_F(CbsdDatabaseTest, OnlyPlainNamesBecomePaths) {
  fs::create_directories(dir / "jails-system" / "vm1" / "sub");
  for (const char* name : {"", ".", "..", "../vm1", "vm1/..", "a/b", "vm1/sub", ".hidden", "a b", "a\nb", "a$b"}) {
    EXPECT_FALSE(is_plain_name(name)) << name;
    EXPECT_EQ(read_problem(name), database_problem::unsafe_name) << name;
  }
  for (const char* name : {"vm1", "my-vm_2", "web.example"}) EXPECT_TRUE(is_plain_name(name)) << name;
}

TEST_F(CbsdDatabaseTest, InventoryCheck) {
  EXPECT_EQ(cbsd_database(dir.string()).check_inventory(), std::nullopt);
  fixture::create_inventory(dir / "old", {{"jname", "text default 0 unique PRIMARY KEY"}, {"jid", "integer"}});
  const auto problem = cbsd_database((dir / "old").string()).check_inventory();
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("emulator"), std::string::npos) << *problem;
}

// --- the router ---------------------------------------------------------------

class DatabaseLookupsTest : public ::testing::Test {
 protected:
  beanstalkd_server server;
};

std::size_t runs_started(const test_pool& pool) {
  std::size_t n = 0;
  for (const auto& r : pool.records())
    if (r["event"] == "start") ++n;
  return n;
}

TEST_F(DatabaseLookupsTest, ValuesFromTheDatabasesWithOneCbsdRunPerJob) {
  test_pool pool(server);
  fixture::create_inventory(pool.dir());
  fixture::create_vm(pool.dir(), "vm1", "bhyve",
                     {{{"vm_zfs_guid", "1111"}, {"bhyve_vnc_tcp_bind", "127.0.0.2"}, {"vnc_port", "5902"}}, "2222"});
  fixture::create_vm(pool.dir(), "x1", "xen", {{{"xen_vnc_tcp_bind", "10.0.0.1"}, {"vm_vnc_port", "5904"}}, "5555"});
  pool.start_router();

  // No emulator argument (control-api sends none): the inventory's counts.
  auto replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "1111");
  EXPECT_EQ(replies.back()["DskGuid"], "2222");
  EXPECT_EQ(replies.back()["Vnc"], "");
  EXPECT_EQ(runs_started(pool), 1u);

  replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstart","CommandArgs":{"jname":"x1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "0");
  EXPECT_EQ(replies.back()["DskGuid"], "5555");
  EXPECT_EQ(replies.back()["Vnc"], "10.0.0.1:5904");
  EXPECT_EQ(runs_started(pool), 2u);

  replies = pool.wait_final_reply(pool.put_job(R"({"Command":"jstart","CommandArgs":{"jname":"unknown"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "0");
  EXPECT_EQ(replies.back()["DskGuid"], "0");
  EXPECT_EQ(runs_started(pool), 3u);
  EXPECT_NE(pool.log_text().find("read from CBSD's databases"), std::string::npos);
}

// How many of the router's descriptors are open on `file` (Linux: /proc).
std::size_t descriptors_on(pid_t pid, const fs::path& file) {
  std::size_t n = 0;
  const fs::path target = fs::canonical(file);
  std::error_code ec;
  for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code gone;
    if (fs::read_symlink(fd.path(), gone) == target) ++n;
  }
  return n;
}

// The connections are held between reads, and closed once no job has read
// for a while (10 s): an idle router keeps no file of CBSD's open.
TEST_F(DatabaseLookupsTest, TheConnectionsAreHeldBetweenReadsAndClosedOnceReadsStop) {
#ifndef __linux__
  GTEST_SKIP() << "reads the router's descriptors from /proc";
#endif
  test_pool pool(server);
  fixture::create_inventory(pool.dir());
  fixture::create_vm(pool.dir(), "vm1", "bhyve", {{{"vm_zfs_guid", "1111"}}, "2222"});
  pool.start_router();
  auto replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "1111");
  const fs::path vm_db = fixture::vm_database_path(pool.dir(), "vm1");
  const fs::path inventory = fixture::inventory_path(pool.dir());
  EXPECT_EQ(descriptors_on(pool.router_pid(), vm_db), 1u);
  EXPECT_EQ(descriptors_on(pool.router_pid(), inventory), 1u);
  EXPECT_TRUE(wait_until(
      [&] { return descriptors_on(pool.router_pid(), vm_db) + descriptors_on(pool.router_pid(), inventory) == 0; },
      std::chrono::seconds(30)))
      << "the router still holds CBSD's databases open";
  // And a later job reads again.
  replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["DskGuid"], "2222");
}

TEST_F(DatabaseLookupsTest, ACreateJobCarriesTheRowsItsRunWrote) {
  test_pool pool(server);
  fixture::create_inventory(pool.dir());
  pool.start_router();
  auto replies = pool.wait_final_reply(
      pool.put_job(R"({"Command":"bcreate","CommandArgs":{"jname":"new1","fake_create_vm":"bhyve"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0) << replies.back().dump();
  EXPECT_EQ(replies.back()["Guid"], "created-guid-new1");
  EXPECT_EQ(replies.back()["DskGuid"], "created-dsk-new1");
  replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstart","CommandArgs":{"jname":"new1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Vnc"], "0.0.0.0:5909");
  EXPECT_EQ(runs_started(pool), 2u);
}

TEST_F(DatabaseLookupsTest, AMissingVmDatabaseFallsBackToCbsdAndCreatesNothing) {
  test_pool pool(server);
  fixture::create_inventory(pool.dir());
  fixture::add_to_inventory(pool.dir(), "nodb", "bhyve");
  pool.start_router();
  for (int i = 0; i < 2; ++i) {
    auto replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"nodb"}})"));
    ASSERT_FALSE(replies.empty());
    EXPECT_EQ(replies.back()["ErrCode"], 0);
    EXPECT_EQ(replies.back()["Guid"], "bget-guid-nodb");
    EXPECT_EQ(replies.back()["DskGuid"], "dsk-guid-nodb");
  }
  EXPECT_EQ(pool.runs_of("bget").size(), 2u);
  EXPECT_FALSE(fs::exists(pool.dir() / "jails-system"));
  // Logged once for the cause, not once per job.
  const std::string log = pool.log_text();
  const std::string said = "asked of cbsd: a database that is not there";
  ASSERT_NE(log.find(said), std::string::npos) << log;
  EXPECT_EQ(log.find(said, log.find(said) + 1), std::string::npos) << log;
}

TEST_F(DatabaseLookupsTest, AnOddInventoryMeansTheCbsdCommands) {
  test_pool pool(server);
  fixture::create_inventory(pool.dir(), {{"jname", "text default 0 unique PRIMARY KEY"}, {"jid", "integer"}});
  pool.start_router();
  auto replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "bget-guid-vm1");
  EXPECT_EQ(runs_started(pool), 3u);
}

TEST_F(DatabaseLookupsTest, LookupsCbsdAsksCbsdAndDatabaseFallsBackPerJob) {
  test_pool pool(server, json{{"lookups", "cbsd"}});
  fixture::create_inventory(pool.dir());
  fixture::create_vm(pool.dir(), "vm1", "bhyve", {{{"vm_zfs_guid", "1111"}}, "2222"});
  pool.start_router();
  auto replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "bget-guid-vm1");
  EXPECT_EQ(pool.stop_router(), 0);

  // lookups "database" with no inventory yet: commands until it appears.
  pool.write_config(json{{"lookups", "database"}});
  fs::remove(pool.dir() / "var" / "db" / "local.sqlite");
  pool.start_router();
  replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "bget-guid-vm1");
  fs::create_symlink("inv.testnode.sqlite", pool.dir() / "var" / "db" / "local.sqlite");
  replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstop","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "1111");
  EXPECT_EQ(pool.runs_of("bget").size(), 2u);
}

TEST_F(DatabaseLookupsTest, AJnameCbsdWouldEvaluateGetsNoLookUpFromTheDatabasesEither) {
  test_pool pool(server, json{{"allow_unsafe_values", true}});
  fixture::create_inventory(pool.dir());
  fixture::create_vm(pool.dir(), "vm1", "bhyve", {{{"vm_zfs_guid", "1111"}}, "2222"});
  pool.start_router();
  auto replies = pool.wait_final_reply(pool.put_job(R"({"Command":"bstart","CommandArgs":{"jname":"vm1$x"}})"));
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Guid"], "0");
  EXPECT_EQ(replies.back()["DskGuid"], "0");
  EXPECT_EQ(replies.back()["Vnc"], "");
  EXPECT_EQ(runs_started(pool), 1u);
  EXPECT_EQ(pool.log_text().find("asked of cbsd:"), std::string::npos);
}

} // namespace
} // namespace bs_router::testing
