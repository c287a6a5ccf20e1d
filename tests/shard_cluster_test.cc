// Shards in a cluster: real ZooKeeper (Debian's package, started by the harness),
// real wallet-shard processes started with --zk, real sockets.
//
// Each test bootstraps cluster "c" with 2 shards and 16 partitions (shard-0 owns
// 0-7, shard-1 owns 8-15) and checks what the shards learn from the partition map:
// which accounts they serve, the owner named in MOVED, changes of the map while
// they run, ZooKeeper going away and coming back, and a session that expires.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster/layout.h"
#include "cluster/zk_client.h"
#include "common/partition.h"
#include "gtest/gtest.h"
#include "harness/cluster.h"

namespace wallet::test {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kPartitions = 16;

// The first account id (from 1) whose partition lies in [first, last].
uint64_t AccountIn(uint32_t first, uint32_t last) {
  for (uint64_t account = 1;; ++account) {
    const uint32_t partition = PartitionOf(account, kPartitions);
    if (partition >= first && partition <= last) return account;
  }
}

// The node that announces shard `id`.
std::string ShardPath(const std::string& id) { return cluster::ClusterPaths("c").shard(id); }

class ShardClusterTest : public ClusterTest {
 protected:
  ShardClusterTest() : ClusterTest(/*shard_count=*/2, kPartitions) {}
};

TEST_F(ShardClusterTest, ShardsServeWhatTheMapGivesThemAndNameTheOwnerInMoved) {
  ServerProcess* shard0 = StartShard("shard-0");
  ServerProcess* shard1 = StartShard("shard-1");
  ASSERT_TRUE(shard0 != nullptr && shard1 != nullptr);
  const std::string address0 = absl::StrCat("127.0.0.1:", shard0->port());
  const std::string address1 = absl::StrCat("127.0.0.1:", shard1->port());
  EXPECT_TRUE(Eventually([&] { return Registered(ShardPath("shard-0")) == address0; }));
  EXPECT_TRUE(Eventually([&] { return Registered(ShardPath("shard-1")) == address1; }));

  const uint64_t low = AccountIn(0, 7);
  const uint64_t high = AccountIn(8, 15);
  EXPECT_EQ(CallOnce(shard0->port(), {"OPEN", absl::StrCat(low), "USD"}), "+OK");
  EXPECT_EQ(CallOnce(shard1->port(), {"OPEN", absl::StrCat(high), "USD"}), "+OK");
  const std::string moved = CallOnce(shard0->port(), {"OPEN", absl::StrCat(high), "USD"});
  EXPECT_TRUE(absl::StartsWith(moved, absl::StrCat("-MOVED ", PartitionOf(high, kPartitions), " shard-1 "))) << moved;
  EXPECT_TRUE(absl::StartsWith(CallOnce(shard1->port(), {"BALANCE", absl::StrCat(low)}),
                               absl::StrCat("-MOVED ", PartitionOf(low, kPartitions), " shard-0 ")));
}

TEST_F(ShardClusterTest, MapChangeMovesOwnershipWhileShardsRun) {
  ServerProcess* shard0 = StartShard("shard-0");
  ServerProcess* shard1 = StartShard("shard-1");
  ASSERT_TRUE(shard0 != nullptr && shard1 != nullptr);
  const uint64_t high = AccountIn(8, 15);
  const std::string partition = absl::StrCat(PartitionOf(high, kPartitions));
  ASSERT_TRUE(absl::StartsWith(CallOnce(shard0->port(), {"OPEN", absl::StrCat(high), "USD"}), "-MOVED"));

  absl::StatusOr<cluster::AssignResult> assigned =
      cluster::AssignPartitions(*admin_, "c", partition, "shard-0", cluster::kAnyVersion);
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  EXPECT_TRUE(Eventually([&] { return CallOnce(shard0->port(), {"OPEN", absl::StrCat(high), "USD"}) == "+OK"; }));
  EXPECT_TRUE(Eventually([&] {
    return absl::StartsWith(CallOnce(shard1->port(), {"BALANCE", absl::StrCat(high)}),
                            absl::StrCat("-MOVED ", partition, " shard-0 "));
  }));
}

TEST_F(ShardClusterTest, ShardKeepsServingWithoutZooKeeperAndFollowsTheMapAfterItReturns) {
  ServerProcess* shard0 = StartShard("shard-0");
  ASSERT_NE(shard0, nullptr);
  const uint64_t low = AccountIn(0, 7);
  const uint64_t high = AccountIn(8, 15);
  ASSERT_EQ(CallOnce(shard0->port(), {"OPEN", absl::StrCat(low), "USD"}), "+OK");

  admin_.reset();
  zookeeper_->Stop();
  EXPECT_EQ(CallOnce(shard0->port(), {"DEPOSIT", absl::StrCat(low), "500", "while-zk-down"}), "+OK");
  EXPECT_TRUE(absl::StartsWith(CallOnce(shard0->port(), {"OPEN", absl::StrCat(high), "USD"}), "-MOVED"));

  ASSERT_TRUE(zookeeper_->Restart().ok());
  ASSERT_NO_FATAL_FAILURE(ConnectAdmin());
  absl::StatusOr<cluster::AssignResult> assigned = cluster::AssignPartitions(
      *admin_, "c", absl::StrCat(PartitionOf(high, kPartitions)), "shard-0", cluster::kAnyVersion);
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  EXPECT_TRUE(Eventually([&] { return CallOnce(shard0->port(), {"OPEN", absl::StrCat(high), "USD"}) == "+OK"; }));
}

// A shard frozen longer than its session timeout loses its session (ZooKeeper
// removes its node); thawed, it opens a new session and announces itself again.
TEST_F(ShardClusterTest, ExpiredSessionIsReplacedAndTheShardRegistersAgain) {
  ServerProcess* shard0 = StartShard("shard-0");
  ASSERT_NE(shard0, nullptr);
  const std::string address = absl::StrCat("127.0.0.1:", shard0->port());
  ASSERT_TRUE(Eventually([&] { return Registered(ShardPath("shard-0")) == address; }));
  ASSERT_TRUE(shard0->process().Freeze().ok());
  EXPECT_TRUE(Eventually([&] { return Registered(ShardPath("shard-0")).empty(); }, 30s)) << "the session never expired";
  ASSERT_TRUE(shard0->process().Thaw().ok());
  EXPECT_TRUE(Eventually([&] { return Registered(ShardPath("shard-0")) == address; }, 30s));
  EXPECT_EQ(CallOnce(shard0->port(), {"OPEN", absl::StrCat(AccountIn(0, 7)), "USD"}), "+OK");
}

TEST_F(ShardClusterTest, SecondShardWithTheSameIdIsRefused) {
  ServerProcess* shard0 = StartShard("shard-0");
  ASSERT_NE(shard0, nullptr);
  ASSERT_TRUE(Eventually([&] { return !Registered(ShardPath("shard-0")).empty(); }));
  std::vector<std::string> argv = {WalletShardBinary(), "--port=0", "--ready_file=" + dir_->File("twin.port")};
  for (const std::string& flag : ShardFlags("shard-0", {"--shard_id_wait_ms=500"})) {
    argv.push_back(absl::StartsWith(flag, "--data_dir") ? "--data_dir=" + dir_->File("twin") : flag);
  }
  absl::StatusOr<std::unique_ptr<ChildProcess>> twin = ChildProcess::Start(argv, dir_->File("twin.log"));
  ASSERT_TRUE(twin.ok()) << twin.status();
  absl::StatusOr<ExitStatus> status = (*twin)->Wait(30s);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->exited && status->code == 1) << status->ToString();
  EXPECT_NE((*twin)->ReadLog().find("taken by another live shard"), std::string::npos) << (*twin)->ReadLog();
}

