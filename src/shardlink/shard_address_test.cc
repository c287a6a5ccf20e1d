// shard_address_test.cc — ParseShardAddress, one case per rule.
#include "gtest/gtest.h"
#include "shardlink/shard_connection.h"

namespace wallet::shardlink {
namespace {

TEST(ParseShardAddressTest, HostAndPort) {
  auto parsed = ParseShardAddress("127.0.0.1:7001");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "127.0.0.1");
  EXPECT_EQ(parsed->port, 7001);
  auto named = ParseShardAddress("shard-3.internal:65535");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->host, "shard-3.internal");
  EXPECT_EQ(named->port, 65535);
}

TEST(ParseShardAddressTest, BracketedIpv6) {
  auto parsed = ParseShardAddress("[::1]:7001");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "::1");
  EXPECT_EQ(parsed->port, 7001);
}

TEST(ParseShardAddressTest, RefusesWhatIsNotHostColonPort) {
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", ":7001", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:70x1", "127.0.0.1:+70", "::1:7001", "[::1]7001", "[::1]:", "[::1",
                          "127.0.0.1:99999999999999999999"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseShardAddress(bad).status())) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace wallet::shardlink
