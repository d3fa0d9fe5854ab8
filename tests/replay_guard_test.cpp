// The replay memory: what it refuses, its bound, and that it survives a
// restart; its file is opened inside the statedir's descriptor only.

#include <gtest/gtest.h>

#include "bs_router/replay_guard.hpp"

#include <filesystem>
#include <fstream>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bs_router {
namespace {

constexpr std::int64_t now = 1767225000;

std::string mac(char c) { return std::string(64, c); }

class ReplayGuard : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("bs_router_replay_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dir_fd, 0);
  }
  void TearDown() override {
    ::close(dir_fd);
    std::filesystem::remove_all(dir);
  }
  std::filesystem::path file() const { return dir / replay_guard::file_name; }
  std::filesystem::path dir;
  int dir_fd = -1;
};

TEST_F(ReplayGuard, TheSameSignatureUnderAnotherJobIdIsAReplay) {
  replay_guard guard(dir_fd, 10, now);
  EXPECT_EQ(guard.admit(mac('a'), now + 60, "5", now), replay_guard::verdict::fresh);
  EXPECT_EQ(guard.admit(mac('a'), now + 60, "6", now), replay_guard::verdict::replayed);
  // Job 5 again: its bury never happened and the broker gave it back.
  EXPECT_EQ(guard.admit(mac('a'), now + 60, "5", now), replay_guard::verdict::same_job);
  EXPECT_EQ(guard.admit(mac('b'), now + 60, "6", now), replay_guard::verdict::fresh);
}

TEST_F(ReplayGuard, SurvivesARestartOnceSynced) {
  {
    replay_guard guard(dir_fd, 10, now);
    EXPECT_EQ(guard.admit(mac('a'), now + 60, "5", now), replay_guard::verdict::fresh);
    EXPECT_TRUE(guard.unsynced());
    guard.sync();
    EXPECT_FALSE(guard.unsynced());
  }
  struct stat st {};
  ASSERT_EQ(::stat(file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  replay_guard again(dir_fd, 10, now + 1);
  EXPECT_EQ(again.size(), 1u);
  EXPECT_EQ(again.admit(mac('a'), now + 60, "9", now + 1), replay_guard::verdict::replayed);
  EXPECT_EQ(again.admit(mac('a'), now + 60, "5", now + 1), replay_guard::verdict::same_job);
}

TEST_F(ReplayGuard, ExpiredEntriesAreForgottenAndFreeTheirPlace) {
  replay_guard guard(dir_fd, 2, now);
  EXPECT_EQ(guard.admit(mac('a'), now + 10, "1", now), replay_guard::verdict::fresh);
  EXPECT_EQ(guard.admit(mac('b'), now + 20, "2", now), replay_guard::verdict::fresh);
  // Full: refused, nothing forgotten.
  EXPECT_EQ(guard.admit(mac('c'), now + 30, "3", now), replay_guard::verdict::full);
  EXPECT_EQ(guard.admit(mac('a'), now + 10, "4", now), replay_guard::verdict::replayed);
  // Once job 1's Expires has passed, its place is free (it is refused as expired anyway).
  EXPECT_EQ(guard.admit(mac('c'), now + 30, "3", now + 11), replay_guard::verdict::fresh);
  guard.sync();
  replay_guard again(dir_fd, 2, now + 21);
  EXPECT_EQ(again.size(), 1u); // only c is still alive
}

TEST_F(ReplayGuard, ATornLastLineIsIgnored) {
  {
    replay_guard guard(dir_fd, 10, now);
    guard.admit(mac('a'), now + 60, "5", now);
    guard.sync();
  }
  std::ofstream(file(), std::ios::app) << mac('b').substr(0, 30);
  replay_guard again(dir_fd, 10, now);
  EXPECT_EQ(again.size(), 1u);
  EXPECT_EQ(again.admit(mac('b'), now + 60, "6", now), replay_guard::verdict::fresh);
}

TEST_F(ReplayGuard, RefusesALinkOrAFileWithSeveralLinks) {
  const std::filesystem::path elsewhere = dir / "elsewhere";
  std::ofstream(elsewhere) << "";
  std::filesystem::create_symlink(elsewhere, file());
  EXPECT_ANY_THROW(replay_guard(dir_fd, 10, now));
  std::filesystem::remove(file());
  std::filesystem::create_hard_link(elsewhere, file());
  EXPECT_ANY_THROW(replay_guard(dir_fd, 10, now));
  std::filesystem::remove(file());
  EXPECT_NO_THROW(replay_guard(dir_fd, 10, now));
}

} // namespace
} // namespace bs_router
