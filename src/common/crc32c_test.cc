#include "common/crc32c.h"

#include <string>

#include "gtest/gtest.h"

namespace wallet {
namespace {

TEST(Crc32cTest, MatchesTheStandardCheckValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(Crc32cTest, Rfc3720VectorsOf32Bytes) {
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
}

TEST(Crc32cTest, ExtendEqualsOneShot) {
  const std::string text = "the quick brown fox jumps over the lazy dog";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    const std::string_view view(text);
    EXPECT_EQ(Crc32cExtend(Crc32c(view.substr(0, cut)), view.substr(cut)), Crc32c(text)) << cut;
  }
}

TEST(Crc32cTest, OneFlippedBitChangesTheChecksum) {
  std::string data(4096, 'a');
  const uint32_t original = Crc32c(data);
  data[1234] ^= 0x10;
  EXPECT_NE(Crc32c(data), original);
}

}  // namespace
}  // namespace wallet
