#include "bs_router/journal.hpp"
#include "bs_router/journal_files.hpp"
#include "bs_router/safe_files.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <cstdio>
#include <functional>
#include <fstream>
#include <iterator>
#include <sstream>

#include <cerrno>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/small_filesystem.hpp"

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

journal_entry entry(std::uint64_t id, journal_state state, std::string body = {}) {
  journal_entry e;
  e.key = id;
  e.broker_id = std::to_string(id);
  e.state = state;
  e.body = std::move(body);
  return e;
}

journal_entry finished_entry(std::uint64_t id) {
  journal_entry e = entry(id, journal_state::finished, "{\"Command\":\"jls\"}");
  e.taken_at = 1700000000;
  reply r;
  r.job_id = std::to_string(id);
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

// A job taken over from a connection the broker kept it for, answered or
// not: the next start must know both (see router::take_over).
TEST_F(JournalTest, TakenOverAndRepliedMarksSurviveARestart) {
  {
    journal j(dir.string());
    journal_entry taken = entry(5, journal_state::running, "{\"Command\":\"jls\"}");
    taken.taken_over = true;
    j.save(taken);
    journal_entry answered = finished_entry(6);
    answered.taken_over = true;
    answered.replied = true;
    j.save(answered);
    j.save(finished_entry(7));
    j.sync();
  }
  journal j(dir.string());
  auto entries = j.load();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_TRUE(entries[0].taken_over);
  EXPECT_FALSE(entries[0].replied);
  EXPECT_TRUE(entries[1].taken_over);
  EXPECT_TRUE(entries[1].replied);
  EXPECT_FALSE(entries[2].taken_over);
  EXPECT_FALSE(entries[2].replied);
}

TEST_F(JournalTest, CreatesItsDirectoryAndRoundTripsEntries) {
  journal j(dir.string());
  EXPECT_TRUE(fs::is_directory(dir));
  journal_entry running = entry(7, journal_state::running,
                                "{\"Command\":\"bstart\",\"CommandArgs\":{\"jname\":\"v\\n1\"}}");
  running.taken_at = 42;
  j.save(running);
  j.save(finished_entry(3));

  auto entries = j.load();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].key, 3u); // ordered by id
  EXPECT_EQ(entries[0].state, journal_state::finished);
  ASSERT_TRUE(entries[0].result.has_value());
  EXPECT_EQ(entries[0].result->err_code, 3);
  EXPECT_EQ(entries[0].result->vnc, "127.0.0.1:5900");
  EXPECT_EQ(entries[0].result->message_bytes, 99u);
  EXPECT_DOUBLE_EQ(entries[0].result->duration_seconds, 1.25);
  EXPECT_EQ(entries[1].key, 7u);
  EXPECT_EQ(entries[1].state, journal_state::running);
  EXPECT_EQ(entries[1].body, running.body);
  EXPECT_EQ(entries[1].taken_at, 42);
}

TEST_F(JournalTest, SaveReplacesTheStateAndRemoveForgets) {
  journal j(dir.string());
  journal_entry e = entry(5, journal_state::accepted);
  j.save(e);
  e.state = journal_state::running;
  j.save(e);
  auto entries = j.load();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].state, journal_state::running);
  j.remove(5);
  j.remove(5); // removing twice is fine
  EXPECT_TRUE(j.load().empty());
  EXPECT_EQ(j.size(), 0u);
  // Nothing is left behind: the journal never grows past the jobs in flight.
  EXPECT_EQ(fs::file_size(dir / "jobs.journal"), 0u);
  std::vector<std::string> names;
  for (const auto& f : fs::directory_iterator(dir)) names.push_back(f.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"jobs.journal"});
}

TEST_F(JournalTest, ASecondJournalSeesWhatTheFirstAppended) {
  journal writer(dir.string());
  writer.load();
  writer.save(entry(8, journal_state::running, "b"));
  writer.save(finished_entry(9));
  writer.remove(9);
  // Read as the next start reads it, crash or not: without a sync the lines
  // are in the file all the same.
  auto seen = journal::inspect(dir.string());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].key, 8u);
  EXPECT_EQ(seen[0].body, "b");
  journal next(dir.string());
  auto entries = next.load();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].state, journal_state::running);
}

