#include "bs_router/job_files.hpp"
#include "bs_router/safe_files.hpp"

#include <gtest/gtest.h>

#include "support/file_checks.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using bs_router::job_files;
using std::chrono::system_clock;

class temporary_directory {
 public:
  temporary_directory() {
    std::string pattern = ::testing::TempDir() + "job_files_test.XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    if (!made) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~temporary_directory() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

bool exists(const std::string& path) {
  struct stat status {};
  return ::lstat(path.c_str(), &status) == 0;
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  while (const dirent* entry = ::readdir(d)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.insert(name);
  }
  ::closedir(d);
  return names;
}

// Sets a file's modification time, as if it had last been written at `when`.
void set_mtime(const std::string& path, system_clock::time_point when) {
  auto since_epoch = when.time_since_epoch();
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds);
  struct timespec times[2];
  times[0].tv_sec = seconds.count();
  times[0].tv_nsec = nanoseconds.count();
  times[1] = times[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

// All three files of a job, last written `age` before `now`.
void make_job(const job_files& files, std::uint64_t id, system_clock::time_point now, system_clock::duration age) {
  for (const std::string& path : {files.cmd_path(std::to_string(id)), files.out_path(std::to_string(id)), files.err_path(std::to_string(id))}) {
    write_file(path, "x");
    set_mtime(path, now - age);
  }
}

constexpr auto day = std::chrono::hours(24);

TEST(JobFiles, PathsAreNamedByJobId) {
  temporary_directory dir;
  job_files files(dir.path(), 30, 100);
  EXPECT_EQ(files.dir(), dir.path());
  EXPECT_EQ(files.cmd_path("42"), dir.path() + "/42.cmd");
  EXPECT_EQ(files.out_path("42"), dir.path() + "/42.out");
  EXPECT_EQ(files.err_path("18446744073709551615"), dir.path() + "/18446744073709551615.err");
}

TEST(JobFiles, TrailingSlashOfLogdirIsDropped) {
  temporary_directory dir;
  job_files files(dir.path() + "/", 0, 0);
  EXPECT_EQ(files.cmd_path("1"), dir.path() + "/1.cmd");
}

TEST(JobFiles, CreatesLogdirAndParents) {
  temporary_directory dir;
  std::string logdir = dir.path() + "/var/log/cbsdmq";
  job_files files(logdir, 0, 0);
  struct stat status {};
  ASSERT_EQ(::stat(logdir.c_str(), &status), 0);
  EXPECT_TRUE(S_ISDIR(status.st_mode));
  job_files again(logdir, 0, 0);  // an existing directory is fine
}

TEST(JobFiles, LogdirThatIsAFileIsAnError) {
  temporary_directory dir;
  std::string file = dir.path() + "/file";
  write_file(file, "");
  EXPECT_THROW(job_files(file, 0, 0), std::system_error);
  EXPECT_THROW(job_files(file + "/below", 0, 0), std::system_error);
}

TEST(JobFiles, NegativeLimitsAreRefused) {
  temporary_directory dir;
  EXPECT_THROW(job_files(dir.path(), -1, 0), std::invalid_argument);
  EXPECT_THROW(job_files(dir.path(), 0, -1), std::invalid_argument);
}

TEST(JobFiles, WriteCommandOneElementPerLine) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 0);
  files.write_command("7", {"/usr/local/bin/cbsd", "jcreate", "jname=jail1", "astart=1"});
  EXPECT_EQ(read_file(files.cmd_path("7")), "/usr/local/bin/cbsd\njcreate\njname=jail1\nastart=1\n");
}

TEST(JobFiles, WriteCommandEscapesNewlineAndKeepsQuotes) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 0);
  files.write_command("8", {"cbsd", "jcreate", "jname=\"; reboot; \"", "comment=it's", "x=a\nb", "t=\t",
                          "back=c:\\dir", "cr=\r", "bell=\a\x7f", "utf8=\xd0\x9f", "nul=" + std::string(1, '\0'), ""});
  EXPECT_EQ(read_file(files.cmd_path("8")),
            "cbsd\n"
            "jcreate\n"
            "jname=\"; reboot; \"\n"
            "comment=it's\n"
            "x=a\\nb\n"
            "t=\\t\n"
            "back=c:\\\\dir\n"
            "cr=\\r\n"
            "bell=\\x07\\x7f\n"
            "utf8=\\xd0\\x9f\n"
            "nul=\\x00\n"
            "\n");
}

