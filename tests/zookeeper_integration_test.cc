// zookeeper_integration_test.cc — src/cluster against a real ZooKeeper server.
//
// Each test starts its own standalone ZooKeeper (tests/harness/zookeeper.h: Debian's
// package, a free loopback port, a private data directory) and drives the
// ZkClient wrapper, Bootstrap, EphemeralNode, PartitionMapWatcher and the
// wallet-cluster tool against it, including the faults the cluster must survive:
// ZooKeeper stopped and restarted under running clients, and a session expired
// from outside (a second client joins the session with its id and password, then
// closes it).
//
// Nothing here asserts on timing: conditions are polled until they hold, and the
// deadlines only bound how long a broken build can make a test wait.
#include <signal.h>

#include <algorithm>
#include <initializer_list>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster/ephemeral_node.h"
#include "cluster/layout.h"
#include "cluster/map_watcher.h"
#include "cluster/zk_client.h"
#include "gtest/gtest.h"
#include "harness/process.h"
#include "harness/zookeeper.h"

namespace wallet::test {
namespace {

using namespace std::chrono_literals;
using cluster::BootstrapResult;
using cluster::ClusterPaths;
using cluster::ConnectionState;
using cluster::CreateMode;
using cluster::EphemeralNode;
using cluster::NodeEvent;
using cluster::PartitionMap;
using cluster::PartitionMapWatcher;
using cluster::SessionEvent;
using cluster::ShardCountChange;
using cluster::VersionedPartitionMap;
using cluster::Watch;
using cluster::ZkClient;
using cluster::ZkClientOptions;

// Bounds how long a condition that should become true may take (a failure bound,
// never a success criterion).
constexpr std::chrono::milliseconds kEventually = 30s;
constexpr std::chrono::milliseconds kPollInterval = 10ms;

std::string WalletClusterBinary() {
#ifdef WALLET_CLUSTER_BINARY
  return WALLET_CLUSTER_BINARY;
#else
  return "";
#endif
}

// Polls `condition` until it holds; fails naming `what` after `timeout`.
template <typename Condition>
::testing::AssertionResult Eventually(const Condition& condition, const std::string& what,
                                      std::chrono::milliseconds timeout = kEventually) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return ::testing::AssertionFailure() << "still not true after " << timeout.count() << " ms: " << what;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  return ::testing::AssertionSuccess();
}

// Remembers every event a client delivers (called on the client's event thread).
class RecordingListener : public cluster::ZkListener {
 public:
  void OnSessionEvent(SessionEvent event) override {
    std::lock_guard<std::mutex> lock(mutex_);
    session_events_.push_back(event);
  }
  void OnNodeEvent(NodeEvent event, const std::string& path) override {
    std::lock_guard<std::mutex> lock(mutex_);
    node_events_.emplace_back(event, path);
  }
  bool SawSession(SessionEvent event) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::find(session_events_.begin(), session_events_.end(), event) != session_events_.end();
  }
  bool SawNode(NodeEvent event, const std::string& path) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::find(node_events_.begin(), node_events_.end(), std::make_pair(event, path)) != node_events_.end();
  }
  std::vector<SessionEvent> session_events() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return session_events_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<SessionEvent> session_events_;
  std::vector<std::pair<NodeEvent, std::string>> node_events_;
};

// "connected, disconnected, ..." for failure messages.
std::string Describe(const std::vector<SessionEvent>& events) {
  std::string out;
  for (SessionEvent event : events) absl::StrAppend(&out, out.empty() ? "" : ", ", cluster::SessionEventName(event));
  return out;
}

// Every map version a watcher's callback saw, in order.
class MapVersions {
 public:
  PartitionMapWatcher::Callback Callback() {
    return [this](std::shared_ptr<const VersionedPartitionMap> map) {
      std::lock_guard<std::mutex> lock(mutex_);
      versions_.push_back(map->version);
    };
  }
  std::vector<int32_t> versions() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return versions_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<int32_t> versions_;
};

class ZooKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ZooKeeperServer>> server = ZooKeeperServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    zookeeper_ = std::move(*server);
    ::testing::Test::RecordProperty("zookeeper_start_ms",
                                    static_cast<int>(zookeeper_->last_start_duration().count()));
  }

  ZkClientOptions Options() const {
    ZkClientOptions options;
    options.connect_string = zookeeper_->connect_string();
    options.session_timeout_ms = 6'000;
    options.connect_timeout_ms = 20'000;
    options.operation_timeout_ms = 5'000;
    return options;
  }

  // Connects each client; a fatal failure when one cannot connect. Call it as
  // ASSERT_NO_FATAL_FAILURE(Connect({&a, &b})).
  void Connect(std::initializer_list<std::unique_ptr<ZkClient>*> clients) {
    for (std::unique_ptr<ZkClient>* client : clients) {
      absl::StatusOr<std::unique_ptr<ZkClient>> connected = ZkClient::Connect(Options());
      ASSERT_TRUE(connected.ok()) << connected.status();
      *client = std::move(*connected);
    }
  }

  // The cluster most tests use: "c", 2 shards, 16 partitions (shard-0 0-7,
  // shard-1 8-15).
  static void BootstrapSmallCluster(ZkClient& client) {
    absl::StatusOr<BootstrapResult> result =
        cluster::Bootstrap(client, "c", /*shard_count=*/2, /*partition_count=*/16, ShardCountChange::kRefuse);
    ASSERT_TRUE(result.ok()) << result.status();
  }

  // Runs wallet-cluster with `args`; returns its exit status and fills *output
  // with what it printed (stdout and stderr).
  ExitStatus RunTool(const std::vector<std::string>& args, std::string* output) {
    std::vector<std::string> argv = {WalletClusterBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string log = absl::StrCat(zookeeper_->directory(), "/tool-", ++tool_runs_, ".log");
    absl::StatusOr<std::unique_ptr<ChildProcess>> tool = ChildProcess::Start(argv, log);
    EXPECT_TRUE(tool.ok()) << tool.status();
    if (!tool.ok()) return ExitStatus{};
    absl::StatusOr<ExitStatus> status = (*tool)->Wait(kEventually);
    EXPECT_TRUE(status.ok()) << status.status();
    *output = (*tool)->ReadLog();
    return status.ok() ? *status : (*tool)->Stop();
  }

  std::unique_ptr<ZooKeeperServer> zookeeper_;
  int tool_runs_ = 0;
};

// ---------------------------------------------------------------------------
// The harness and the client wrapper.

TEST_F(ZooKeeperTest, ServerAnswersAndRestartsOnTheSamePort) {
  std::fprintf(stderr, "[zookeeper] start took %lld ms\n",
               static_cast<long long>(zookeeper_->last_start_duration().count()));
  absl::StatusOr<std::string> reply = zookeeper_->FourLetterWord("ruok");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "imok");
  uint16_t port = zookeeper_->port();
  ExitStatus stopped = zookeeper_->Stop();
  EXPECT_FALSE(zookeeper_->Running()) << stopped.ToString();
  EXPECT_FALSE(zookeeper_->FourLetterWord("ruok", 500ms).ok());
  ASSERT_TRUE(zookeeper_->Restart().ok());
  std::fprintf(stderr, "[zookeeper] restart took %lld ms\n",
               static_cast<long long>(zookeeper_->last_start_duration().count()));
  EXPECT_EQ(zookeeper_->port(), port);
  reply = zookeeper_->FourLetterWord("srvr");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(absl::StrContains(*reply, "Mode: standalone")) << *reply;
}

TEST_F(ZooKeeperTest, HelpersReturnCodesByWhatTheCallerShouldDo) {
  std::unique_ptr<ZkClient> client;
  ASSERT_NO_FATAL_FAILURE(Connect({&client}));
  EXPECT_EQ(client->state(), ConnectionState::kConnected);
  EXPECT_NE(client->session().session_id, 0);
  EXPECT_EQ(client->session().password.size(), 16u);

  EXPECT_TRUE(absl::IsNotFound(client->Create("/a/b", "x", CreateMode::kPersistent)));  // no parent
  ASSERT_TRUE(client->Create("/a", "one", CreateMode::kPersistent).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(client->Create("/a", "two", CreateMode::kPersistent)));

  absl::StatusOr<cluster::NodeData> node = client->Get("/a", Watch::kNone);
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ(node->data, "one");
  EXPECT_EQ(node->stat.version, 0);
  EXPECT_TRUE(absl::IsNotFound(client->Get("/missing", Watch::kNone).status()));

  absl::StatusOr<cluster::NodeStat> set = client->Set("/a", "three", /*expected_version=*/0);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->version, 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(client->Set("/a", "four", /*expected_version=*/0).status()));
  EXPECT_TRUE(client->Set("/a", "five", cluster::kAnyVersion).ok());
  EXPECT_TRUE(absl::IsNotFound(client->Set("/missing", "x", cluster::kAnyVersion).status()));

  ASSERT_TRUE(client->EnsurePath("/a/b/c").ok());
  ASSERT_TRUE(client->EnsurePath("/a/b/c").ok());  // idempotent
  EXPECT_TRUE(absl::IsInvalidArgument(client->EnsurePath("relative")));
  absl::StatusOr<std::vector<std::string>> children = client->GetChildren("/a", Watch::kNone);
  ASSERT_TRUE(children.ok()) << children.status();
  EXPECT_EQ(*children, std::vector<std::string>{"b"});

  absl::StatusOr<std::optional<cluster::NodeStat>> exists = client->Exists("/a/b/c", Watch::kNone);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_TRUE(exists->has_value());
  exists = client->Exists("/a/b/none", Watch::kNone);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_FALSE(exists->has_value());

  EXPECT_TRUE(absl::IsFailedPrecondition(client->Delete("/a/b", cluster::kAnyVersion)));  // has a child
  EXPECT_TRUE(absl::IsFailedPrecondition(client->Delete("/a/b/c", /*expected_version=*/7)));
  EXPECT_TRUE(client->Delete("/a/b/c", cluster::kAnyVersion).ok());
  EXPECT_TRUE(absl::IsNotFound(client->Delete("/a/b/c", cluster::kAnyVersion)));
  EXPECT_TRUE(absl::IsInvalidArgument(client->Create("no-slash", "", CreateMode::kPersistent)));

  // CreateAll: all or nothing, and the error names the node that failed.
  absl::Status all = client->CreateAll({{"/t", ""}, {"/t/x", "1"}, {"/a", "exists"}});
  EXPECT_TRUE(absl::IsAlreadyExists(all)) << all;
  EXPECT_TRUE(absl::StrContains(all.message(), "/a")) << all;
  exists = client->Exists("/t", Watch::kNone);
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(exists->has_value()) << "a failed transaction left /t behind";
  ASSERT_TRUE(client->CreateAll({{"/t", ""}, {"/t/x", "1"}}).ok());
  node = client->Get("/t/x", Watch::kNone);
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->data, "1");
}

