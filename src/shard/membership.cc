#include "shard/membership.h"

#include <utility>
#include <vector>

#include "cluster/layout.h"
#include "common/log.h"
#include "common/strings.h"
#include "shard/server.h"

namespace wallet::shard {

absl::StatusOr<std::unique_ptr<ShardMembership>> ShardMembership::Join(const MembershipOptions& options) {
  if (absl::Status status = cluster::ValidateName("cluster name", options.cluster); !status.ok()) return status;
  if (absl::Status status = cluster::ValidateName("shard id", options.shard_id); !status.ok()) return status;
  std::unique_ptr<ShardMembership> membership(new ShardMembership(options));
  cluster::ZkClientOptions client_options;
  client_options.connect_string = options.zk;
  client_options.session_timeout_ms = options.session_timeout_ms;
  client_options.connect_timeout_ms = options.connect_timeout_ms;
  absl::StatusOr<std::unique_ptr<cluster::ZkClient>> client = cluster::ZkClient::Connect(client_options);
  if (!client.ok()) return client.status();
  membership->client_ = std::move(*client);

  const cluster::ClusterPaths paths(options.cluster);
  absl::StatusOr<uint32_t> count = cluster::ReadPartitionCount(*membership->client_, paths);
  if (!count.ok()) return count.status();
  if (options.partition_count != 0 && options.partition_count != *count) {
    return absl::FailedPreconditionError(StrCat("cluster ", options.cluster, " has ", *count,
                                                " partitions; this shard was started with --partition_count=",
                                                options.partition_count));
  }
  membership->partition_count_ = *count;

  ShardMembership* self = membership.get();
  membership->watcher_ = std::make_unique<cluster::PartitionMapWatcher>(
      membership->client_.get(), options.cluster,
      [self](std::shared_ptr<const cluster::VersionedPartitionMap> map) { self->OnMap(std::move(map)); });
  if (absl::Status status = membership->watcher_->Start(); !status.ok()) return status;
  return membership;
}

ShardMembership::~ShardMembership() {
  Attach(nullptr);
  node_.reset();     // deletes our node at once
  watcher_.reset();  // before the client it listens to
  client_.reset();
}

PartitionSet ShardMembership::owned() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (latest_ == nullptr) return PartitionSet(partition_count_);
  return latest_->map.PartitionsOf(options_.shard_id);
}

int32_t ShardMembership::map_version() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return latest_ == nullptr ? -1 : latest_->version;
}

// The watcher's callback (Start()'s thread, then the ZooKeeper event thread):
// remembers the map and hands it to the attached server's loop.
void ShardMembership::OnMap(std::shared_ptr<const cluster::VersionedPartitionMap> map) {
  std::lock_guard<std::mutex> lock(mutex_);
  latest_ = std::move(map);
  LogInfo("partition map version %d: this shard (%s) owns %s", static_cast<int>(latest_->version),
          options_.shard_id.c_str(), latest_->map.PartitionsOf(options_.shard_id).ToString().c_str());
  PostLocked(latest_);
}

void ShardMembership::PostLocked(const std::shared_ptr<const cluster::VersionedPartitionMap>& map) {
  if (server_ == nullptr || map == nullptr) return;
  auto owners = std::make_shared<std::vector<std::string>>();
  owners->reserve(map->map.partition_count());
  for (uint32_t partition = 0; partition < map->map.partition_count(); ++partition) {
    owners->push_back(map->map.OwnerOf(partition));
  }
  ShardServer* server = server_;
  PartitionSet owned = map->map.PartitionsOf(options_.shard_id);
  server->Post([server, owned = std::move(owned), owners = std::move(owners)]() mutable {
    server->SetPartitionOwnership(std::move(owned), std::move(owners));
  });
}

void ShardMembership::Attach(ShardServer* server) {
  std::lock_guard<std::mutex> lock(mutex_);
  server_ = server;
  PostLocked(latest_);
}

absl::Status ShardMembership::Register(const std::string& address, int64_t wait_ms) {
  node_ = std::make_unique<cluster::EphemeralNode>(
      client_.get(), cluster::ClusterPaths(options_.cluster).shard(options_.shard_id), address);
  return node_->RegisterWaiting(wait_ms);
}

}  // namespace wallet::shard