TEST(JobFiles, WriteCommandReplacesAtomicallyAndLeavesNoTemporary) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 0);
  files.write_command("9", {"first", "version", "longer than the next"});
  files.write_command("9", {"second"});
  EXPECT_EQ(read_file(files.cmd_path("9")), "second\n");
  EXPECT_EQ(names_in(dir.path()), std::set<std::string>{"9.cmd"});
  struct stat status {};
  ASSERT_EQ(::stat(files.cmd_path("9").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777 & ~0640u, 0u) << std::oct << status.st_mode;
}

TEST(JobFiles, OpenOutAndErrTruncateWithMode0640ReadWriteAndCloseOnExec) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 0);
  write_file(files.out_path("3"), "old output that must go");
  mode_t previous = ::umask(0);
  int out = files.open_out("3");
  int err = files.open_err("3");
  ::umask(previous);
  ASSERT_GE(out, 0);
  ASSERT_GE(err, 0);
  EXPECT_TRUE(::fcntl(out, F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(::fcntl(err, F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(::fcntl(out, F_GETFL) & O_ACCMODE, O_RDWR); // read back after the run
  ASSERT_EQ(::write(out, "new\n", 4), 4);
  ASSERT_EQ(::write(err, "warning\n", 8), 8);
  ::close(out);
  ::close(err);
  EXPECT_EQ(read_file(files.out_path("3")), "new\n");
  EXPECT_EQ(read_file(files.err_path("3")), "warning\n");
  struct stat status {};
  ASSERT_EQ(::stat(files.err_path("3").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0640u);
}

TEST(JobFiles, OpenFailureThrows) {
  temporary_directory dir;
  job_files files(dir.path() + "/logs", 0, 0);
  std::system(("rm -rf '" + dir.path() + "/logs'").c_str());
  EXPECT_THROW(files.open_out("1"), std::system_error);
  EXPECT_THROW(files.write_command("1", {"cbsd"}), std::system_error);
}

TEST(JobFiles, ReadHeadIsBounded) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 0);
  // Read back through the descriptor the child wrote to, from its start
  // whatever the descriptor's position.
  const int fd = files.open_out("5");
  const auto read = [&](std::size_t max, std::uint64_t* total) { return job_files::read_head(fd, "5.out", max, total); };
  const auto rewrite = [&](const std::string& text) {
    ASSERT_EQ(::ftruncate(fd, 0), 0);
    ASSERT_EQ(::pwrite(fd, text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
  };
  rewrite("0123456789");
  std::uint64_t total = 0;
  EXPECT_EQ(read(4, &total), "0123");
  EXPECT_EQ(total, 10u);
  EXPECT_EQ(read(100, &total), "0123456789");
  EXPECT_EQ(total, 10u);
  EXPECT_EQ(read(0, &total), "");
  EXPECT_EQ(total, 10u);
  EXPECT_EQ(read(10, nullptr), "0123456789");

  std::string big(200000, 'b');
  rewrite(big);
  EXPECT_EQ(read(150000, &total), big.substr(0, 150000));
  EXPECT_EQ(total, 200000u);

  rewrite("");
  EXPECT_EQ(read(10, &total), "");
  EXPECT_EQ(total, 0u);

  // Removed meanwhile: the descriptor still reads it.
  rewrite("kept");
  std::filesystem::remove(files.out_path("5"));
  EXPECT_EQ(read(10, &total), "kept");
  ::close(fd);
  EXPECT_THROW(read(10, &total), std::system_error);
}

TEST(JobFiles, PruneByAge) {
  temporary_directory dir;
  job_files files(dir.path(), 30, 0);
  auto now = system_clock::now();
  make_job(files, 1, now, 40 * day);
  make_job(files, 2, now, 31 * day);
  make_job(files, 3, now, 29 * day);
  make_job(files, 4, now, std::chrono::seconds(1));
  EXPECT_EQ(files.prune(now), 2u);
  EXPECT_EQ(names_in(dir.path()),
            (std::set<std::string>{"3.cmd", "3.out", "3.err", "4.cmd", "4.out", "4.err"}));
}

TEST(JobFiles, PruneByAgeGoesByTheNewestFileOfAJob) {
  temporary_directory dir;
  job_files files(dir.path(), 30, 0);
  auto now = system_clock::now();
  make_job(files, 1, now, 40 * day);
  set_mtime(files.out_path("1"), now - day);  // still being written to
  EXPECT_EQ(files.prune(now), 0u);
  EXPECT_TRUE(exists(files.cmd_path("1")));
}

TEST(JobFiles, PruneWithoutLimitsKeepsEverything) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 0);
  auto now = system_clock::now();
  for (std::uint64_t id = 1; id <= 5; ++id) make_job(files, id, now, 1000 * day);
  EXPECT_EQ(files.prune(now), 0u);
  EXPECT_EQ(names_in(dir.path()).size(), 15u);
}

TEST(JobFiles, PruneByCountRemovesTheOldestJobs) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 2);
  auto now = system_clock::now();
  // Ids and ages disagree on purpose: age decides.
  make_job(files, 10, now, std::chrono::minutes(1));
  make_job(files, 20, now, std::chrono::minutes(50));
  make_job(files, 30, now, std::chrono::minutes(5));
  make_job(files, 5, now, std::chrono::minutes(2));
  EXPECT_EQ(files.prune(now), 2u);
  EXPECT_EQ(names_in(dir.path()),
            (std::set<std::string>{"10.cmd", "10.out", "10.err", "5.cmd", "5.out", "5.err"}));
  EXPECT_EQ(files.prune(now), 0u);
}

