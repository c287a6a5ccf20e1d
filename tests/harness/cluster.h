// cluster.h — a wallet cluster for integration tests, and the RESP client they use.
//
//   ClusterTest   a GoogleTest fixture: a real ZooKeeper (zookeeper.h) with cluster
//                 "c" bootstrapped (N shards, P partitions, even assignment), one
//                 TempDir, an admin ZooKeeper client, and wallet-shard (--zk) and
//                 wallet-router processes started on free ports as children of the
//                 test (process.h), each stopped by its pid at the end of the test.
//   RespClient    one blocking hiredis connection (10 s timeouts), replies as text.
//   CallOnce      one command over a new connection; InfoField/InfoNumber read INFO.
//   Eventually    polls a condition until it holds or a deadline passes.
//
// Example:
//   class MyTest : public ClusterTest {
//    protected:
//     MyTest() : ClusterTest(/*shard_count=*/2, /*partitions=*/16) {}
//   };
//   TEST_F(MyTest, Works) {
//     ASSERT_NO_FATAL_FAILURE(StartAllShards());
//     ServerProcess* router = StartRouter("router-a");
//     ASSERT_NE(router, nullptr);
//     const std::string x = absl::StrCat(AccountsOn("shard-0", 1)[0]);
//     EXPECT_EQ(CallOnce(router->port(), {"OPEN", x, "USD"}), "+OK");
//   }
//
// Nothing here asserts on timing: the deadlines only bound how long a broken build
// can make a test wait.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/zk_client.h"
#include "gtest/gtest.h"
#include "harness/process.h"
#include "harness/zookeeper.h"

namespace wallet::test {

using Args = std::vector<std::string>;

inline constexpr std::chrono::milliseconds kEventually{30'000};  // bounds a failure, never a success

// Polls `condition` every 20 ms until it holds or `limit` passes; the last result.
bool Eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit = kEventually);

// A reply as text: "+OK", "-CODE message", ":42", the bulk string itself, "(nil)",
// "[a, b]" for arrays.
std::string ReplyText(const redisReply* reply);

// The first word of a reply ("+OK" -> "OK", "-MOVED 3 ..." -> "MOVED").
std::string Word(const std::string& reply);

// One client connection to 127.0.0.1:port (hiredis, blocking, 10 s timeouts), opened
// on the first call and kept open across calls. Replies as ReplyText, or
// "!lost: why" when the connection failed (the next call connects again).
class RespClient {
 public:
  explicit RespClient(uint16_t port) : port_(port) {}
  ~RespClient();
  RespClient(const RespClient&) = delete;
  RespClient& operator=(const RespClient&) = delete;

  // Sends one command and waits for its reply.
  std::string Call(const Args& args);
  // Writes one command without waiting for its reply ("" or "!lost: why").
  std::string Send(const Args& args);
  // Reads the next reply.
  std::string Receive();

 private:
  std::string Lost();

  uint16_t port_;
  redisContext* context_ = nullptr;
};

// One command over a new connection.
std::string CallOnce(uint16_t port, const Args& args);

// The value of `field` in an INFO reply ("" when missing), and as a number (0 then).
std::string InfoField(const std::string& info, const std::string& field);
uint64_t InfoNumber(const std::string& info, const std::string& field);

// The fixture. Every shard runs with --data_dir=<dir>/<shard id> (so a restarted
// shard finds its data again) and a 4 s ZooKeeper session; every router with a 4 s
// session, --command_timeout_ms=1000 and --connect_timeout_ms=500.
class ClusterTest : public ::testing::Test {
 protected:
  static constexpr char kCluster[] = "c";

  ClusterTest(int shard_count, uint32_t partitions) : shard_count_(shard_count), partitions_(partitions) {}

  // Starts ZooKeeper, creates the folder, connects the admin client and bootstraps
  // cluster "c". Subclasses that override it call it first.
  void SetUp() override;
  // Stops the routers, then the shards (by pid), then closes the admin client.
  void TearDown() override;

  // (Re)connects admin_ (after a ZooKeeper restart, for instance).
  void ConnectAdmin();

  // The flags shard `id` runs with, `extra` appended.
  Args ShardFlags(const std::string& id, const Args& extra = {}) const;
  // Starts shard `id` (its log: <dir>/<id>-<n>.log) and waits until it listens;
  // it replaces shards_[id], which must have been stopped. Null (with a test
  // failure) when it did not start.
  ServerProcess* StartShard(const std::string& id, const Args& extra = {});
  // Starts shard-0 ... shard-<N-1>.
  void StartAllShards(const Args& extra = {});
  // Starts router `id` and waits until it listens (not until it sees the shards);
  // it replaces routers_[id]. Null (with a test failure) when it did not start.
  ServerProcess* StartRouterProcess(const std::string& id, const Args& extra = {});

  // The data of a node ("" when it is missing), e.g. "/wallet/c/shards/shard-0".
  std::string Registered(const std::string& path);
  // `count` accounts (from `start` up) in partitions that `shard_id` owns in the map now.
  std::vector<uint64_t> AccountsOn(const std::string& shard_id, size_t count, uint64_t start = 1);
  uint16_t ShardPort(const std::string& id) const { return shards_.at(id)->port(); }

  const int shard_count_;
  const uint32_t partitions_;
  std::unique_ptr<ZooKeeperServer> zookeeper_;
  std::optional<TempDir> dir_;
  std::unique_ptr<cluster::ZkClient> admin_;
  std::map<std::string, std::unique_ptr<ServerProcess>> shards_;
  std::map<std::string, std::unique_ptr<ServerProcess>> routers_;
  int starts_ = 0;  // numbers the logs of successive starts
};

}  // namespace wallet::test
