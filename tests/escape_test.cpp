#include "bs_router/escape.hpp"

#include <string>

#include <gtest/gtest.h>

using namespace bs_router;
using namespace std::string_literals;

TEST(Escape, PrintableAsciiStaysAsItIs) {
  EXPECT_EQ(escape_bytes("jail1 \"quoted\" it's $(x) ~"), "jail1 \"quoted\" it's $(x) ~");
  EXPECT_EQ(escape_bytes(""), "");
}

TEST(Escape, EveryOtherByteBecomesAnEscape) {
  EXPECT_EQ(escape_bytes("a\nb\r\tc\\d"), "a\\nb\\r\\tc\\\\d");
  EXPECT_EQ(escape_bytes("\x1b[2J"), "\\x1b[2J");
  EXPECT_EQ(escape_bytes("\0\x7f\x80\xff"s), "\\x00\\x7f\\x80\\xff");
  EXPECT_EQ(escape_bytes("\xc3\xa9"), "\\xc3\\xa9"); // UTF-8 too: one byte, one escape
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  for (unsigned char c : escape_bytes(all)) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << int(c);
}

TEST(Escape, LoggableCutsLongTextAndSaysSo) {
  EXPECT_EQ(loggable("short\n"), "short\\n");
  EXPECT_EQ(loggable(std::string(1024, 'x')), std::string(1024, 'x'));
  EXPECT_EQ(loggable(std::string(5000, 'x')), std::string(1024, 'x') + "...");
  EXPECT_EQ(loggable("ab\ncd", 3), "ab\\n...");
}