TEST(JobFiles, PruneByCountBreaksTiesByNumericId) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 1);
  auto now = system_clock::now();
  make_job(files, 9, now, day);
  make_job(files, 10, now, day);
  EXPECT_EQ(files.prune(now), 1u);
  EXPECT_EQ(names_in(dir.path()), (std::set<std::string>{"10.cmd", "10.out", "10.err"}));
}

TEST(JobFiles, PruneByAgeThenCount) {
  temporary_directory dir;
  job_files files(dir.path(), 7, 2);
  auto now = system_clock::now();
  make_job(files, 1, now, 8 * day);
  make_job(files, 2, now, 3 * day);
  make_job(files, 3, now, 2 * day);
  make_job(files, 4, now, 1 * day);
  EXPECT_EQ(files.prune(now), 2u);
  EXPECT_EQ(names_in(dir.path()),
            (std::set<std::string>{"3.cmd", "3.out", "3.err", "4.cmd", "4.out", "4.err"}));
}

TEST(JobFiles, PruneCountsJobsWithSomeFilesMissing) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 1);
  auto now = system_clock::now();
  write_file(files.cmd_path("1"), "cbsd\n");  // a job that never got to run
  set_mtime(files.cmd_path("1"), now - day);
  make_job(files, 2, now, std::chrono::seconds(1));
  EXPECT_EQ(files.prune(now), 1u);
  EXPECT_FALSE(exists(files.cmd_path("1")));
  EXPECT_TRUE(exists(files.cmd_path("2")));
}

TEST(JobFiles, PruneLeavesUnrelatedFiles) {
  temporary_directory dir;
  job_files files(dir.path(), 1, 1);
  auto now = system_clock::now();
  const std::vector<std::string> unrelated = {
      "README",      "12.txt",     "12.cmd.tmp.1.0", "a12.cmd", "12a.out", ".cmd", "12.cmd~", "12.CMD",
      "-1.err",      "1 2.out",    "2019-01-01T00:00:00Z_jls_12.txt",      "12.out.1"};
  for (const std::string& name : unrelated) {
    write_file(dir.path() + "/" + name, "keep");
    set_mtime(dir.path() + "/" + name, now - 400 * day);
  }
  ASSERT_EQ(::mkdir((dir.path() + "/77.out").c_str(), 0755), 0);  // matches the pattern but is a directory
  set_mtime(dir.path() + "/77.out", now - 400 * day);
  ASSERT_EQ(::symlink("/etc/passwd", (dir.path() + "/78.cmd").c_str()), 0);
  make_job(files, 12, now, 400 * day);
  make_job(files, 13, now, std::chrono::seconds(1));
  make_job(files, 14, now, std::chrono::seconds(2));

  EXPECT_EQ(files.prune(now), 2u);  // 12 by age, 14 by count
  std::set<std::string> expected(unrelated.begin(), unrelated.end());
  expected.insert({"77.out", "78.cmd", "13.cmd", "13.out", "13.err"});
  EXPECT_EQ(names_in(dir.path()), expected);
}