TEST_F(JournalTest, SyncMakesEveryEarlierAppendDurable) {
  journal j(dir.string());
  j.load();
  journal_entry e;
  e.key = 1; e.broker_id = "1";
  const auto first = j.save(e);
  e.key = 2; e.broker_id = "2";
  const auto second = j.save(e);
  EXPECT_FALSE(j.synced(first));
  EXPECT_FALSE(j.synced(second));
  EXPECT_EQ(j.syncs(), 0u);
  j.sync();
  EXPECT_TRUE(j.synced(first));
  EXPECT_TRUE(j.synced(second));
  EXPECT_EQ(j.syncs(), 1u); // one for both
  j.sync();
  EXPECT_EQ(j.syncs(), 1u); // nothing new to sync
  e.key = 3; e.broker_id = "3";
  EXPECT_FALSE(j.synced(j.save(e)));
}

TEST_F(JournalTest, ALineTornByACrashIsIgnored) {
  {
    journal j(dir.string());
    j.save(entry(9, journal_state::running));
    j.sync();
  }
  // A crash in the middle of the next append leaves a line without its end.
  std::ofstream(dir / "jobs.journal", std::ios::app) << "0123456789abcdef {\"job_id\":9,\"sta";
  journal j(dir.string());
  std::vector<std::string> problems;
  auto entries = j.load(&problems);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].state, journal_state::running);
  EXPECT_TRUE(problems.empty());
  // Rewritten without it, so the next append starts on a line of its own.
  journal_entry e;
  e.key = 10; e.broker_id = "10";
  j.save(e);
  EXPECT_EQ(journal::inspect(dir.string()).size(), 2u);
}

TEST_F(JournalTest, GarbledLinesAreSkippedReportedAndKept) {
  {
    journal j(dir.string());
    journal_entry e;
    e.key = 1; e.broker_id = "1";
    j.save(e);
    e.key = 2; e.broker_id = "2";
    j.save(e);
    j.sync();
  }
  std::string text;
  {
    std::ifstream in(dir / "jobs.journal");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto first_line_end = text.find('\n');
  text[first_line_end - 3] ^= 0x01; // one bit of job 1's line flipped
  std::ofstream(dir / "jobs.journal", std::ios::trunc) << text << "not a journal line\n";
  journal j(dir.string());
  std::vector<std::string> problems;
  auto entries = j.load(&problems);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].key, 2u);
  ASSERT_EQ(problems.size(), 3u); // two lines, and where the old log was kept
  EXPECT_NE(problems[0].find("line 1: unreadable (checksum does not match)"), std::string::npos) << problems[0];
  EXPECT_NE(problems[1].find("line 3: unreadable"), std::string::npos) << problems[1];
  std::size_t kept = 0;
  for (const auto& f : fs::directory_iterator(dir))
    if (f.path().filename().string().rfind("jobs.journal.corrupt-", 0) == 0) ++kept;
  EXPECT_EQ(kept, 1u);
}

TEST_F(JournalTest, GrowsNoFurtherThanItsBoundWhileJobsComeAndGo) {
  journal j(dir.string());
  j.load();
  journal_entry e;
  e.body = std::string(1000, 'x');
  for (std::uint64_t id = 1; id <= 20000; ++id) {
    e.key = id; e.broker_id = std::to_string(id);
    j.save(e);
    j.remove(id);
    if (id % 50 == 0) j.sync();
  }
  e.key = 20001; e.broker_id = "20001";
  j.save(e);
  j.sync();
  // 20,000 jobs came and went (about 22 MB of lines); one is in flight.
  EXPECT_LT(fs::file_size(dir / "jobs.journal"), 5u * 1024 * 1024);
  const auto entries = journal::inspect(dir.string());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].key, 20001u);
}

TEST_F(JournalTest, EntriesOfTheOlderOneFilePerJobLayoutAreTakenOver) {
  fs::create_directories(dir);
  std::ofstream(dir / "12.json") << R"({"job_id":12,"state":"running","body":"old","reserved_at":5})";
  std::ofstream(dir / "13.json.tmp") << R"({"job_id":13,"sta)"; // a write cut short
  journal j(dir.string());
  auto entries = j.load();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].key, 12u);
  EXPECT_EQ(entries[0].body, "old");
  EXPECT_EQ(entries[0].taken_at, 5);
  EXPECT_FALSE(fs::exists(dir / "12.json"));
  EXPECT_FALSE(fs::exists(dir / "13.json.tmp"));
  EXPECT_EQ(journal::inspect(dir.string()).size(), 1u); // now in the log
}

