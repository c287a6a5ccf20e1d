// Tests for partition.h: the pinned account → partition map and PartitionSet.
#include "common/partition.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace wallet {
namespace {

// GOLDEN VALUES — NEVER CHANGE THESE. Deployed clusters place accounts by this map;
// if a change to PartitionOf/StableMix64 breaks this test, the change is wrong, not
// the test. (Computed once from fmix64 and checked against an independent
// implementation.)
struct GoldenCase {
  AccountId account;
  uint32_t partition_count;
  uint32_t partition;
};

constexpr GoldenCase kGolden[] = {
    {0, 1024, 0},
    {1, 1024, 812},
    {2, 1024, 999},
    {42, 1024, 460},
    {1000, 1024, 577},
    {123456789, 1024, 134},
    {std::numeric_limits<uint64_t>::max(), 1024, 801},
    {0, 7, 0},
    {1, 7, 0},
    {2, 7, 5},
    {42, 7, 3},
    {1000, 7, 5},
    {123456789, 7, 1},
    {std::numeric_limits<uint64_t>::max(), 7, 5},
};

// PartitionOf is constexpr: the map is pinned at compile time too.
static_assert(PartitionOf(42, 1024) == 460);
static_assert(StableMix64(1) == 0xb456bcfc34c2cb2cULL);

TEST(PartitionOfTest, GoldenValuesNeverChange) {
  for (const GoldenCase& c : kGolden) {
    EXPECT_EQ(PartitionOf(c.account, c.partition_count), c.partition)
        << "account " << c.account << " with P=" << c.partition_count;
  }
}

TEST(PartitionOfTest, StableMix64KnownValues) {
  EXPECT_EQ(StableMix64(0), 0u);
  EXPECT_EQ(StableMix64(1), 0xb456bcfc34c2cb2cULL);  // MurmurHash3 fmix64(1)
}

TEST(PartitionOfTest, SinglePartitionTakesEverything) {
  for (AccountId account : {0ull, 1ull, 42ull, ~0ull}) EXPECT_EQ(PartitionOf(account, 1), 0u);
}

TEST(PartitionOfTest, SequentialIdsSpreadEvenly) {
  constexpr uint32_t kPartitions = 1024;
  constexpr uint64_t kAccounts = 1000000;
  std::vector<uint64_t> counts(kPartitions, 0);
  for (AccountId account = 0; account < kAccounts; ++account) {
    ++counts[PartitionOf(account, kPartitions)];
  }
  const double mean = static_cast<double>(kAccounts) / kPartitions;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    EXPECT_GE(static_cast<double>(counts[p]), 0.8 * mean) << "partition " << p;
    EXPECT_LE(static_cast<double>(counts[p]), 1.2 * mean) << "partition " << p;
  }
}

// --- PartitionSet ------------------------------------------------------------------

TEST(PartitionSetTest, ParseAll) {
  PartitionSet set(1024);
  std::string error;
  ASSERT_TRUE(set.ParseRanges("all", &error)) << error;
  EXPECT_EQ(set.size(), 1024u);
  EXPECT_TRUE(set.Contains(0));
  EXPECT_TRUE(set.Contains(1023));
  EXPECT_EQ(set.ToString(), "all");
}

TEST(PartitionSetTest, ParseEmptyIsNone) {
  PartitionSet set = PartitionSet::All(1024);
  std::string error;
  ASSERT_TRUE(set.ParseRanges("", &error)) << error;
  EXPECT_EQ(set.size(), 0u);
  EXPECT_EQ(set.ToString(), "");
}

TEST(PartitionSetTest, ParseRangesAndSingles) {
  PartitionSet set(1024);
  std::string error;
  ASSERT_TRUE(set.ParseRanges("0-255,512", &error)) << error;
  EXPECT_EQ(set.size(), 257u);
  EXPECT_TRUE(set.Contains(0));
  EXPECT_TRUE(set.Contains(255));
  EXPECT_FALSE(set.Contains(256));
  EXPECT_FALSE(set.Contains(511));
  EXPECT_TRUE(set.Contains(512));
  EXPECT_FALSE(set.Contains(513));
  EXPECT_EQ(set.ToString(), "0-255,512");
}

