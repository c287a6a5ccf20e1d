// membership.h — a shard's place in a cluster: what it learns from ZooKeeper.
//
// With --zk, a shard joins its cluster: it reads the cluster's partition count
// (which must match the shard's own, if one was given), follows the partition map
// (cluster::PartitionMapWatcher) to learn which partitions it owns, and announces
// itself with an ephemeral node /wallet/<cluster>/shards/<shard_id> holding its
// RESP address. ZooKeeper stays off the data path: the map is cached, and a lost
// connection or an expired session only delays the next change (the shard keeps
// serving what the cached map says; the node is re-created on a new session).
//
// Each new map is handed to the shard's event loop (ShardServer::Post), which then
// changes the engine's owned partitions and the owners named in MOVED replies. A
// partition the map gives away is refused with MOVED from then on (its accounts stay
// in memory, untouched); a partition it gives this shard is served from what this
// shard holds — moving the accounts themselves is the rebalancing tools' job.
//
// Example:
//   auto membership = ShardMembership::Join({.zk = "127.0.0.1:2181", .cluster = "prod",
//                                            .shard_id = "shard-0"});
//   PartitionSet owned = (*membership)->owned();      // before recovery
//   ... ShardServer server(...);
//   (*membership)->Attach(&server);                   // map changes go to the loop
//   (*membership)->Register("127.0.0.1:7001");        // after Listen()
//   ... server.Run(); (*membership)->Attach(nullptr);
//
// Ownership: owns its ZooKeeper client, watcher and node. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "cluster/ephemeral_node.h"
#include "cluster/map_watcher.h"
#include "cluster/zk_client.h"
#include "common/partition.h"

namespace wallet::shard {

class ShardServer;

struct MembershipOptions {
  std::string zk;          // connect string, "host:port[,host:port...]"
  std::string cluster;     // cluster name
  std::string shard_id;    // this shard's id in the map
  uint32_t partition_count = 0;  // 0: take the cluster's
  int session_timeout_ms = 10'000;
  int connect_timeout_ms = 15'000;
};

class ShardMembership {
 public:
  // Connects, checks the partition count and loads the map (NotFound when the
  // cluster has no layout yet: run `wallet-cluster bootstrap` first).
  static absl::StatusOr<std::unique_ptr<ShardMembership>> Join(const MembershipOptions& options);
  ~ShardMembership();
  ShardMembership(const ShardMembership&) = delete;
  ShardMembership& operator=(const ShardMembership&) = delete;

  uint32_t partition_count() const { return partition_count_; }
  // The partitions the latest map gives this shard.
  PartitionSet owned() const;
  int32_t map_version() const;

  // From now on each new map is posted to `server`'s loop (null: stop). Also posts
  // the current map at once.
  void Attach(ShardServer* server);
  // Creates the ephemeral node announcing `address` ("host:port"), waiting up to
  // wait_ms for a previous run's session to release it (EphemeralNode::RegisterWaiting).
  absl::Status Register(const std::string& address, int64_t wait_ms);

 private:
  explicit ShardMembership(const MembershipOptions& options) : options_(options) {}
  void OnMap(std::shared_ptr<const cluster::VersionedPartitionMap> map);
  void PostLocked(const std::shared_ptr<const cluster::VersionedPartitionMap>& map);

  MembershipOptions options_;
  uint32_t partition_count_ = 0;
  std::unique_ptr<cluster::ZkClient> client_;
  std::unique_ptr<cluster::PartitionMapWatcher> watcher_;
  std::unique_ptr<cluster::EphemeralNode> node_;
  mutable std::mutex mutex_;  // guards the fields below
  ShardServer* server_ = nullptr;
  std::shared_ptr<const cluster::VersionedPartitionMap> latest_;
};

}  // namespace wallet::shard