TEST_F(JournalTest, UnreadableEntriesAreSetAsideAndReported) {
  journal j(dir.string());
  std::ofstream(dir / "11.json") << "garbage";
  std::ofstream(dir / "12.json") << R"({"job_id":13,"state":"running","body":"","reserved_at":0})";
  std::ofstream(dir / "notes.txt") << "operator's file";
  std::vector<std::string> problems;
  EXPECT_TRUE(j.load(&problems).empty());
  EXPECT_EQ(problems.size(), 4u); // each unreadable, and where it went
  EXPECT_TRUE(fs::exists(dir / "11.corrupt"));
  EXPECT_TRUE(fs::exists(dir / "12.corrupt"));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
}

TEST_F(JournalTest, FinishedWithoutResultIsCorrupt) {
  journal j(dir.string());
  std::ofstream(dir / "4.json") << R"({"job_id":4,"state":"finished","body":"","reserved_at":0})";
  std::vector<std::string> problems;
  EXPECT_TRUE(j.load(&problems).empty());
  EXPECT_FALSE(problems.empty());
}

std::string contents_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Root writes the journal through no link it did not make: a
// jobs.journal.tmp left there (by an earlier life, or planted while the
// statedir was open to others) is replaced, its target left alone.
TEST_F(JournalTest, APlantedTemporaryIsReplacedNotWrittenThrough) {
  fs::create_directories(dir);
  const fs::path target = dir.parent_path() / "passwd";
  std::ofstream(target) << "root:x:0:0\n";
  fs::create_symlink(target, dir / "jobs.journal.tmp");
  {
    journal j(dir.string());
    j.load();
    j.save(entry(3, journal_state::running, "secret body"));
    j.sync();
  }
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");
  EXPECT_FALSE(fs::is_symlink(dir / "jobs.journal"));
  ASSERT_EQ(journal::inspect(dir.string()).size(), 1u);
  struct stat status {};
  ASSERT_EQ(::stat((dir / "jobs.journal").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0600u);
}

// A journal that is a link, or not the router's own file, is not read as one.
TEST_F(JournalTest, AJournalThatIsALinkIsRefused) {
  fs::create_directories(dir);
  const fs::path target = dir.parent_path() / "elsewhere";
  std::ofstream(target) << "";
  fs::create_symlink(target, dir / "jobs.journal");
  journal j(dir.string());
  try {
    j.load();
    FAIL() << "no error";
  } catch (const unsafe_path_error& error) {
    EXPECT_NE(std::string(error.what()).find((dir / "jobs.journal").string() + ": a symbolic link"), std::string::npos)
        << error.what();
  }
}

// The statedir holds job bodies and decides what runs: only a directory of
// the router's user that nobody else can write in.
TEST_F(JournalTest, AStatedirOthersCanWriteInIsRefused) {
  fs::create_directories(dir);
  ::chmod(dir.c_str(), 0770);
  try {
    journal j(dir.string());
    FAIL() << "no error";
  } catch (const unsafe_path_error& error) {
    EXPECT_EQ(std::string(error.what()).rfind(dir.string() + ": writable by its group (mode 0770)", 0), 0u)
        << error.what();
  }
  ::chmod(dir.c_str(), 0700);
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  EXPECT_THROW(journal j(dir.string()), unsafe_path_error);
}

// A statedir on a filesystem of 64 KiB fills after a few dozen jobs when the
// file is compacted only past its size bound; a failed append compacts it
// to the live entries and writes once more, so the journal never wedges
// while what is live fits.
TEST_F(JournalTest, AFullDiskIsCompactedAndTheAppendTriedAgain) {
  fs::create_directories(dir);
  testing::small_filesystem disk(dir, 64 * 1024);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  {
    journal j(dir.string());
    j.load();
    const std::string body(3000, 'x');
    for (std::uint64_t id = 1; id <= 200; ++id) {
      journal_entry e = entry(id, journal_state::accepted, body);
      ASSERT_NO_THROW(j.save(e)) << "job " << id;
      e.state = journal_state::running;
      ASSERT_NO_THROW(j.save(e)) << "job " << id;
      ASSERT_NO_THROW(j.sync()) << "job " << id;
      ASSERT_NO_THROW(j.remove(id)) << "job " << id;
    }
    j.save(entry(201, journal_state::running, body));
    j.sync();
  }
  const auto entries = journal::inspect(dir.string());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].key, 201u);
}