TEST_F(ZooKeeperTest, WatchesAreOneShotAndReportedOnTheEventThread) {
  std::unique_ptr<ZkClient> watcher, writer;
  ASSERT_NO_FATAL_FAILURE(Connect({&watcher, &writer}));
  RecordingListener listener;
  watcher->AddListener(&listener);
  ASSERT_TRUE(writer->Create("/w", "0", CreateMode::kPersistent).ok());
  ASSERT_TRUE(watcher->Get("/w", Watch::kArm).ok());
  absl::StatusOr<std::optional<cluster::NodeStat>> missing = watcher->Exists("/w2", Watch::kArm);
  ASSERT_TRUE(missing.ok());
  ASSERT_TRUE(watcher->GetChildren("/w", Watch::kArm).ok());

  ASSERT_TRUE(writer->Set("/w", "1", cluster::kAnyVersion).ok());
  ASSERT_TRUE(writer->Create("/w2", "", CreateMode::kPersistent).ok());
  ASSERT_TRUE(writer->Create("/w/child", "", CreateMode::kPersistent).ok());
  EXPECT_TRUE(Eventually([&] { return listener.SawNode(NodeEvent::kDataChanged, "/w"); }, "data watch on /w"));
  EXPECT_TRUE(Eventually([&] { return listener.SawNode(NodeEvent::kCreated, "/w2"); }, "exists watch on /w2"));
  EXPECT_TRUE(
      Eventually([&] { return listener.SawNode(NodeEvent::kChildrenChanged, "/w"); }, "child watch on /w"));
  watcher->RemoveListener(&listener);
}

TEST_F(ZooKeeperTest, ConnectToNothingFailsWithUnavailable) {
  ZkClientOptions options = Options();
  uint16_t port = zookeeper_->port();
  zookeeper_->Stop();  // nothing listens on the port any more
  options.connect_string = absl::StrCat("127.0.0.1:", port);
  options.connect_timeout_ms = 1'500;
  absl::StatusOr<std::unique_ptr<ZkClient>> client = ZkClient::Connect(options);
  EXPECT_TRUE(absl::IsUnavailable(client.status())) << client.status();
  options.connect_string = "";
  EXPECT_TRUE(absl::IsInvalidArgument(ZkClient::Connect(options).status()));
}

TEST_F(ZooKeeperTest, FrozenServerGivesUnavailableNotAHang) {
  ZkClientOptions options = Options();
  options.operation_timeout_ms = 1'000;
  absl::StatusOr<std::unique_ptr<ZkClient>> client = ZkClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Create("/f", "x", CreateMode::kPersistent).ok());
  ASSERT_TRUE(zookeeper_->Freeze().ok());
  absl::StatusOr<cluster::NodeData> node = (*client)->Get("/f", Watch::kNone);
  EXPECT_TRUE(absl::IsUnavailable(node.status())) << node.status();
  ASSERT_TRUE(zookeeper_->Thaw().ok());
  EXPECT_TRUE(Eventually([&] { return (*client)->Get("/f", Watch::kNone).ok(); }, "reads work after thaw"));
}

// ---------------------------------------------------------------------------
// Bootstrap.