// A shard killed with SIGKILL leaves its node until its session times out; the
// restarted shard waits for it to go instead of giving up, then serves again.
TEST_F(ShardClusterTest, KilledShardRestartsUnderItsIdOnceTheOldSessionEnds) {
  ServerProcess* shard0 = StartShard("shard-0");
  ASSERT_NE(shard0, nullptr);
  const uint64_t low = AccountIn(0, 7);
  ASSERT_EQ(CallOnce(shard0->port(), {"OPEN", absl::StrCat(low), "USD"}), "+OK");
  ASSERT_TRUE(Eventually([&] { return !Registered(ShardPath("shard-0")).empty(); }));
  ASSERT_TRUE(shard0->process().Signal(SIGKILL).ok());
  ASSERT_TRUE(shard0->process().Wait(10s).ok());
  shards_.clear();
  ASSERT_FALSE(Registered(ShardPath("shard-0")).empty()) << "the old session's node should still be there";
  ServerProcess* again = StartShard("shard-0");  // ready only once registered
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(Registered(ShardPath("shard-0")), absl::StrCat("127.0.0.1:", again->port()));
  EXPECT_EQ(CallOnce(again->port(), {"OPEN", absl::StrCat(low), "USD"}), "+OK");  // replayed: same account
}

TEST_F(ShardClusterTest, PartitionCountOtherThanTheClusterIsRefused) {
  std::vector<std::string> argv = {WalletShardBinary(), "--port=0", "--ready_file=" + dir_->File("odd.port")};
  for (const std::string& flag : ShardFlags("shard-0", {"--partition_count=32"})) argv.push_back(flag);
  absl::StatusOr<std::unique_ptr<ChildProcess>> odd = ChildProcess::Start(argv, dir_->File("odd.log"));
  ASSERT_TRUE(odd.ok()) << odd.status();
  absl::StatusOr<ExitStatus> status = (*odd)->Wait(30s);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->exited && status->code == 1) << status->ToString();
  EXPECT_NE((*odd)->ReadLog().find("has 16 partitions"), std::string::npos) << (*odd)->ReadLog();
}

}  // namespace
}  // namespace wallet::test