// Someone else fills the filesystem: the next append finds no room, compacts
// the file (here to nothing: no job is in flight) and writes again.
TEST_F(JournalTest, AnAppendThatFindsTheDiskFullCompactsAndWritesAgain) {
  fs::create_directories(dir);
  testing::small_filesystem disk(dir, 64 * 1024);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  {
    journal j(dir.string());
    j.load();
    const std::string body(1000, 'x');
    for (std::uint64_t id = 1; id <= 12; ++id) {
      j.save(entry(id, journal_state::running, body));
      j.remove(id);
    }
    j.sync();
    {
      std::ofstream filler(dir / "filler", std::ios::binary);
      const std::string block(4096, 'f');
      while (filler.write(block.data(), static_cast<std::streamsize>(block.size())) && filler.flush()) {
      }
    }
    // Longer than a page: it cannot fit in what the file's last one has left.
    ASSERT_NO_THROW(j.save(entry(13, journal_state::running, std::string(5000, 'y'))));
    ASSERT_NO_THROW(j.sync());
  }
  const auto entries = journal::inspect(dir.string());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].key, 13u);
}


// A line as the log holds it: the FNV-1a checksum of the JSON, then the JSON.
std::string journal_line(const std::string& text) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char sum[17];
  std::snprintf(sum, sizeof sum, "%016llx", static_cast<unsigned long long>(h));
  return std::string(sum) + " " + text + "\n";
}

// The log written by the version that keyed entries by the beanstalkd job id
// (numbers for job_id, in entries, removals and results): read back, the id
// becomes both the key and the broker id, the result's JobID stays a number,
// and the rewrite stores them in today's form.
TEST_F(JournalTest, ALogKeyedByBeanstalkJobIdsIsReadAndMigrated) {
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace);
  {
    std::ofstream log(dir / "jobs.journal");
    log << journal_line(R"({"job_id":5,"state":"running","body":"b5","reserved_at":100})")
        << journal_line(R"({"job_id":6,"state":"accepted","body":"b6","reserved_at":101})")
        << journal_line(R"({"job_id":6,"removed":true})")
        << journal_line(R"({"job_id":7,"state":"finished","body":"b7","reserved_at":102,"taken_over":true,)"
                        R"("result":{"job_id":7,"err_code":0,"message":"m","progress":100,"guid":"0","dsk_guid":"0",)"
                        R"("vnc":"","stderr":"","message_bytes":1,"stderr_bytes":0,"duration":0.5}})");
  }
  fs::permissions(dir / "jobs.journal", fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  std::vector<std::string> problems;
  {
    journal j(dir.string());
    std::vector<journal_entry> entries = j.load(&problems);
    EXPECT_TRUE(problems.empty()) << problems.front();
    ASSERT_EQ(entries.size(), 2u);
    EXPECT_EQ(entries[0].key, 5u);
    EXPECT_EQ(entries[0].broker_id, "5");
    EXPECT_TRUE(entries[0].numeric_id);
    EXPECT_EQ(entries[0].state, journal_state::running);
    EXPECT_EQ(entries[0].body, "b5");
    EXPECT_EQ(entries[1].key, 7u);
    EXPECT_EQ(entries[1].broker_id, "7");
    EXPECT_TRUE(entries[1].taken_over);
    ASSERT_TRUE(entries[1].result);
    EXPECT_EQ(entries[1].result->job_id, "7");
    EXPECT_TRUE(entries[1].result->numeric_id);
  }
  std::string text;
  {
    std::ifstream in(dir / "jobs.journal");
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_NE(text.find(R"("key":5)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("broker_id":"7")"), std::string::npos) << text;
  // And read again in today's form, the same.
  journal again(dir.string());
  std::vector<journal_entry> entries = again.load(&problems);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].broker_id, "7");
  EXPECT_EQ(entries[1].result->job_id, "7");
}

