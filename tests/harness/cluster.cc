#include "harness/cluster.h"

#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cluster/layout.h"
#include "common/partition.h"

namespace wallet::test {

using namespace std::chrono_literals;

bool Eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

std::string ReplyText(const redisReply* reply) {
  switch (reply->type) {
    case REDIS_REPLY_STATUS:
      return absl::StrCat("+", std::string(reply->str, reply->len));
    case REDIS_REPLY_ERROR:
      return absl::StrCat("-", std::string(reply->str, reply->len));
    case REDIS_REPLY_INTEGER:
      return absl::StrCat(":", reply->integer);
    case REDIS_REPLY_STRING:
      return std::string(reply->str, reply->len);
    case REDIS_REPLY_ARRAY: {
      std::string text = "[";
      for (size_t i = 0; i < reply->elements; ++i) {
        absl::StrAppend(&text, i == 0 ? "" : ", ", ReplyText(reply->element[i]));
      }
      return text + "]";
    }
    default:
      return "(nil)";
  }
}

std::string Word(const std::string& reply) {
  std::string_view text = reply;
  if (!text.empty() && (text[0] == '+' || text[0] == '-')) text.remove_prefix(1);
  return std::string(text.substr(0, text.find(' ')));
}

// --- RespClient ------------------------------------------------------------------

RespClient::~RespClient() {
  if (context_ != nullptr) redisFree(context_);
}

std::string RespClient::Call(const Args& args) {
  std::string sent = Send(args);
  return sent.empty() ? Receive() : sent;
}

std::string RespClient::Send(const Args& args) {
  if (context_ == nullptr) {
    struct timeval timeout = {10, 0};
    context_ = redisConnectWithTimeout("127.0.0.1", port_, timeout);
    if (context_ == nullptr || context_->err) return Lost();
    redisSetTimeout(context_, timeout);
  }
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const std::string& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data());
  int done = 0;
  while (!done) {
    if (redisBufferWrite(context_, &done) != REDIS_OK) return Lost();
  }
  return "";
}

std::string RespClient::Receive() {
  void* raw = nullptr;
  if (context_ == nullptr || redisGetReply(context_, &raw) != REDIS_OK || raw == nullptr) return Lost();
  auto* reply = static_cast<redisReply*>(raw);
  std::string text = ReplyText(reply);
  freeReplyObject(reply);
  return text;
}

std::string RespClient::Lost() {
  std::string why = context_ != nullptr ? context_->errstr : "no context";
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
  return "!lost: " + why;
}

std::string CallOnce(uint16_t port, const Args& args) { return RespClient(port).Call(args); }

std::string InfoField(const std::string& info, const std::string& field) {
  for (absl::string_view line : absl::StrSplit(info, "\r\n")) {
    if (absl::StartsWith(line, field + ":")) return std::string(line.substr(field.size() + 1));
  }
  return "";
}

uint64_t InfoNumber(const std::string& info, const std::string& field) {
  uint64_t value = 0;
  return absl::SimpleAtoi(InfoField(info, field), &value) ? value : 0;
}

// --- ClusterTest -------------------------------------------------------------------

void ClusterTest::SetUp() {
  absl::StatusOr<std::unique_ptr<ZooKeeperServer>> server = ZooKeeperServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  zookeeper_ = std::move(*server);
  absl::StatusOr<TempDir> dir = TempDir::Create("cluster");
  ASSERT_TRUE(dir.ok()) << dir.status();
  dir_.emplace(std::move(*dir));
  ASSERT_NO_FATAL_FAILURE(ConnectAdmin());
  absl::StatusOr<cluster::BootstrapResult> result =
      cluster::Bootstrap(*admin_, kCluster, shard_count_, partitions_, cluster::ShardCountChange::kRefuse);
  ASSERT_TRUE(result.ok()) << result.status();
}

void ClusterTest::TearDown() {
  routers_.clear();  // each stops by pid
  shards_.clear();
  admin_.reset();
}

void ClusterTest::ConnectAdmin() {
  cluster::ZkClientOptions options;
  options.connect_string = zookeeper_->connect_string();
  options.session_timeout_ms = 6'000;
  absl::StatusOr<std::unique_ptr<cluster::ZkClient>> client = cluster::ZkClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  admin_ = std::move(*client);
}

Args ClusterTest::ShardFlags(const std::string& id, const Args& extra) const {
  Args flags = {"--zk=" + zookeeper_->connect_string(), absl::StrCat("--cluster=", kCluster), "--shard_id=" + id,
                "--data_dir=" + dir_->File(id), "--zk_session_timeout_ms=4000"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return flags;
}

ServerProcess* ClusterTest::StartShard(const std::string& id, const Args& extra) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> shard =
      ServerProcess::Start(*dir_, absl::StrCat(id, "-", ++starts_), WalletShardBinary(), ShardFlags(id, extra));
  EXPECT_TRUE(shard.ok()) << shard.status();
  if (!shard.ok()) return nullptr;
  shards_[id] = std::move(*shard);
  return shards_[id].get();
}

void ClusterTest::StartAllShards(const Args& extra) {
  for (int i = 0; i < shard_count_; ++i) ASSERT_NE(StartShard(cluster::ShardIdFor(i), extra), nullptr);
}

ServerProcess* ClusterTest::StartRouterProcess(const std::string& id, const Args& extra) {
  EXPECT_FALSE(WalletRouterBinary().empty());
  Args flags = {"--zk=" + zookeeper_->connect_string(), absl::StrCat("--cluster=", kCluster), "--router_id=" + id,
                "--zk_session_timeout_ms=4000", "--command_timeout_ms=1000", "--connect_timeout_ms=500"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  absl::StatusOr<std::unique_ptr<ServerProcess>> router =
      ServerProcess::Start(*dir_, absl::StrCat(id, "-", ++starts_), WalletRouterBinary(), flags);
  EXPECT_TRUE(router.ok()) << router.status();
  if (!router.ok()) return nullptr;
  routers_[id] = std::move(*router);
  return routers_[id].get();
}

std::string ClusterTest::Registered(const std::string& path) {
  absl::StatusOr<cluster::NodeData> node = admin_->Get(path, cluster::Watch::kNone);
  return node.ok() ? node->data : "";
}

std::vector<uint64_t> ClusterTest::AccountsOn(const std::string& shard_id, size_t count, uint64_t start) {
  absl::StatusOr<cluster::VersionedPartitionMap> map =
      cluster::ReadPartitionMap(*admin_, cluster::ClusterPaths(kCluster), cluster::Watch::kNone);
  EXPECT_TRUE(map.ok()) << map.status();
  std::vector<uint64_t> accounts;
  for (uint64_t account = start; map.ok() && accounts.size() < count; ++account) {
    if (map->map.OwnerOf(PartitionOf(account, partitions_)) == shard_id) accounts.push_back(account);
  }
  return accounts;
}

}  // namespace wallet::test
