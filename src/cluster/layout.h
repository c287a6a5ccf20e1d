// layout.h — a wallet cluster's layout in ZooKeeper, the partition map's text
// form, and the operations on them (bootstrap, assign, read for `show`).
//
// Layout (docs/zookeeper-layout.md is the reference), one root per cluster:
//
//   /wallet/<cluster>                   persistent, empty
//   /wallet/<cluster>/partition_count   persistent: decimal P ("1024"), fixed for life
//   /wallet/<cluster>/map               persistent: the partition map (grammar below);
//                                       its znode version is the map version
//   /wallet/<cluster>/shards/<shard_id> ephemeral: "host:port" of a live shard
//   /wallet/<cluster>/routers/<id>      ephemeral: "host:port" of a live router
//
// Names (cluster, shard id, router id): 1-64 characters of [A-Za-z0-9_-].
// Bootstrap names shards "shard-0" ... "shard-<N-1>".
//
// The map's text form, version 1 (every line ends with LF; nothing else is
// accepted: no CR, tabs, blank lines or extra spaces):
//
//   map        = header count *assignment
//   header     = "wallet-partition-map 1" LF
//   count      = "partition_count " number LF        ; equal to /partition_count
//   assignment = shard-id " " ranges LF              ; one line per shard
//   ranges     = range *("," range) / "all"
//   range      = number / number "-" number          ; inclusive, first <= last
//
// Every partition in [0, P) is assigned exactly once; a shard that owns nothing
// has no line. Format() writes lines ordered by each shard's first partition and
// ranges in the compact form of PartitionSet::ToString(), e.g.
//
//   wallet-partition-map 1
//   partition_count 1024
//   shard-0 0-255
//   shard-1 256-511
//   shard-2 512-767
//   shard-3 768-1023
//
// Why text and not JSON: it reads well in `zkCli.sh get`, its ranges are the
// syntax the shard's --partitions flag and PartitionSet already use, the grammar is
// small enough to check completely (no duplicate keys, number types or nesting to
// decide about), and wallet_cluster needs no JSON library.
//
// Example:
//   absl::StatusOr<BootstrapResult> result =
//       Bootstrap(*client, "prod", /*shard_count=*/4, /*partition_count=*/1024,
//                 ShardCountChange::kRefuse);
//   absl::StatusOr<VersionedPartitionMap> map = ReadPartitionMap(*client, ClusterPaths("prod"), Watch::kNone);
//   std::string_view owner = map->map.OwnerOf(PartitionOf(account, map->map.partition_count()));
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cluster/zk_client.h"
#include "common/partition.h"

namespace wallet::cluster {

inline constexpr char kLayoutRoot[] = "/wallet";
inline constexpr size_t kMaxNameLength = 64;
// ZooKeeper refuses znodes above 1 MiB (jute.maxbuffer); so does the map parser.
inline constexpr size_t kMaxMapBytes = 1u << 20;
inline constexpr char kMapHeader[] = "wallet-partition-map 1";

// OK when `name` is 1-64 characters of [A-Za-z0-9_-]; else InvalidArgument naming
// `what` ("cluster name", "shard id", ...).
absl::Status ValidateName(std::string_view what, std::string_view name);

// "shard-<index>": the shard ids Bootstrap creates.
std::string ShardIdFor(uint32_t index);

// The znode paths of one cluster. The cluster name must be valid (ValidateName).
class ClusterPaths {
 public:
  explicit ClusterPaths(std::string_view cluster);
  const std::string& cluster() const { return cluster_; }
  const std::string& root() const { return root_; }
  std::string partition_count() const { return root_ + "/partition_count"; }
  std::string map() const { return root_ + "/map"; }
  std::string shards() const { return root_ + "/shards"; }
  std::string shard(std::string_view shard_id) const;
  std::string routers() const { return root_ + "/routers"; }
  std::string router(std::string_view router_id) const;

 private:
  std::string cluster_;
  std::string root_;
};

// Partition → shard assignment. Always complete: every partition has one owner.
class PartitionMap {
 public:
  // An empty map (partition_count() == 0), as held before the first map is read.
  PartitionMap() = default;

  // Contiguous, even ranges: shard i of N owns [i*P/N, (i+1)*P/N). Needs
  // 1 <= N <= P <= kMaxPartitionCount and valid, distinct ids.
  static absl::StatusOr<PartitionMap> Even(uint32_t partition_count, const std::vector<std::string>& shard_ids);
  // Parses the text form (see the grammar above); InvalidArgument naming the line
  // and the problem.
  static absl::StatusOr<PartitionMap> Parse(std::string_view text);
  // The text form; Parse(Format()) gives back an equal map.
  std::string Format() const;