// A broker id that is not a number (an AMQP message id) is kept as it is.
TEST_F(JournalTest, BrokerIdsThatAreNotNumbersAreKept) {
  {
    journal j(dir.string());
    journal_entry e = finished_entry(3);
    e.broker_id = "job-3:a.b";
    e.numeric_id = false;
    e.reply_to = "replies.x";
    e.result->job_id = e.broker_id;
    e.result->numeric_id = false;
    j.save(e);
    j.sync();
  }
  journal j(dir.string());
  std::vector<journal_entry> entries = j.load();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].key, 3u);
  EXPECT_EQ(entries[0].broker_id, "job-3:a.b");
  EXPECT_FALSE(entries[0].numeric_id);
  EXPECT_EQ(entries[0].reply_to, "replies.x");
  EXPECT_EQ(entries[0].result->job_id, "job-3:a.b");
  EXPECT_FALSE(entries[0].result->numeric_id);
}


// The journal's file operations, each made to fail as a disk does when a
// test says so; otherwise the POSIX calls.
class failing_files : public journal_files {
 public:
  int write_errno = EIO;
  int failing_writes = 0;     // the next so many writes fail...
  bool write_half_first = false; // ...each after writing half of its bytes
  int failing_fdatasyncs = 0;
  bool drop_pages_on_failed_fdatasync = false; // as a kernel may: the file loses what was unsynced
  int failing_renames = 0;
  int failing_creates = 0;
  int fdatasyncs = 0;          // calls, failed or not
  int renames = 0;

  ssize_t pwrite(int fd, const void* data, std::size_t size, off_t offset) override {
    if (failing_writes > 0) {
      --failing_writes;
      if (write_half_first && size > 1) (void)!posix_journal_files().pwrite(fd, data, size / 2, offset);
      errno = write_errno;
      return -1;
    }
    return posix_journal_files().pwrite(fd, data, size, offset);
  }
  int fdatasync(int fd) override {
    ++fdatasyncs;
    if (failing_fdatasyncs > 0) {
      --failing_fdatasyncs;
      if (drop_pages_on_failed_fdatasync) (void)!::ftruncate(fd, synced_size);
      errno = EIO;
      return -1;
    }
    const int result = posix_journal_files().fdatasync(fd);
    struct stat st {};
    if (::fstat(fd, &st) == 0) synced_size = st.st_size;
    return result;
  }
  int fsync(int fd) override { return posix_journal_files().fsync(fd); }
  int renameat(int from_dir, const char* from, int to_dir, const char* to) override {
    ++renames;
    if (failing_renames > 0) {
      --failing_renames;
      errno = EIO;
      return -1;
    }
    const int result = posix_journal_files().renameat(from_dir, from, to_dir, to);
    if (result == 0) synced_size = 0; // a new file; its size is known after the next sync
    return result;
  }
  int create_new_file(const directory& dir, const std::string& name, int flags, mode_t mode) override {
    if (failing_creates > 0) {
      --failing_creates;
      throw std::system_error(ENOSPC, std::generic_category(), "open " + dir.path_of(name));
    }
    return posix_journal_files().create_new_file(dir, name, flags, mode);
  }

 private:
  off_t synced_size = 0;
};

std::string file_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::uint64_t> ids_in(const fs::path& dir) {
  std::vector<std::uint64_t> ids;
  for (const journal_entry& e : journal::inspect(dir.string())) ids.push_back(e.key);
  return ids;
}

int error_of_call(const std::function<void()>& call) {
  try {
    call();
  } catch (const std::system_error& e) {
    return e.code().value();
  }
  return 0;
}

// Journal write fails when a job is taken (read-only, an I/O error, a disk
// full with the jobs in flight): save throws and nothing is appended, not
// even part of the line; once the disk works again the journal goes on.
TEST_F(JournalTest, AWriteThatFailsAgainAfterTheCompactionAppendsNothing) {
  failing_files files;
  journal j(dir.string(), files);
  j.load();
  j.save(entry(1, journal_state::running, "one"));
  j.sync();
  const std::string before = file_text(dir / "jobs.journal");

  files.failing_writes = 1000;
  files.write_half_first = true;
  EXPECT_EQ(error_of_call([&] { j.save(entry(2, journal_state::accepted, "two")); }), EIO);
  EXPECT_EQ(j.size(), 1u);
  EXPECT_EQ(file_text(dir / "jobs.journal"), before);
  EXPECT_FALSE(fs::exists(dir / "jobs.journal.tmp"));

  files.failing_writes = 0;
  const std::uint64_t saved = j.save(entry(3, journal_state::accepted, "three"));
  j.sync();
  EXPECT_TRUE(j.synced(saved));
  EXPECT_EQ(ids_in(dir), (std::vector<std::uint64_t>{1, 3}));
}