TEST_F(ZooKeeperTest, BootstrapCreatesTheLayout) {
  std::unique_ptr<ZkClient> client;
  ASSERT_NO_FATAL_FAILURE(Connect({&client}));
  absl::StatusOr<BootstrapResult> result =
      cluster::Bootstrap(*client, "prod", /*shard_count=*/4, /*partition_count=*/1024, ShardCountChange::kRefuse);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outcome, BootstrapResult::Outcome::kCreated);
  EXPECT_EQ(result->map_version, 0);

  ClusterPaths paths("prod");
  absl::StatusOr<cluster::NodeData> count = client->Get(paths.partition_count(), Watch::kNone);
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->data, "1024");
  absl::StatusOr<cluster::NodeData> map = client->Get(paths.map(), Watch::kNone);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->data,
            "wallet-partition-map 1\npartition_count 1024\n"
            "shard-0 0-255\nshard-1 256-511\nshard-2 512-767\nshard-3 768-1023\n");
  EXPECT_EQ(map->stat.version, 0);
  for (const std::string& path : {paths.shards(), paths.routers()}) {
    absl::StatusOr<std::vector<std::string>> children = client->GetChildren(path, Watch::kNone);
    ASSERT_TRUE(children.ok()) << path << ": " << children.status();
    EXPECT_TRUE(children->empty());
  }
  absl::StatusOr<cluster::LayoutSnapshot> layout = cluster::ReadLayout(*client, "prod");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->partition_count, 1024u);
  EXPECT_EQ(layout->map.map.ShardIds().size(), 4u);
  EXPECT_TRUE(absl::IsNotFound(cluster::ReadLayout(*client, "other").status()));
}

TEST_F(ZooKeeperTest, BootstrapAgainIsANoOpEvenAfterPartitionsMoved) {
  std::unique_ptr<ZkClient> client;
  ASSERT_NO_FATAL_FAILURE(Connect({&client}));
  ASSERT_TRUE(cluster::Bootstrap(*client, "c", 3, 64, ShardCountChange::kRefuse).ok());
  absl::StatusOr<BootstrapResult> again = cluster::Bootstrap(*client, "c", 3, 64, ShardCountChange::kRefuse);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->outcome, BootstrapResult::Outcome::kUnchanged) << again->summary;
  EXPECT_EQ(again->map_version, 0);

  absl::StatusOr<cluster::AssignResult> moved = cluster::AssignPartitions(*client, "c", "0-3", "shard-2", cluster::kAnyVersion);
  ASSERT_TRUE(moved.ok()) << moved.status();
  absl::StatusOr<cluster::NodeData> before = client->Get(ClusterPaths("c").map(), Watch::kNone);
  ASSERT_TRUE(before.ok());
  again = cluster::Bootstrap(*client, "c", 3, 64, ShardCountChange::kRefuse);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->outcome, BootstrapResult::Outcome::kUnchanged) << again->summary;
  absl::StatusOr<cluster::NodeData> after = client->Get(ClusterPaths("c").map(), Watch::kNone);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->stat.modified_zxid, before->stat.modified_zxid) << "bootstrap rewrote the map";
  EXPECT_EQ(after->data, before->data);
}

TEST_F(ZooKeeperTest, BootstrapRefusesADifferentPartitionCount) {
  std::unique_ptr<ZkClient> client;
  ASSERT_NO_FATAL_FAILURE(Connect({&client}));
  ASSERT_TRUE(cluster::Bootstrap(*client, "c", 2, 1024, ShardCountChange::kRefuse).ok());
  for (ShardCountChange change : {ShardCountChange::kRefuse, ShardCountChange::kReassignEvenly}) {
    absl::StatusOr<BootstrapResult> result = cluster::Bootstrap(*client, "c", 2, 2048, change);
    ASSERT_FALSE(result.ok());
    EXPECT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "has 1024 partitions")) << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "asked for 2048")) << result.status();
  }
  absl::StatusOr<cluster::NodeData> count = client->Get(ClusterPaths("c").partition_count(), Watch::kNone);
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->data, "1024");
}