// The directory held open is the one pruned: once it is removed, prune says
// so (the router logs it every time), and nothing made at its path since is
// touched.
TEST(JobFiles, PruneOfARemovedLogdirThrowsAndRemovesNothingAtItsPath) {
  temporary_directory dir;
  const std::string logs = dir.path() + "/logs";
  job_files files(logs, 1, 1);
  std::system(("rm -rf '" + logs + "'").c_str());
  ASSERT_EQ(::mkdir(logs.c_str(), 0700), 0);
  auto now = system_clock::now();
  make_job(files, 1, now, 3 * day); // written at the path: into the new directory
  make_job(files, 2, now, 2 * day);
  EXPECT_THROW(files.prune(now), std::system_error);
  EXPECT_EQ(files.add_job("2"), 0u);
  EXPECT_EQ(names_in(logs).size(), 6u);
}

// logdir's parent may be writable by CBSD's user, who can rename logdir away
// and plant a link to another directory at its path. Listing, counting and
// removing go by the directory held open, so root removes nothing there,
// and the jobs' files in the directory renamed away are pruned as before.
TEST(JobFiles, ALinkPlantedAtLogdirsPathLeadsPruneNowhere) {
  temporary_directory dir;
  const std::string logs = dir.path() + "/logs";
  const std::string moved = dir.path() + "/moved";
  const std::string elsewhere = dir.path() + "/elsewhere";
  job_files files(logs, 1, 2);
  auto now = system_clock::now();
  make_job(files, 1, now, 3 * day);
  make_job(files, 2, now, std::chrono::hours(1));
  ASSERT_EQ(::rename(logs.c_str(), moved.c_str()), 0);
  ASSERT_EQ(::mkdir(elsewhere.c_str(), 0700), 0);
  for (const char* name : {"1.cmd", "1.out", "3.cmd", "4.out", "5.err"}) {
    write_file(elsewhere + "/" + name, "keep");
    set_mtime(elsewhere + "/" + name, now - 10 * day);
  }
  ASSERT_EQ(::symlink(elsewhere.c_str(), logs.c_str()), 0);

  EXPECT_EQ(files.prune(now), 1u); // job 1, by age, in the directory renamed away
  EXPECT_EQ(names_in(moved), (std::set<std::string>{"2.cmd", "2.out", "2.err"}));
  EXPECT_EQ(files.jobs_counted(), 1u); // nothing of elsewhere's counted
  for (int id = 6; id <= 8; ++id) {
    const std::string job = std::to_string(id);
    files.write_command(job, {"cbsd", "jstart"}); // made in the directory held open
    ::close(files.open_out(job));
    ::close(files.open_err(job));
    files.add_job(job); // over max_files 2: the oldest go
  }
  EXPECT_EQ(names_in(moved), (std::set<std::string>{"7.cmd", "7.out", "7.err", "8.cmd", "8.out", "8.err"}));
  EXPECT_EQ(names_in(elsewhere), (std::set<std::string>{"1.cmd", "1.out", "3.cmd", "4.out", "5.err"}));
  EXPECT_EQ(read_file(elsewhere + "/1.out"), "keep");
}

