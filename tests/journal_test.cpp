#include "bs_router/journal.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace bs_router {
namespace {

namespace fs = std::filesystem;

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bs_router-journal-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = fs::path(tmpl) / "state";
  }
  void TearDown() override { fs::remove_all(dir.parent_path()); }
  fs::path dir;
};

journal_entry finished_entry(std::uint64_t id) {
  journal_entry e;
  e.job_id = id;
  e.state = journal_state::finished;
  e.body = "{\"Command\":\"jls\"}";
  e.reserved_at = 1700000000;
  reply r;
  r.job_id = id;
  r.err_code = 3;
  r.message = std::string("out\n\xff\x00 bytes", 12);
  r.guid = "g";
  r.dsk_guid = "d";
  r.vnc = "127.0.0.1:5900";
  r.stderr_text = "err";
  r.message_bytes = 99;
  r.stderr_bytes = 3;
  r.duration_seconds = 1.25;
  e.result = r;
  return e;
}

TEST_F(JournalTest, CreatesItsDirectoryAndRoundTripsEntries) {
  journal j(dir.string());
  EXPECT_TRUE(fs::is_directory(dir));
  journal_entry running;
  running.job_id = 7;
  running.state = journal_state::running;
  running.body = "{\"Command\":\"bstart\",\"CommandArgs\":{\"jname\":\"v\\n1\"}}";
  running.reserved_at = 42;
  j.save(running);
  j.save(finished_entry(3));

  auto entries = j.load();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].job_id, 3u); // ordered by id
  EXPECT_EQ(entries[0].state, journal_state::finished);
  ASSERT_TRUE(entries[0].result.has_value());
  EXPECT_EQ(entries[0].result->err_code, 3);
  EXPECT_EQ(entries[0].result->vnc, "127.0.0.1:5900");
  EXPECT_EQ(entries[0].result->message_bytes, 99u);
  EXPECT_DOUBLE_EQ(entries[0].result->duration_seconds, 1.25);
  EXPECT_EQ(entries[1].job_id, 7u);
  EXPECT_EQ(entries[1].state, journal_state::running);
  EXPECT_EQ(entries[1].body, running.body);
  EXPECT_EQ(entries[1].reserved_at, 42);
}

TEST_F(JournalTest, SaveReplacesTheStateAndRemoveForgets) {
  journal j(dir.string());
  journal_entry e;
  e.job_id = 5;
  e.state = journal_state::accepted;
  j.save(e);
  e.state = journal_state::running;
  j.save(e);
  auto entries = j.load();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].state, journal_state::running);
  j.remove(5);
  j.remove(5); // removing twice is fine
  EXPECT_TRUE(j.load().empty());
  // Nothing is left behind: the journal never grows past the jobs in flight.
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST_F(JournalTest, AnInterruptedWriteLeavesTheOldStateReadable) {
  journal j(dir.string());
  journal_entry e;
  e.job_id = 9;
  e.state = journal_state::running;
  j.save(e);
  // A crash between write and rename leaves only a temporary file.
  std::ofstream(dir / "9.json.tmp") << "{\"job_id\":9,\"sta";
  auto entries = j.load();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].state, journal_state::running);
  EXPECT_FALSE(fs::exists(dir / "9.json.tmp"));
}

TEST_F(JournalTest, UnreadableEntriesAreSetAsideAndReported) {
  journal j(dir.string());
  std::ofstream(dir / "11.json") << "garbage";
  std::ofstream(dir / "12.json") << R"({"job_id":13,"state":"running","body":"","reserved_at":0})";
  std::ofstream(dir / "notes.txt") << "operator's file";
  std::vector<std::string> problems;
  EXPECT_TRUE(j.load(&problems).empty());
  EXPECT_EQ(problems.size(), 2u);
  EXPECT_TRUE(fs::exists(dir / "11.corrupt"));
  EXPECT_TRUE(fs::exists(dir / "12.corrupt"));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
}

TEST_F(JournalTest, FinishedWithoutResultIsCorrupt) {
  journal j(dir.string());
  std::ofstream(dir / "4.json") << R"({"job_id":4,"state":"finished","body":"","reserved_at":0})";
  std::vector<std::string> problems;
  EXPECT_TRUE(j.load(&problems).empty());
  EXPECT_EQ(problems.size(), 1u);
}

} // namespace
} // namespace bs_router