TEST_F(ZooKeeperTest, BootstrapRefusesADifferentShardCountUnlessTold) {
  std::unique_ptr<ZkClient> client;
  ASSERT_NO_FATAL_FAILURE(Connect({&client}));
  ASSERT_TRUE(cluster::Bootstrap(*client, "c", 4, 1024, ShardCountChange::kRefuse).ok());
  absl::StatusOr<BootstrapResult> refused = cluster::Bootstrap(*client, "c", 5, 1024, ShardCountChange::kRefuse);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "4 shards")) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "not the 5 asked for")) << refused.status();
  absl::StatusOr<VersionedPartitionMap> map = cluster::ReadPartitionMap(*client, ClusterPaths("c"), Watch::kNone);
  ASSERT_TRUE(map.ok());
  EXPECT_EQ(map->version, 0);
  EXPECT_EQ(map->map.ShardIds().size(), 4u);

  absl::StatusOr<BootstrapResult> reassigned =
      cluster::Bootstrap(*client, "c", 5, 1024, ShardCountChange::kReassignEvenly);
  ASSERT_TRUE(reassigned.ok()) << reassigned.status();
  EXPECT_EQ(reassigned->outcome, BootstrapResult::Outcome::kReassigned);
  EXPECT_EQ(reassigned->map_version, 1);
  EXPECT_TRUE(absl::StrContains(reassigned->summary, "map version 0 -> 1")) << reassigned->summary;
  map = cluster::ReadPartitionMap(*client, ClusterPaths("c"), Watch::kNone);
  ASSERT_TRUE(map.ok());
  absl::StatusOr<PartitionMap> even = PartitionMap::Even(1024, {"shard-0", "shard-1", "shard-2", "shard-3", "shard-4"});
  ASSERT_TRUE(even.ok());
  EXPECT_TRUE(map->map == *even);
}

TEST_F(ZooKeeperTest, ConcurrentBootstrapsMakeOneLayout) {
  std::unique_ptr<ZkClient> first, second;
  ASSERT_NO_FATAL_FAILURE(Connect({&first, &second}));
  absl::StatusOr<BootstrapResult> a = absl::UnknownError("not run"), b = absl::UnknownError("not run");
  std::thread racer([&] { a = cluster::Bootstrap(*first, "race", 3, 96, ShardCountChange::kRefuse); });
  b = cluster::Bootstrap(*second, "race", 3, 96, ShardCountChange::kRefuse);
  racer.join();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  int created = (a->outcome == BootstrapResult::Outcome::kCreated) + (b->outcome == BootstrapResult::Outcome::kCreated);
  EXPECT_EQ(created, 1) << a->summary << " / " << b->summary;
  absl::StatusOr<VersionedPartitionMap> map = cluster::ReadPartitionMap(*first, ClusterPaths("race"), Watch::kNone);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->version, 0);
}

// ---------------------------------------------------------------------------
// Ephemeral registrations.

TEST_F(ZooKeeperTest, EphemeralNodeDisappearsWhenItsSessionCloses) {
  std::unique_ptr<ZkClient> shard_client, observer;
  ASSERT_NO_FATAL_FAILURE(Connect({&shard_client, &observer}));
  ASSERT_NO_FATAL_FAILURE(BootstrapSmallCluster(*observer));
  const std::string path = ClusterPaths("c").shard("shard-0");

  // A plain ephemeral create: what removes the node here is the session's end
  // (the client's destructor closes it), not EphemeralNode's own delete.
  ASSERT_TRUE(shard_client->Create(path, "127.0.0.1:7001", CreateMode::kEphemeral).ok());
  absl::StatusOr<cluster::NodeData> node = observer->Get(path, Watch::kNone);
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ(node->data, "127.0.0.1:7001");
  EXPECT_EQ(node->stat.ephemeral_owner, shard_client->session().session_id);
  absl::StatusOr<cluster::LayoutSnapshot> layout = cluster::ReadLayout(*observer, "c");
  ASSERT_TRUE(layout.ok());
  ASSERT_EQ(layout->shards.size(), 1u);
  EXPECT_EQ(layout->shards[0], std::make_pair(std::string("shard-0"), std::string("127.0.0.1:7001")));

  RecordingListener listener;
  observer->AddListener(&listener);
  ASSERT_TRUE(observer->Exists(path, Watch::kArm).ok());
  shard_client.reset();  // closes the session
  EXPECT_TRUE(Eventually([&] { return listener.SawNode(NodeEvent::kDeleted, path); }, "deletion seen by a watch"));
  absl::StatusOr<std::optional<cluster::NodeStat>> exists = observer->Exists(path, Watch::kNone);
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(exists->has_value());
  observer->RemoveListener(&listener);
}

TEST_F(ZooKeeperTest, EphemeralNodeOfAnotherOwnerIsRefusedThenTakenOver) {
  std::unique_ptr<ZkClient> first, second;
  ASSERT_NO_FATAL_FAILURE(Connect({&first, &second}));
  ASSERT_NO_FATAL_FAILURE(BootstrapSmallCluster(*first));
  const std::string path = ClusterPaths("c").shard("shard-1");
  auto original = std::make_unique<EphemeralNode>(first.get(), path, "127.0.0.1:1");
  ASSERT_TRUE(original->Register().ok());
  EphemeralNode impostor(second.get(), path, "127.0.0.1:2");
  absl::Status status = impostor.Register();
  EXPECT_TRUE(absl::IsAlreadyExists(status)) << status;
  EXPECT_FALSE(impostor.registered());

  original.reset();  // deletes its node (its session still lives)
  EXPECT_TRUE(Eventually([&] { return impostor.registered(); }, "the second owner takes over"));
  absl::StatusOr<cluster::NodeData> node = first->Get(path, Watch::kNone);
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->data, "127.0.0.1:2");
  EXPECT_EQ(node->stat.ephemeral_owner, second->session().session_id);
}