// What root writes for a job goes into files it created itself: a link
// planted under a job's name (to a file root must not touch), a hard link,
// or another user's file left readable by all, is unlinked and replaced.
TEST(JobFiles, PlantedLinksAndOtherUsersFilesAreReplacedNotWrittenThrough) {
  temporary_directory dir;
  const std::string logdir = dir.path() + "/logdir";
  job_files files(logdir, 0, 0);
  const std::string passwd = dir.path() + "/passwd";
  const std::string shadow = dir.path() + "/shadow";
  write_file(passwd, "root:x:0:0\n");
  write_file(shadow, "root:secret\n");
  ASSERT_EQ(::symlink(passwd.c_str(), files.cmd_path("5").c_str()), 0);
  ASSERT_EQ(::symlink(passwd.c_str(), files.out_path("5").c_str()), 0);
  ASSERT_EQ(::link(shadow.c_str(), files.out_path("6").c_str()), 0);
  write_file(files.err_path("5"), "");
  ASSERT_EQ(::chown(files.err_path("5").c_str(), 65534, 65534), 0);
  ASSERT_EQ(::chmod(files.err_path("5").c_str(), 0666), 0);
  const int err_seen_by_its_owner = ::open(files.err_path("5").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(err_seen_by_its_owner, 0);

  files.write_command("5", {"cbsd", "jcreate", "pw=secret"});
  const int out = files.open_out("5");
  const int err = files.open_err("5");
  const int hard = files.open_out("6");
  ASSERT_EQ(::write(out, "output\n", 7), 7);
  ASSERT_EQ(::write(err, "error\n", 6), 6);
  ASSERT_EQ(::write(hard, "more\n", 5), 5);
  ::close(out);
  ::close(err);
  ::close(hard);

  EXPECT_EQ(read_file(passwd), "root:x:0:0\n");
  EXPECT_EQ(read_file(shadow), "root:secret\n");
  EXPECT_EQ(read_file(files.cmd_path("5")), "cbsd\njcreate\npw=secret\n");
  EXPECT_EQ(read_file(files.out_path("5")), "output\n");
  EXPECT_EQ(read_file(files.out_path("6")), "more\n");
  for (const std::string& path : {files.cmd_path("5"), files.out_path("5"), files.err_path("5"), files.out_path("6")})
    bs_router::testing::expect_own_regular_file(path, 0640);
  // Whoever had the old file open sees nothing of this job.
  char byte;
  EXPECT_EQ(::read(err_seen_by_its_owner, &byte, 1), 0);
  ::close(err_seen_by_its_owner);
}

TEST(JobFiles, ALogdirOfAnotherUserOrWritableByOthersIsRefused) {
  temporary_directory dir;
  const std::string logdir = dir.path() + "/logdir";
  ASSERT_EQ(::mkdir(logdir.c_str(), 0750), 0);
  ASSERT_EQ(::chmod(logdir.c_str(), 0757), 0);
  try {
    job_files files(logdir, 0, 0);
    FAIL() << "no error";
  } catch (const bs_router::unsafe_path_error& error) {
    EXPECT_EQ(std::string(error.what()).rfind(logdir + ": writable by others (mode 0757)", 0), 0u) << error.what();
  }
  ASSERT_EQ(::chmod(logdir.c_str(), 0750), 0);
  ASSERT_EQ(::chown(logdir.c_str(), 65534, 65534), 0);
  try {
    job_files files(logdir, 0, 0);
    FAIL() << "no error";
  } catch (const bs_router::unsafe_path_error& error) {
    EXPECT_EQ(std::string(error.what()).rfind(logdir + ": owned by uid 65534", 0), 0u) << error.what();
  }
  ASSERT_EQ(::chown(logdir.c_str(), 0, 0), 0);
  const std::string link = dir.path() + "/link";
  ASSERT_EQ(::symlink(logdir.c_str(), link.c_str()), 0);
  EXPECT_THROW(job_files(link, 0, 0), bs_router::unsafe_path_error);
}

} // namespace

namespace {

std::set<std::string> job_names(std::initializer_list<int> ids) {
  std::set<std::string> names;
  for (int id : ids)
    for (const char* suffix : {".cmd", ".out", ".err"}) names.insert(std::to_string(id) + suffix);
  return names;
}

// A job of `bytes` bytes in its .out (and one in .cmd and .err).
void make_job_of_size(const job_files& files, std::uint64_t id, system_clock::time_point when, std::size_t bytes) {
  write_file(files.cmd_path(std::to_string(id)), "x");
  write_file(files.out_path(std::to_string(id)), std::string(bytes, 'o'));
  write_file(files.err_path(std::to_string(id)), "x");
  for (const std::string& path : {files.cmd_path(std::to_string(id)), files.out_path(std::to_string(id)), files.err_path(std::to_string(id))}) set_mtime(path, when);
}

TEST(JobFiles, PruneByBytesRemovesTheOldestButNeverTheNewest) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 0, 2500);
  auto now = system_clock::now();
  make_job_of_size(files, 1, now - std::chrono::minutes(3), 1000);
  make_job_of_size(files, 2, now - std::chrono::minutes(2), 1000);
  make_job_of_size(files, 3, now - std::chrono::minutes(1), 1000);
  EXPECT_EQ(files.prune(now), 1u);
  EXPECT_EQ(names_in(dir.path()), job_names({2, 3}));
  EXPECT_EQ(files.jobs_counted(), 2u);
  EXPECT_EQ(files.bytes_counted(), 2004u);
  // One job alone larger than the bound stays: it is the newest.
  make_job_of_size(files, 4, now, 5000);
  EXPECT_EQ(files.prune(now), 2u);
  EXPECT_EQ(names_in(dir.path()), job_names({4}));
}