  uint32_t partition_count() const { return static_cast<uint32_t>(owner_.size()); }
  // The shard owning `partition` (< partition_count()).
  const std::string& OwnerOf(uint32_t partition) const { return shard_ids_[owner_[partition]]; }
  // The partitions `shard_id` owns (empty when it owns none).
  PartitionSet PartitionsOf(std::string_view shard_id) const;
  // The shards that own at least one partition, ordered by their first partition.
  std::vector<std::string> ShardIds() const;

  // Gives `partitions` (same partition count) to `shard_id`, which may be new;
  // shards left with nothing drop out of the map. Returns how many partitions
  // changed owner.
  absl::StatusOr<uint32_t> Assign(const PartitionSet& partitions, std::string_view shard_id);

  bool operator==(const PartitionMap& other) const;

 private:
  // Index of shard_id in shard_ids_, adding it when missing.
  uint32_t ShardIndex(std::string_view shard_id);

  std::vector<std::string> shard_ids_;  // may hold ids that own nothing (after Assign)
  std::vector<uint32_t> owner_;         // partition → index in shard_ids_
};

// A map as read from ZooKeeper, with the identity of its znode.
struct VersionedPartitionMap {
  PartitionMap map;
  int32_t version = 0;       // the map znode's data version: +1 per change
  int64_t created_zxid = 0;  // changes only if the znode was deleted and re-created
};

// Reads and parses the map; Watch::kArm arms a data watch on it. NotFound when
// the cluster has no map; DataLoss when its text does not parse (someone wrote it
// by hand): callers keep what they had and report it.
absl::StatusOr<VersionedPartitionMap> ReadPartitionMap(ZkClient& client, const ClusterPaths& paths, Watch watch);
// Reads /partition_count; NotFound when missing, DataLoss when malformed.
absl::StatusOr<uint32_t> ReadPartitionCount(ZkClient& client, const ClusterPaths& paths);

// What Bootstrap does when the cluster's map assigns partitions to other shards
// than the shard count asked for.
enum class ShardCountChange {
  kRefuse,          // FailedPrecondition naming both (the default: never move data silently)
  kReassignEvenly,  // replace the map with an even assignment over the asked shards
};

struct BootstrapResult {
  enum class Outcome { kCreated, kUnchanged, kReassigned };
  Outcome outcome = Outcome::kUnchanged;
  int32_t map_version = 0;
  std::string summary;  // one line for operators: what was done
};

// Creates cluster `cluster` with `partition_count` partitions evenly assigned to
// shard-0 ... shard-<shard_count-1>. Idempotent: on an existing cluster with the
// same partition count and the same set of shards it changes nothing (not even
// assignments moved since by `assign`) and succeeds. Refuses (FailedPrecondition,
// naming old and new) another partition count, and another set of shards unless
// `on_change` is kReassignEvenly. A new cluster's nodes are created in one
// transaction, so a cluster never exists half-made; missing pieces of one made by
// hand are added. Called by `wallet-cluster bootstrap` and deploy scripts.
absl::StatusOr<BootstrapResult> Bootstrap(ZkClient& client, std::string_view cluster, uint32_t shard_count,
                                          uint32_t partition_count, ShardCountChange on_change);

struct AssignResult {
  int32_t old_version = 0;
  int32_t new_version = 0;  // == old_version when nothing moved (nothing written)
  uint32_t moved = 0;       // partitions that changed owner
  PartitionMap map;         // the map now in ZooKeeper
};

// Gives the partitions in `ranges` (PartitionSet syntax: "0-99,512") to
// `shard_id`, writing the map with a version check. With expected_version set,
// FailedPrecondition unless the map is at that version; with kAnyVersion it
// re-reads and retries (a few times) when another writer got in between. Called
// by `wallet-cluster assign` and, later, the rebalance script.
absl::StatusOr<AssignResult> AssignPartitions(ZkClient& client, std::string_view cluster, std::string_view ranges,
                                              std::string_view shard_id, int32_t expected_version);

// Everything `wallet-cluster show` prints.
struct LayoutSnapshot {
  std::string cluster;
  uint32_t partition_count = 0;
  VersionedPartitionMap map;
  std::vector<std::pair<std::string, std::string>> shards;   // live: (id, address), sorted
  std::vector<std::pair<std::string, std::string>> routers;  // live: (id, address), sorted
};

// Reads the whole layout (one consistent-enough look: each node read once).
absl::StatusOr<LayoutSnapshot> ReadLayout(ZkClient& client, std::string_view cluster);
// Human-readable, one fact per line (see docs/zookeeper-layout.md for a sample).
std::string FormatLayout(const LayoutSnapshot& layout);

}  // namespace wallet::cluster
