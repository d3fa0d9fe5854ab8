// Files root writes: never through a link, never into a file it did not
// create, only in directories nobody else can write in; paths that are not
// regular files refused at once. The helpers alone first, then the router
// end to end (a real beanstalkd, the real daemon, the fake cbsd).

#include "bs_router/safe_files.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/beanstalkd_server.hpp"
#include "support/file_checks.hpp"
#include "support/small_filesystem.hpp"
#include "support/test_pool.hpp"
#include "support/wait.hpp"

namespace bs_router::testing {
namespace {

namespace fs = std::filesystem;
using body = nlohmann::ordered_json;
using namespace std::chrono_literals;

// uid and gid of nobody on Debian and FreeBSD alike.
constexpr uid_t nobody = 65534;

// How long a refusal may take: far more than it needs, far less than the
// minutes a test takes to time out on a FIFO that blocks.
constexpr auto refusal_limit = 20s;

std::string contents_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

class scratch_directory {
 public:
  scratch_directory() {
    std::string pattern = (fs::temp_directory_path() / "safe_files_test.XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~scratch_directory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// --- the helpers -----------------------------------------------------------

TEST(SafeFiles, OpenOwnFileRefusesLinksAndLeavesTheirTargetsAlone) {
  scratch_directory scratch;
  const fs::path target = scratch.path() / "passwd";
  write_text(target, "root:x:0:0\n");
  fs::create_symlink(target, scratch.path() / "soft");
  fs::create_hard_link(target, scratch.path() / "hard");
  directory dir = open_private_directory(scratch.path().string(), 0700);
  for (const char* name : {"soft", "hard"}) {
    try {
      ::close(open_own_file(dir, name, O_WRONLY | O_APPEND, 0640));
      ADD_FAILURE() << name << ": no error";
    } catch (const unsafe_path_error& error) {
      EXPECT_EQ(std::string(error.what()).rfind((scratch.path() / name).string() + ": ", 0), 0u) << error.what();
    }
  }
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");
}

TEST(SafeFiles, OpenOwnFileTakesAwayPermissionsBeyondItsMode) {
  scratch_directory scratch;
  write_text(scratch.path() / "log", "");
  ::chmod((scratch.path() / "log").c_str(), 0666);
  directory dir = open_private_directory(scratch.path().string(), 0700);
  const int fd = open_own_file(dir, "log", O_WRONLY | O_APPEND, 0640);
  struct stat status {};
  ASSERT_EQ(::fstat(fd, &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0640u);
  EXPECT_EQ(::fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  ::close(fd);
}

TEST(SafeFiles, AFifoIsRefusedWithoutWaitingForAPeer) {
  scratch_directory scratch;
  ASSERT_EQ(::mkfifo((scratch.path() / "fifo").c_str(), 0600), 0);
  directory dir = open_private_directory(scratch.path().string(), 0700);
  EXPECT_THROW(open_own_file(dir, "fifo", O_WRONLY | O_APPEND, 0640), unsafe_path_error);
  EXPECT_THROW(open_own_file_for_reading(dir, "fifo"), unsafe_path_error);
}

TEST(SafeFiles, CreateNewFileReplacesWhateverHadTheName) {
  scratch_directory scratch;
  const fs::path target = scratch.path() / "passwd";
  write_text(target, "root:x:0:0\n");
  fs::create_symlink(target, scratch.path() / "soft");
  fs::create_hard_link(target, scratch.path() / "hard");
  directory dir = open_private_directory(scratch.path().string(), 0700);
  for (const char* name : {"soft", "hard"}) {
    const int fd = create_new_file(dir, name, O_WRONLY, 0640);
    ASSERT_EQ(::write(fd, "new\n", 4), 4);
    ::close(fd);
    EXPECT_EQ(contents_of(scratch.path() / name), "new\n");
  }
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");
  fs::create_directory(scratch.path() / "subdir");
  EXPECT_THROW(create_new_file(dir, "subdir", O_WRONLY, 0640), unsafe_path_error);
}

TEST(SafeFiles, APrivateDirectoryIsOursAndWritableByNobodyElse) {
  scratch_directory scratch;
  const fs::path made = scratch.path() / "a" / "b";
  directory dir = open_private_directory(made.string(), 0700);
  EXPECT_TRUE(dir.is_open());
  struct stat status {};
  ASSERT_EQ(::stat(made.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0700u);

  EXPECT_FALSE(open_existing_private_directory((scratch.path() / "missing").string()).is_open());
  fs::create_directory_symlink(made, scratch.path() / "link");
  EXPECT_THROW(open_private_directory((scratch.path() / "link").string(), 0700), unsafe_path_error);
  EXPECT_THROW(open_private_directory((scratch.path() / "link/").string(), 0700), unsafe_path_error);
  ::chmod(made.c_str(), 0730);
  EXPECT_THROW(open_private_directory(made.string(), 0700), unsafe_path_error);
  ::chmod(made.c_str(), 0700);
  ASSERT_EQ(::chown(made.c_str(), nobody, nobody), 0);
  EXPECT_THROW(open_existing_private_directory(made.string()), unsafe_path_error);
}

// --- the router --------------------------------------------------------------

class RouterFiles : public ::testing::Test {
 protected:
  // Runs bs_router with `args` to its end; its status, its output in *out.
  int run_router(const std::vector<std::string>& args, std::string* out) {
    std::vector<std::string> argv{BS_ROUTER_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string err;
    const int status = run_captured(argv, {}, out, &err, refusal_limit);
    *out += err;
    return status;
  }

  beanstalkd_server server;
};

// The pool lock and the journal's temporary, planted as links in the
// statedir to a file root must not touch: the lock is refused (replacing it
// could let two routers each lock a file of their own), the temporary is
// replaced; the target stays as it was.
TEST_F(RouterFiles, LinksPlantedInTheStatedirAreRefusedOrReplaced) {
  test_pool pool(server);
  const fs::path target = pool.dir() / "passwd";
  write_text(target, "root:x:0:0\n");
  fs::create_symlink(target, pool.statedir() / "lock");
  std::string out;
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find((pool.statedir() / "lock").string() + ": a symbolic link"), std::string::npos) << out;
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");

  fs::remove(pool.statedir() / "lock");
  fs::create_hard_link(target, pool.statedir() / "lock");
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find((pool.statedir() / "lock").string() + ": has 2 hard links"), std::string::npos) << out;
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");

  fs::remove(pool.statedir() / "lock");
  fs::create_symlink(target, pool.statedir() / "jobs.journal.tmp");
  pool.start_router();
  const auto id = pool.put_job(body{{"Command", "jls"}, {"CommandArgs", {{"pw", "secret"}}}});
  const auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["ErrCode"], 0);
  EXPECT_EQ(pool.stop_router(), 0);
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");
  EXPECT_FALSE(fs::is_symlink(pool.statedir() / "jobs.journal"));
}

// A job's files in logdir: a link to a file root must not touch, a hard link
// to one, and an <id>.err that another user made readable by all before the
// job ran. Each is replaced by a file of root's, mode 0640.
TEST_F(RouterFiles, PlantedJobFilesAreReplacedNotWrittenThrough) {
  test_pool pool(server);
  const fs::path passwd = pool.dir() / "passwd";
  const fs::path shadow = pool.dir() / "shadow";
  write_text(passwd, "root:x:0:0\n");
  write_text(shadow, "root:secret\n");
  const auto id = pool.put_job(body{{"Command", "jls"},
                                    {"CommandArgs", {{"fake_stdout", "the output\n"}, {"fake_stderr", "the errors\n"}}}});
  const fs::path cmd = pool.logdir() / (std::to_string(id) + ".cmd");
  const fs::path out = pool.logdir() / (std::to_string(id) + ".out");
  const fs::path err = pool.logdir() / (std::to_string(id) + ".err");
  fs::create_symlink(passwd, cmd);
  fs::create_hard_link(shadow, out);
  write_text(err, "");
  ASSERT_EQ(::chown(err.c_str(), nobody, nobody), 0);
  ASSERT_EQ(::chmod(err.c_str(), 0666), 0);
  // What its owner keeps open: it must see none of the job's output.
  const int kept_open = ::open(err.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(kept_open, 0);

  pool.start_router();
  const auto replies = pool.wait_final_reply(id);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back()["Message"], "the output\n");
  EXPECT_EQ(replies.back()["Stderr"], "the errors\n");

  EXPECT_EQ(contents_of(passwd), "root:x:0:0\n");
  EXPECT_EQ(contents_of(shadow), "root:secret\n");
  EXPECT_EQ(contents_of(out), "the output\n");
  EXPECT_EQ(contents_of(err), "the errors\n");
  for (const fs::path& path : {cmd, out, err}) expect_own_regular_file(path.string(), 0640);
  char byte;
  EXPECT_EQ(::read(kept_open, &byte, 1), 0);
  ::close(kept_open);
}

// statedir and logdir: the router's own, writable by nobody else, or it
// refuses to start (exit 1, as when they cannot be created), naming the path.
TEST_F(RouterFiles, AStatedirOrLogdirThatIsNotPrivateIsRefused) {
  test_pool pool(server);
  std::string out;
  ASSERT_EQ(::chown(pool.statedir().c_str(), nobody, nobody), 0);
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find(pool.statedir().string() + ": owned by uid 65534"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(pool.statedir() / "lock"));
  // --check says so too, for the rc.d script's start.
  EXPECT_EQ(run_router({"--check", "-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find(pool.statedir().string() + ": owned by uid 65534"), std::string::npos) << out;

  ASSERT_EQ(::chown(pool.statedir().c_str(), 0, 0), 0);
  ::chmod(pool.statedir().c_str(), 0770);
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find(pool.statedir().string() + ": writable by its group"), std::string::npos) << out;

  ::chmod(pool.statedir().c_str(), 0700);
  ::chmod(pool.logdir().c_str(), 0777);
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find(pool.logdir().string() + ": writable by others"), std::string::npos) << out;
  EXPECT_EQ(run_router({"--check", "-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find(pool.logdir().string() + ": writable by others"), std::string::npos) << out;

  ::chmod(pool.logdir().c_str(), 0750);
  pool.start_router();
  EXPECT_EQ(pool.stop_router(), 0);
}

// The default statedir, <cbsdenv>/.bs_router, sits in a directory that
// CBSD's own user owns, who can rename it away and plant another: a
// directory of its own, or a link to a directory of root's. Both refused.
TEST_F(RouterFiles, ADefaultStatedirPlantedByTheWorkdirsOwnerIsRefused) {
  test_pool pool(server, {{"statedir", nullptr}});
  const fs::path statedir = pool.dir() / ".bs_router";
  ASSERT_EQ(::chown(pool.dir().c_str(), nobody, nobody), 0);
  ASSERT_EQ(::mkdir(statedir.c_str(), 0700), 0);
  ASSERT_EQ(::chown(statedir.c_str(), nobody, nobody), 0);
  std::string out;
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find(statedir.string() + ": owned by uid 65534"), std::string::npos) << out;

  fs::remove(statedir);
  fs::create_directory_symlink(pool.statedir(), statedir);
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 1);
  EXPECT_NE(out.find(statedir.string() + ": a symbolic link"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(pool.statedir() / "lock"));

  fs::remove(statedir);
  pool.start_router();
  struct stat status {};
  ASSERT_EQ(::lstat(statedir.c_str(), &status), 0);
  EXPECT_TRUE(S_ISDIR(status.st_mode));
  EXPECT_EQ(status.st_mode & 0777, 0700u);
  EXPECT_EQ(pool.stop_router(), 0);
  ASSERT_EQ(::chown(pool.dir().c_str(), 0, 0), 0);
}

// The log file: a link or hard link there is refused at start (exit 78, as
// for a logfile that cannot be opened) and on SIGHUP (the router goes on
// with the file it has); its target stays as it was.
TEST_F(RouterFiles, ALogfileThatIsALinkIsRefusedAtStartAndOnSighup) {
  test_pool pool(server);
  const fs::path target = pool.dir() / "passwd";
  write_text(target, "root:x:0:0\n");
  fs::create_symlink(target, pool.log_path());
  std::string out;
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 78);
  EXPECT_NE(out.find(pool.log_path().string() + ": a symbolic link"), std::string::npos) << out;
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");

  fs::remove(pool.log_path());
  fs::create_hard_link(target, pool.log_path());
  EXPECT_EQ(run_router({"-config", pool.config_path().string()}, &out), 78);
  EXPECT_NE(out.find(pool.log_path().string() + ": has 2 hard links"), std::string::npos) << out;
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");

  fs::remove(pool.log_path());
  pool.start_router();
  struct stat status {};
  ASSERT_EQ(::stat(pool.log_path().c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777 & ~0640u, 0u);
  const fs::path rotated = pool.dir() / "router.log.0";
  fs::rename(pool.log_path(), rotated);
  fs::create_symlink(target, pool.log_path());
  ::kill(pool.router_pid(), SIGHUP);
  ASSERT_TRUE(wait_until([&] { return contents_of(rotated).find("log file not reopened") != std::string::npos; }))
      << contents_of(rotated);
  const auto id = pool.put_job(R"({"Command":"jls"})");
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  EXPECT_EQ(contents_of(target), "root:x:0:0\n");
  EXPECT_TRUE(pool.router_running());
  EXPECT_EQ(pool.stop_router(), 0);
}

// A config file or logfile that is a FIFO: refused at once with 78, by
// --check and by a start, instead of blocking until something writes (or
// reads) at the other end. The lock is not taken for a FIFO logfile.
TEST_F(RouterFiles, FifosAsConfigOrLogfileAreRefusedAtOnce) {
  test_pool pool(server);
  const fs::path fifo = pool.dir() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string out;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--check", "-config", fifo.string()}, {"-config", fifo.string()}}) {
    EXPECT_EQ(run_router(args, &out), 78) << out;
    EXPECT_NE(out.find(fifo.string() + ": cannot read: a FIFO, not a regular file"), std::string::npos) << out;
  }

  pool.write_config({{"logfile", fifo.string()}});
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--check", "-config", pool.config_path().string()},
                                               {"-config", pool.config_path().string()}}) {
    EXPECT_EQ(run_router(args, &out), 78) << out;
    EXPECT_NE(out.find("logfile: " + fifo.string() + ": a FIFO, not a regular file"), std::string::npos) << out;
  }
  EXPECT_FALSE(fs::exists(pool.statedir() / "lock"));
}

// SPEC: /dev/stdout as logfile keeps working (the router's own descriptor 1,
// whatever it is: here a file, under daemon(8) a pipe).
TEST_F(RouterFiles, DevStdoutAsLogfileStillWorks) {
  test_pool pool(server, {{"logfile", "/dev/stdout"}});
  std::string out;
  EXPECT_EQ(run_router({"--check", "-config", pool.config_path().string()}, &out), 0) << out;
  pool.spawn_router({"-config", pool.config_path().string()});
  ASSERT_TRUE(wait_until([&] { return pool.output_text().find("watching tube " + pool.tube()) != std::string::npos; }))
      << pool.output_text();
  ::kill(pool.router_pid(), SIGHUP);
  ASSERT_TRUE(wait_until([&] { return pool.output_text().find("SIGHUP: log file reopened") != std::string::npos; }))
      << pool.output_text();
  const auto id = pool.put_job(R"({"Command":"jls"})");
  ASSERT_FALSE(pool.wait_final_reply(id).empty());
  EXPECT_EQ(pool.stop_router(), 0);
}

// With the statedir on a 64 KiB filesystem the journal fills it after a few
// jobs: a failed append compacts it to the jobs in flight and writes again,
// so the router goes on serving without a restart.
TEST_F(RouterFiles, ASmallStatedirFilesystemDoesNotWedgeTheRouter) {
  test_pool pool(server);
  small_filesystem disk(pool.statedir(), 64 * 1024);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  pool.start_router();
  // Each job's lines carry its body twice and its output once: some 9 KB.
  const std::string filler(2500, 'x');
  for (int i = 0; i < 40; ++i) {
    const auto id = pool.put_job(body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", filler}, {"n", i}}}});
    const auto replies = pool.wait_final_reply(id, 20s);
    ASSERT_FALSE(replies.empty()) << "job " << i << " got no reply\n" << pool.log_text();
    EXPECT_EQ(replies.back()["ErrCode"], 0) << replies.back().dump();
  }
  EXPECT_EQ(pool.stop_router(), 0);
}

// The same with jobs put together, so that up to max_jobs of them are in
// flight at once and are taken together.
TEST_F(RouterFiles, ASmallStatedirFilesystemServesABurstOfJobs) {
  test_pool pool(server);
  small_filesystem disk(pool.statedir(), 64 * 1024);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  pool.start_router();
  const std::string filler(2500, 'x');
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 40; ++i)
    ids.push_back(pool.put_job(body{{"Command", "jls"}, {"CommandArgs", {{"fake_stdout", filler}, {"n", i}}}}));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto replies = pool.wait_final_reply(ids[i], 60s);
    ASSERT_FALSE(replies.empty()) << "job " << i << " got no reply\n" << pool.log_text();
    EXPECT_EQ(replies.back()["ErrCode"], 0) << replies.back().dump();
  }
  EXPECT_EQ(pool.stop_router(), 0);
}

} // namespace
} // namespace bs_router::testing