// The journal's fdatasync fails: sync throws, and the append is not taken
// for durable. The kernel may have dropped the pages it could not write, so
// the next sync writes the whole journal anew from memory (a rename) and
// never trusts a later fdatasync.
TEST_F(JournalTest, AFailedFdatasyncMakesTheNextSyncRewriteTheJournalFromMemory) {
  failing_files files;
  journal j(dir.string(), files);
  j.load();
  j.save(entry(1, journal_state::running, "one"));
  j.sync();
  const std::uint64_t saved = j.save(entry(2, journal_state::running, "two"));
  files.failing_fdatasyncs = 1;
  files.drop_pages_on_failed_fdatasync = true;
  EXPECT_EQ(error_of_call([&] { j.sync(); }), EIO);
  EXPECT_FALSE(j.synced(saved));
  EXPECT_EQ(ids_in(dir), (std::vector<std::uint64_t>{1})); // entry 2 lost with the pages

  const int fdatasyncs = files.fdatasyncs;
  const int renames = files.renames;
  ASSERT_NO_THROW(j.sync());
  EXPECT_TRUE(j.synced(saved));
  EXPECT_EQ(files.fdatasyncs, fdatasyncs);
  EXPECT_EQ(files.renames, renames + 1);
  EXPECT_EQ(ids_in(dir), (std::vector<std::uint64_t>{1, 2}));

  // Written anew, the file is trusted again: the next sync is an fdatasync.
  j.save(entry(3, journal_state::running, "three"));
  j.sync();
  EXPECT_EQ(files.fdatasyncs, fdatasyncs + 1);
  EXPECT_EQ(files.renames, renames + 1);
}

// A compaction that cannot be made (the disk full while the new file is
// created or written, a rename that fails) keeps the journal it was to
// replace, leaves no jobs.journal.tmp taking room, and throws; the next
// sync tries it again.
TEST_F(JournalTest, ARewriteThatFailsKeepsTheOldJournalAndLeavesNoTemporary) {
  for (const std::string failing : {"create", "write", "rename"}) {
    SCOPED_TRACE(failing);
    fs::remove_all(dir);
    failing_files files;
    journal j(dir.string(), files);
    j.load();
    j.save(entry(1, journal_state::running, "one"));
    j.sync();
    const std::uint64_t saved = j.save(entry(2, journal_state::running, "two"));
    files.failing_fdatasyncs = 1; // the next sync is a rewrite
    EXPECT_EQ(error_of_call([&] { j.sync(); }), EIO);
    const std::string before = file_text(dir / "jobs.journal");

    files.write_errno = ENOSPC;
    files.write_half_first = true;
    if (failing == "create") files.failing_creates = 1;
    if (failing == "write") files.failing_writes = 1;
    if (failing == "rename") files.failing_renames = 1;
    EXPECT_NE(error_of_call([&] { j.sync(); }), 0);
    EXPECT_FALSE(j.synced(saved));
    EXPECT_EQ(file_text(dir / "jobs.journal"), before);
    EXPECT_FALSE(fs::exists(dir / "jobs.journal.tmp"));

    ASSERT_NO_THROW(j.sync());
    EXPECT_TRUE(j.synced(saved));
    EXPECT_EQ(ids_in(dir), (std::vector<std::uint64_t>{1, 2}));
  }
}

// An append that fails once (a full disk, an I/O error) compacts the file
// and is written once more: the entry is saved, and the partial line the
// failed write left is gone.
TEST_F(JournalTest, AnAppendThatFailsOnceIsWrittenAgainAfterACompaction) {
  failing_files files;
  journal j(dir.string(), files);
  j.load();
  j.save(entry(1, journal_state::running, "one"));
  j.remove(1);
  j.save(entry(2, journal_state::running, "two"));
  j.sync();
  files.failing_writes = 1;
  files.write_half_first = true;
  const int renames = files.renames;
  const std::uint64_t saved = j.save(entry(3, journal_state::running, "three"));
  EXPECT_EQ(files.renames, renames + 1);
  j.sync();
  EXPECT_TRUE(j.synced(saved));
  EXPECT_EQ(ids_in(dir), (std::vector<std::uint64_t>{2, 3}));
  std::vector<std::string> problems;
  journal again(dir.string());
  EXPECT_EQ(again.load(&problems).size(), 2u);
  EXPECT_TRUE(problems.empty()) << problems.front();
}

} // namespace
} // namespace bs_router