TEST(PartitionSetTest, ParseSingle) {
  PartitionSet set(1024);
  std::string error;
  ASSERT_TRUE(set.ParseRanges("5", &error)) << error;
  EXPECT_EQ(set.size(), 1u);
  EXPECT_TRUE(set.Contains(5));
  EXPECT_EQ(set.ToString(), "5");
}

TEST(PartitionSetTest, ParseLastPartitionAndFullRange) {
  PartitionSet set(1024);
  std::string error;
  ASSERT_TRUE(set.ParseRanges("1023", &error)) << error;
  EXPECT_TRUE(set.Contains(1023));
  ASSERT_TRUE(set.ParseRanges("0-1023", &error)) << error;
  EXPECT_EQ(set.ToString(), "all");
}

TEST(PartitionSetTest, ParseReplacesThePreviousContents) {
  PartitionSet set(1024);
  std::string error;
  ASSERT_TRUE(set.ParseRanges("1-3", &error));
  ASSERT_TRUE(set.ParseRanges("10", &error));
  EXPECT_EQ(set.ToString(), "10");
}

TEST(PartitionSetTest, BadFormsLeaveTheSetUnchanged) {
  for (const char* text :
       {"5-3", "1024", "0-1024", "a", "1-", "-1", ",", "1,", ",1", "1-2-3", " 1", "01", "ALL"}) {
    PartitionSet set(1024);
    set.AddRange(7, 9);
    std::string error;
    EXPECT_FALSE(set.ParseRanges(text, &error)) << '"' << text << '"';
    EXPECT_FALSE(error.empty()) << '"' << text << '"';
    EXPECT_EQ(set.ToString(), "7-9") << '"' << text << '"';
  }
}

TEST(PartitionSetTest, OutOfRangeDependsOnPartitionCount) {
  PartitionSet set(7);
  std::string error;
  EXPECT_TRUE(set.ParseRanges("6", &error)) << error;
  EXPECT_FALSE(set.ParseRanges("7", &error));
  EXPECT_EQ(set.ToString(), "6");
}

TEST(PartitionSetTest, ToStringRoundTrips) {
  for (const char* text :
       {"", "0", "5", "1023", "0-255,512", "0,2,4-6,1000-1022", "1-1023", "all"}) {
    PartitionSet set(1024);
    std::string error;
    ASSERT_TRUE(set.ParseRanges(text, &error)) << text << ": " << error;
    PartitionSet again(1024);
    ASSERT_TRUE(again.ParseRanges(set.ToString(), &error)) << set.ToString() << ": " << error;
    EXPECT_EQ(again.ToString(), set.ToString());
    for (uint32_t p = 0; p < 1024; ++p) ASSERT_EQ(again.Contains(p), set.Contains(p)) << p;
  }
}

TEST(PartitionSetTest, ToStringMergesAdjacentPartitions) {
  PartitionSet set(16);
  set.Add(3);
  set.Add(4);
  set.AddRange(5, 8);
  set.Add(10);
  EXPECT_EQ(set.ToString(), "3-8,10");
}

TEST(PartitionSetTest, ContainsIsFalseOutsideTheRange) {
  PartitionSet set = PartitionSet::All(16);
  EXPECT_TRUE(set.Contains(15));
  EXPECT_FALSE(set.Contains(16));
  EXPECT_FALSE(set.Contains(std::numeric_limits<uint32_t>::max()));
}

TEST(PartitionSetTest, ContainsAccountUsesPartitionOf) {
  PartitionSet set(1024);
  set.Add(460);  // PartitionOf(42, 1024), see the golden values
  EXPECT_TRUE(set.ContainsAccount(42));
  EXPECT_FALSE(set.ContainsAccount(1000));
}

}  // namespace
}  // namespace wallet
