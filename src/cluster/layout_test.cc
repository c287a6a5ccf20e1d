// Unit tests of the layout's pure parts: names, paths, the partition map's text
// form (one case per parse error), the even assignment and Assign. ZooKeeper
// itself is exercised in tests/zookeeper_integration_test.cc.
#include "cluster/layout.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace wallet::cluster {
namespace {

std::vector<std::string> Ids(uint32_t count) {
  std::vector<std::string> ids;
  for (uint32_t i = 0; i < count; ++i) ids.push_back(ShardIdFor(i));
  return ids;
}

// The partitions in `text` (PartitionSet syntax) out of `count`.
PartitionSet Ranges(uint32_t count, std::string_view text) {
  PartitionSet set(count);
  std::string error;
  EXPECT_TRUE(set.ParseRanges(text, &error)) << error;
  return set;
}

TEST(NamesTest, ValidAndInvalid) {
  EXPECT_TRUE(ValidateName("shard id", "shard-0").ok());
  EXPECT_TRUE(ValidateName("cluster name", "Prod_EU-1").ok());
  EXPECT_TRUE(ValidateName("shard id", std::string(64, 'a')).ok());
  for (const std::string& bad : std::vector<std::string>{"", std::string(65, 'a'), "a b", "a/b", "a.b", "..", "shard-0\n", "é"}) {
    absl::Status status = ValidateName("shard id", bad);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << "'" << bad << "': " << status;
  }
  EXPECT_EQ(ShardIdFor(7), "shard-7");
}

TEST(ClusterPathsTest, OneRootPerCluster) {
  ClusterPaths paths("prod");
  EXPECT_EQ(paths.root(), "/wallet/prod");
  EXPECT_EQ(paths.partition_count(), "/wallet/prod/partition_count");
  EXPECT_EQ(paths.map(), "/wallet/prod/map");
  EXPECT_EQ(paths.shards(), "/wallet/prod/shards");
  EXPECT_EQ(paths.shard("shard-3"), "/wallet/prod/shards/shard-3");
  EXPECT_EQ(paths.routers(), "/wallet/prod/routers");
  EXPECT_EQ(paths.router("r1"), "/wallet/prod/routers/r1");
}

TEST(PartitionMapTest, EvenAssignmentIsContiguousAndBalanced) {
  absl::StatusOr<PartitionMap> map = PartitionMap::Even(1024, Ids(4));
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->Format(),
            "wallet-partition-map 1\n"
            "partition_count 1024\n"
            "shard-0 0-255\n"
            "shard-1 256-511\n"
            "shard-2 512-767\n"
            "shard-3 768-1023\n");
  for (uint32_t shards : {1u, 2u, 3u, 7u, 10u}) {
    absl::StatusOr<PartitionMap> even = PartitionMap::Even(10, Ids(shards));
    ASSERT_TRUE(even.ok()) << even.status();
    size_t smallest = 10, largest = 0;
    uint32_t next = 0;
    for (const std::string& id : even->ShardIds()) {
      PartitionSet owned = even->PartitionsOf(id);
      smallest = std::min(smallest, owned.size());
      largest = std::max(largest, owned.size());
      // Contiguous, and following the previous shard's range.
      for (uint32_t p = next; p < next + owned.size(); ++p) EXPECT_EQ(even->OwnerOf(p), id) << p;
      next += static_cast<uint32_t>(owned.size());
    }
    EXPECT_EQ(next, 10u);
    EXPECT_EQ(even->ShardIds().size(), shards);
    EXPECT_LE(largest - smallest, 1u) << shards << " shards";
  }
  absl::StatusOr<PartitionMap> one = PartitionMap::Even(8, Ids(1));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->Format(), "wallet-partition-map 1\npartition_count 8\nshard-0 all\n");
}