TEST(JobFiles, AddJobHoldsTheBoundsAfterEachJobWithoutAListing) {
  temporary_directory dir;
  job_files files(dir.path(), 0, 3, 10000);
  auto now = system_clock::now();
  EXPECT_EQ(files.prune(now), 0u);
  for (int id = 1; id <= 5; ++id) {
    make_job_of_size(files, id, now + std::chrono::seconds(id), 10);
    files.add_job(std::to_string(id));
  }
  EXPECT_EQ(names_in(dir.path()), job_names({3, 4, 5}));
  EXPECT_EQ(files.jobs_counted(), 3u);
  // A large job pushes out older ones by bytes; it is never removed itself.
  make_job_of_size(files, 6, now + std::chrono::seconds(6), 9980);
  EXPECT_EQ(files.add_job("6"), 2u); // 3 by count, then 4 by bytes
  EXPECT_EQ(names_in(dir.path()), job_names({5, 6}));
  // Even when its files are older than the others' (a long run that printed nothing late).
  make_job_of_size(files, 7, now - day, 9000);
  EXPECT_EQ(files.add_job("7"), 2u);
  EXPECT_EQ(names_in(dir.path()), job_names({7}));
  EXPECT_EQ(files.bytes_counted(), 9002u);
  // An id used again (a broker restarted without binlog) replaces the old count.
  make_job_of_size(files, 7, now, 100);
  files.add_job("7");
  EXPECT_EQ(files.jobs_counted(), 1u);
  EXPECT_EQ(files.bytes_counted(), 102u);
}

TEST(CappedOutput, KeepsTheCapThenOneMarkerAndCountsEverything) {
  temporary_directory dir;
  const std::string path = dir.path() + "/1.out";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  bs_router::capped_output out(fd, path, 10);
  out.append("12345");
  EXPECT_FALSE(out.cut());
  out.append("67890");
  EXPECT_FALSE(out.cut()); // exactly the cap: nothing cut
  out.append("abc");
  out.append("def");
  EXPECT_TRUE(out.cut());
  EXPECT_EQ(out.received(), 16u);
  EXPECT_TRUE(out.error().empty());
  ::close(fd);
  EXPECT_EQ(read_file(path), "1234567890" + bs_router::capped_output::marker(10));
  EXPECT_NE(bs_router::capped_output::marker(10).find("joblog_max_output_bytes"), std::string::npos);
}

TEST(CappedOutput, AFailedWriteIsReportedNotThrown) {
  bs_router::capped_output out(-1, "/nowhere/1.out", 0);
  EXPECT_NO_THROW(out.append("data"));
  EXPECT_EQ(out.received(), 4u);
  EXPECT_NE(out.error().find("/nowhere/1.out"), std::string::npos) << out.error();
}

} // namespace

// The files of a job known by an AMQP message id are named after it behind
// "msg-", and pruned like any other job's; a name that only looks alike stays.
TEST(JobFiles, FilesOfAMessageIdJobArePrunedLikeTheOthers) {
  temporary_directory dir;
  job_files files(dir.path(), 30, 0);
  auto now = system_clock::now();
  const std::string id = bs_router::job_file_id("a.b:c-D_9", false);
  EXPECT_EQ(id, "msg-a.b:c-D_9");
  EXPECT_EQ(bs_router::job_file_id("17", true), "17");
  for (const std::string& path : {files.cmd_path(id), files.out_path(id), files.err_path(id)}) {
    write_file(path, "x");
    set_mtime(path, now - 40 * day);
  }
  for (const std::string name : {"msg-.cmd", "msg-a/b.out", "msg-a b.err", "msg-x.txt"}) {
    if (name.find('/') != std::string::npos) continue;
    write_file(dir.path() + "/" + name, "keep");
    set_mtime(dir.path() + "/" + name, now - 40 * day);
  }
  EXPECT_EQ(files.prune(now), 1u);
  EXPECT_EQ(names_in(dir.path()), (std::set<std::string>{"msg-.cmd", "msg-a b.err", "msg-x.txt"}));
}