// ---------------------------------------------------------------------------
// The map watcher.

TEST_F(ZooKeeperTest, MapWatcherSeesEachChangeByAnotherClientAndReArms) {
  std::unique_ptr<ZkClient> operator_client, router_client;
  ASSERT_NO_FATAL_FAILURE(Connect({&operator_client, &router_client}));
  ASSERT_NO_FATAL_FAILURE(BootstrapSmallCluster(*operator_client));

  MapVersions seen;
  PartitionMapWatcher watcher(router_client.get(), "c", seen.Callback());
  ASSERT_TRUE(watcher.Start().ok()) << watcher.last_status();
  ASSERT_NE(watcher.current(), nullptr);
  EXPECT_EQ(watcher.current()->version, 0);
  EXPECT_EQ(watcher.current()->map.OwnerOf(0), "shard-0");

  ASSERT_TRUE(cluster::AssignPartitions(*operator_client, "c", "0-1", "shard-1", cluster::kAnyVersion).ok());
  EXPECT_TRUE(Eventually([&] { return watcher.current()->version == 1; }, "watcher at version 1"));
  EXPECT_EQ(watcher.current()->map.OwnerOf(0), "shard-1");
  EXPECT_EQ(watcher.current()->map.OwnerOf(2), "shard-0");

  // The watch was re-armed: a second change is seen too.
  ASSERT_TRUE(cluster::AssignPartitions(*operator_client, "c", "15", "shard-7", cluster::kAnyVersion).ok());
  EXPECT_TRUE(Eventually([&] { return watcher.current()->version == 2; }, "watcher at version 2"));
  EXPECT_EQ(watcher.current()->map.OwnerOf(15), "shard-7");
  EXPECT_EQ(seen.versions(), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_TRUE(watcher.last_status().ok()) << watcher.last_status();
}

TEST_F(ZooKeeperTest, MapWatcherKeepsAGoodMapWhenABadOneIsWritten) {
  std::unique_ptr<ZkClient> client;
  ASSERT_NO_FATAL_FAILURE(Connect({&client}));
  ASSERT_NO_FATAL_FAILURE(BootstrapSmallCluster(*client));
  PartitionMapWatcher watcher(client.get(), "c", nullptr);
  ASSERT_TRUE(watcher.Start().ok());
  ASSERT_TRUE(client->Set(ClusterPaths("c").map(), "garbage", cluster::kAnyVersion).ok());
  EXPECT_TRUE(Eventually([&] { return absl::IsDataLoss(watcher.last_status()); }, "bad map reported"));
  EXPECT_EQ(watcher.current()->version, 0);
  // Still watching: a good map written next is taken.
  absl::StatusOr<PartitionMap> good = PartitionMap::Even(16, {"shard-0", "shard-1", "shard-2"});
  ASSERT_TRUE(good.ok());
  ASSERT_TRUE(client->Set(ClusterPaths("c").map(), good->Format(), cluster::kAnyVersion).ok());
  EXPECT_TRUE(Eventually([&] { return watcher.current()->version == 2; }, "good map after the bad one"));
  EXPECT_TRUE(watcher.last_status().ok()) << watcher.last_status();
}

TEST_F(ZooKeeperTest, MapWatcherServesItsCacheWhileZooKeeperIsDownAndFollowsAfterRestart) {
  std::unique_ptr<ZkClient> router_client;
  ASSERT_NO_FATAL_FAILURE(Connect({&router_client}));
  ASSERT_NO_FATAL_FAILURE(BootstrapSmallCluster(*router_client));
  RecordingListener listener;
  router_client->AddListener(&listener);
  MapVersions seen;
  PartitionMapWatcher watcher(router_client.get(), "c", seen.Callback());
  ASSERT_TRUE(watcher.Start().ok());
  const int64_t session_id = router_client->session().session_id;

  zookeeper_->Stop();
  EXPECT_TRUE(Eventually([&] { return router_client->state() == ConnectionState::kDisconnected; },
                         "client reports disconnected"));
  EXPECT_TRUE(listener.SawSession(SessionEvent::kDisconnected)) << Describe(listener.session_events());
  ASSERT_NE(watcher.current(), nullptr);
  EXPECT_EQ(watcher.current()->version, 0);  // the cache is still served
  EXPECT_EQ(watcher.current()->map.OwnerOf(15), "shard-1");
  EXPECT_TRUE(absl::IsUnavailable(router_client->Get("/wallet", Watch::kNone).status()));

  ASSERT_TRUE(zookeeper_->Restart().ok());
  EXPECT_TRUE(Eventually([&] { return router_client->state() == ConnectionState::kConnected; },
                         "client reconnects after the restart"));
  EXPECT_TRUE(listener.SawSession(SessionEvent::kConnected)) << Describe(listener.session_events());
  EXPECT_EQ(router_client->session().session_id, session_id) << "ZooKeeper keeps sessions across a restart";

  std::unique_ptr<ZkClient> operator_client;
  ASSERT_NO_FATAL_FAILURE(Connect({&operator_client}));
  ASSERT_TRUE(cluster::AssignPartitions(*operator_client, "c", "15", "shard-0", cluster::kAnyVersion).ok());
  EXPECT_TRUE(Eventually([&] { return watcher.current()->version == 1; }, "change after the restart seen"));
  EXPECT_EQ(watcher.current()->map.OwnerOf(15), "shard-0");
  ASSERT_TRUE(cluster::AssignPartitions(*operator_client, "c", "14", "shard-0", cluster::kAnyVersion).ok());
  EXPECT_TRUE(Eventually([&] { return watcher.current()->version == 2; }, "and the next one"));
  router_client->RemoveListener(&listener);
}

// ---------------------------------------------------------------------------
// Session expiry.

TEST_F(ZooKeeperTest, ExpiredSessionIsReplacedAndOwnersReRegisterAndReRead) {
  std::unique_ptr<ZkClient> shard_client, operator_client;
  ASSERT_NO_FATAL_FAILURE(Connect({&shard_client, &operator_client}));
  ASSERT_NO_FATAL_FAILURE(BootstrapSmallCluster(*operator_client));
  const std::string path = ClusterPaths("c").shard("shard-0");
  RecordingListener listener;
  shard_client->AddListener(&listener);
  EphemeralNode registration(shard_client.get(), path, "127.0.0.1:7001");
  ASSERT_TRUE(registration.Register().ok()) << registration.last_status();
  MapVersions seen;
  PartitionMapWatcher watcher(shard_client.get(), "c", seen.Callback());
  ASSERT_TRUE(watcher.Start().ok());

  const cluster::SessionCredentials old_session = shard_client->session();
  ASSERT_TRUE(ExpireSession(zookeeper_->connect_string(), old_session.session_id, old_session.password).ok());
  // The old session is gone on the server: its node is deleted, its watch with it.
  absl::StatusOr<std::optional<cluster::NodeStat>> gone = operator_client->Exists(path, Watch::kNone);
  ASSERT_TRUE(gone.ok());
  // (The new session may already have re-created it; only its owner matters.)
  if (gone->has_value()) {
    EXPECT_NE((*gone)->ephemeral_owner, old_session.session_id);
  }
  // A change the old session's watch can no longer report: only a re-read finds it.
  ASSERT_TRUE(cluster::AssignPartitions(*operator_client, "c", "0", "shard-1", cluster::kAnyVersion).ok());

  EXPECT_TRUE(Eventually([&] { return shard_client->sessions_opened() == 2; }, "a new session opened"));
  EXPECT_TRUE(Eventually([&] { return shard_client->state() == ConnectionState::kConnected; }, "connected again"));
  EXPECT_TRUE(Eventually([&] { return listener.SawSession(SessionEvent::kNewSession); }, "kNewSession delivered"));
  EXPECT_TRUE(listener.SawSession(SessionEvent::kExpired)) << Describe(listener.session_events());
  const int64_t new_session_id = shard_client->session().session_id;
  EXPECT_NE(new_session_id, old_session.session_id);

  EXPECT_TRUE(Eventually(
      [&] {
        absl::StatusOr<cluster::NodeData> node = operator_client->Get(path, Watch::kNone);
        return node.ok() && node->stat.ephemeral_owner == new_session_id && node->data == "127.0.0.1:7001";
      },
      "the shard's node re-created on the new session"));
  EXPECT_TRUE(Eventually([&] { return registration.registered() && registration.creations() == 2; },
                         "registration reports the re-creation"));
  EXPECT_TRUE(Eventually([&] { return watcher.current()->version == 1; }, "watcher re-read the map"));
  EXPECT_EQ(watcher.current()->map.OwnerOf(0), "shard-1");

  // And it watches again on the new session.
  ASSERT_TRUE(cluster::AssignPartitions(*operator_client, "c", "1", "shard-1", cluster::kAnyVersion).ok());
  EXPECT_TRUE(Eventually([&] { return watcher.current()->version == 2; }, "watch re-armed on the new session"));
  EXPECT_EQ(seen.versions(), (std::vector<int32_t>{0, 1, 2}));
  shard_client->RemoveListener(&listener);
}

// ---------------------------------------------------------------------------
// The wallet-cluster tool, as operators run it.

TEST_F(ZooKeeperTest, WalletClusterToolBootstrapsShowsAndAssigns) {
  const std::string zk = "--zk=" + zookeeper_->connect_string();
  std::string output;
  ExitStatus status = RunTool({"bootstrap", zk, "--cluster=tool", "--shards=4", "--partitions=64"}, &output);
  EXPECT_TRUE(status.success()) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "created cluster 'tool'")) << output;

  status = RunTool({"bootstrap", zk, "--cluster=tool", "--shards=4", "--partitions=64"}, &output);
  EXPECT_TRUE(status.success()) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "nothing to do")) << output;

  status = RunTool({"bootstrap", zk, "--cluster=tool", "--shards=4", "--partitions=128"}, &output);
  EXPECT_EQ(status.code, 1) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "has 64 partitions; bootstrap asked for 128")) << output;

  status = RunTool({"bootstrap", zk, "--cluster=tool", "--shards=2", "--partitions=64"}, &output);
  EXPECT_EQ(status.code, 1) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "--reassign")) << output;

  // A live shard, so that `show` has one to list.
  std::unique_ptr<ZkClient> shard_client;
  ASSERT_NO_FATAL_FAILURE(Connect({&shard_client}));
  EphemeralNode registration(shard_client.get(), ClusterPaths("tool").shard("shard-1"), "127.0.0.1:7002");
  ASSERT_TRUE(registration.Register().ok());

  status = RunTool({"show", zk, "--cluster=tool"}, &output);
  EXPECT_TRUE(status.success()) << status.ToString() << "\n" << output;
  for (const char* expected : {"partition_count 64\n", "map_version 0\n", "  shard-0 0-15 (16 partitions) NOT LIVE\n",
                               "  shard-1 16-31 (16 partitions) live at 127.0.0.1:7002\n", "live shards (1)\n",
                               "live routers (0)\n"}) {
    EXPECT_TRUE(absl::StrContains(output, expected)) << "missing '" << expected << "' in:\n" << output;
  }

  status = RunTool({"assign", zk, "--cluster=tool", "--partitions=0-3", "--shard=shard-1"}, &output);
  EXPECT_TRUE(status.success()) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "moved 4 partitions (0-3) to shard-1: map version 0 -> 1")) << output;
  status = RunTool({"assign", zk, "--cluster=tool", "--partitions=4", "--shard=shard-1", "--expect_version=0"},
                   &output);
  EXPECT_EQ(status.code, 1) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "at version 1, not the expected 0")) << output;
  status = RunTool({"assign", zk, "--cluster=tool", "--partitions=99", "--shard=shard-1"}, &output);
  EXPECT_EQ(status.code, 1) << status.ToString() << "\n" << output;

  status = RunTool({"show", zk, "--cluster=tool"}, &output);
  EXPECT_TRUE(status.success()) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "map_version 1\n")) << output;
  EXPECT_TRUE(absl::StrContains(output, "  shard-0 4-15 (12 partitions)")) << output;
  EXPECT_TRUE(absl::StrContains(output, "  shard-1 0-3,16-31 (20 partitions)")) << output;

  status = RunTool({"show", zk, "--cluster=missing"}, &output);
  EXPECT_EQ(status.code, 1) << status.ToString() << "\n" << output;
  EXPECT_TRUE(absl::StrContains(output, "does not exist")) << output;
}

TEST_F(ZooKeeperTest, WalletClusterToolHelpAndUsageErrors) {
  std::string output;
  ExitStatus status = RunTool({"--help"}, &output);
  for (const char* flag : {"--zk", "--cluster", "--shards", "--partitions", "--reassign", "--shard",
                           "--expect_version", "--timeout_ms"}) {
    EXPECT_TRUE(absl::StrContains(output, flag)) << "--help lacks " << flag << ":\n" << output;
  }
  const std::string zk = "--zk=" + zookeeper_->connect_string();
  status = RunTool({"frobnicate", zk, "--cluster=c"}, &output);
  EXPECT_EQ(status.code, 2) << output;
  status = RunTool({"show", zk}, &output);  // no --cluster
  EXPECT_EQ(status.code, 2) << output;
  status = RunTool({"bootstrap", zk, "--cluster=c", "--shards=5", "--partitions=4"}, &output);
  EXPECT_EQ(status.code, 2) << output;
  status = RunTool({"assign", zk, "--cluster=c", "--partitions=1"}, &output);  // no --shard
  EXPECT_EQ(status.code, 2) << output;
}

}  // namespace
}  // namespace wallet::test