TEST(PartitionMapTest, EvenRefusesWhatCannotBeSpread) {
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMap::Even(4, Ids(5)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMap::Even(4, {}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMap::Even(0, Ids(1)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMap::Even(kMaxPartitionCount + 1, Ids(1)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMap::Even(4, {"a", "a"}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMap::Even(4, {"a b"}).status()));
}

TEST(PartitionMapTest, ParseGivesBackWhatFormatWrote) {
  absl::StatusOr<PartitionMap> map = PartitionMap::Even(100, Ids(3));
  ASSERT_TRUE(map.ok());
  ASSERT_TRUE(map->Assign(Ranges(100, "0-4,50,90-99"), "shard-9").ok());
  std::string text = map->Format();
  absl::StatusOr<PartitionMap> parsed = PartitionMap::Parse(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  EXPECT_TRUE(*parsed == *map);
  EXPECT_EQ(parsed->Format(), text);
  // Lines follow each shard's first partition; ranges are PartitionSet's form.
  EXPECT_EQ(text,
            "wallet-partition-map 1\n"
            "partition_count 100\n"
            "shard-9 0-4,50,90-99\n"
            "shard-0 5-32\n"
            "shard-1 33-49,51-65\n"
            "shard-2 66-89\n");
  for (const std::string& id : parsed->ShardIds()) {
    EXPECT_NE(text.find(id + " " + parsed->PartitionsOf(id).ToString() + "\n"), std::string::npos) << id;
  }
}

TEST(PartitionMapTest, ParseAcceptsHandWrittenButValidForms) {
  // Adjacent ranges need not be merged; "all" for a single owner.
  absl::StatusOr<PartitionMap> map =
      PartitionMap::Parse("wallet-partition-map 1\npartition_count 8\nb 4-7\na 0-1,2-3\n");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->OwnerOf(3), "a");
  EXPECT_EQ(map->OwnerOf(4), "b");
  EXPECT_EQ(map->Format(), "wallet-partition-map 1\npartition_count 8\na 0-3\nb 4-7\n");
  EXPECT_TRUE(PartitionMap::Parse("wallet-partition-map 1\npartition_count 8\nx all\n").ok());
}

// One case per rule of the grammar; each names the problem.
TEST(PartitionMapTest, ParseRefusesEachKindOfBadMap) {
  const std::string head = "wallet-partition-map 1\npartition_count 8\n";
  struct Case {
    std::string text;
    std::string error;  // a substring of the message
  };
  const std::vector<Case> cases = {
      {"", "no newline"},
      {head + "a 0-7", "no newline"},
      {"wallet-partition-map 2\npartition_count 8\na 0-7\n", "line 1: expected 'wallet-partition-map 1'"},
      {"wallet-partition-map 1\n", "line 2: expected 'partition_count N'"},
      {"wallet-partition-map 1\npartition_count 0\na all\n", "line 2"},
      {"wallet-partition-map 1\npartition_count 08\na all\n", "line 2"},
      {"wallet-partition-map 1\npartition_count 8 \na all\n", "line 2"},
      {"wallet-partition-map 1\npartition_count 1048577\na all\n", "line 2"},
      {"wallet-partition-map 1\r\npartition_count 8\na 0-7\n", "line 1"},
      {head + "a 0-7\r\n", "bad partition range"},
      {head + "\na 0-7\n", "line 3: expected 'shard-id ranges'"},
      {head + "a\n", "line 3: expected 'shard-id ranges'"},
      {head + "a  0-7\n", "bad partition range"},
      {head + "a\t0-7\n", "line 3: expected 'shard-id ranges'"},
      {head + "a/b 0-7\n", "shard id"},
      {head + "a \n", "bad partition range"},
      {head + "a 0-3\na 4-7\n", "shard a has a second line"},
      {head + "a 0-4\nb 4-7\n", "partition 4 is assigned twice (a and b)"},
      {head + "a 0-3,2\nb 4-7\n", "ascending and disjoint"},
      {head + "a 2-3,0-1\nb 4-7\n", "ascending and disjoint"},
      {head + "a 3-1\nb 4-7\n", "bad partition range"},
      {head + "a 0-8\n", "bad partition range '0-8'"},
      {head + "a 0-3,\nb 4-7\n", "bad partition range"},
      {head + "a -3\nb 4-7\n", "bad partition range"},
      {head + "a +1-3\n", "bad partition range"},
      {head + "a 0-3\nb all\n", "assigned twice"},
      {head + "a 0-3,all\n", "bad partition range"},
      {head + "a 0-2\nb 4-6\n", "leaves partitions 3,7 unassigned"},
      {head + "a 0-7\n\n", "expected 'shard-id ranges'"},
      {std::string(kMaxMapBytes + 1, 'x'), "exceeds"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<PartitionMap> map = PartitionMap::Parse(c.text);
    ASSERT_FALSE(map.ok()) << "accepted:\n" << c.text.substr(0, 200);
    EXPECT_TRUE(absl::IsInvalidArgument(map.status())) << map.status();
    EXPECT_NE(std::string(map.status().message()).find(c.error), std::string::npos)
        << "for:\n" << c.text.substr(0, 200) << "\ngot: " << map.status().message() << "\nwanted: " << c.error;
  }
}

TEST(PartitionMapTest, AssignMovesPartitionsAndDropsEmptyShards) {
  absl::StatusOr<PartitionMap> map = PartitionMap::Even(8, Ids(2));  // shard-0 0-3, shard-1 4-7
  ASSERT_TRUE(map.ok());
  PartitionSet set = Ranges(8, "2-5");
  absl::StatusOr<uint32_t> moved = map->Assign(set, "shard-1");
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2u);  // 2 and 3; 4 and 5 were shard-1's already
  EXPECT_EQ(map->PartitionsOf("shard-0").ToString(), "0-1");
  EXPECT_EQ(map->PartitionsOf("shard-1").ToString(), "2-7");
  moved = map->Assign(set, "shard-1");
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(*moved, 0u);

  set = Ranges(8, "0-1");
  moved = map->Assign(set, "shard-1");
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(map->ShardIds(), std::vector<std::string>{"shard-1"});
  EXPECT_EQ(map->Format(), "wallet-partition-map 1\npartition_count 8\nshard-1 all\n");
  EXPECT_TRUE(map->PartitionsOf("shard-0").size() == 0);

  EXPECT_TRUE(absl::IsInvalidArgument(map->Assign(PartitionSet::All(16), "shard-1").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(map->Assign(set, "bad id").status()));
}

}  // namespace
}  // namespace wallet::cluster
