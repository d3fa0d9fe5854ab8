#pragma once
// What the tests of files the router writes as root check of each one.

#include <gtest/gtest.h>

#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace bs_router::testing {

// `path` is a regular file of this process's user with one link and exactly
// `mode`: not a link planted there, nor a file somebody else made or kept.
inline void expect_own_regular_file(const std::string& path, mode_t mode) {
  struct stat status {};
  ASSERT_EQ(::lstat(path.c_str(), &status), 0) << path;
  EXPECT_TRUE(S_ISREG(status.st_mode)) << path;
  EXPECT_EQ(status.st_uid, ::geteuid()) << path;
  EXPECT_EQ(status.st_nlink, 1u) << path;
  EXPECT_EQ(status.st_mode & 0777, mode) << path;
}

} // namespace bs_router::testing
