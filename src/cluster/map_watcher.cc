#include "cluster/map_watcher.h"

#include <optional>
#include <utility>

#include "common/log.h"
#include "common/strings.h"

namespace wallet::cluster {

namespace {

// Rounds of get → exists when the map is being created or deleted just then.
constexpr int kReadRounds = 3;

}  // namespace

PartitionMapWatcher::PartitionMapWatcher(ZkClient* client, std::string_view cluster, Callback on_change)
    : client_(client), paths_(cluster), map_path_(paths_.map()), on_change_(std::move(on_change)) {}

PartitionMapWatcher::~PartitionMapWatcher() { client_->RemoveListener(this); }

absl::Status PartitionMapWatcher::Start() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    started_ = true;
  }
  client_->AddListener(this);
  return Reload();
}

std::shared_ptr<const VersionedPartitionMap> PartitionMapWatcher::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

absl::Status PartitionMapWatcher::last_status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_status_;
}

uint64_t PartitionMapWatcher::reads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reads_;
}

absl::Status PartitionMapWatcher::Reload() {
  std::lock_guard<std::mutex> reload(reload_mutex_);
  std::shared_ptr<const VersionedPartitionMap> cached = current();
  absl::StatusOr<VersionedPartitionMap> loaded = absl::UnavailableError("not read");
  for (int round = 0; round < kReadRounds; ++round) {
    loaded = ReadPartitionMap(*client_, paths_, Watch::kArm);
    if (!absl::IsNotFound(loaded.status())) break;
    // No map (yet, or any more): wait for its creation with an exists-watch. If
    // it appeared between the two calls, read again.
    absl::StatusOr<std::optional<NodeStat>> exists = client_->Exists(map_path_, Watch::kArm);
    if (!exists.ok()) {
      loaded = exists.status();
      break;
    }
    if (!exists->has_value()) {
      loaded = absl::NotFoundError(StrCat("no partition map at ", map_path_, " (yet); waiting for it"));
      break;
    }
  }
  absl::Status status = loaded.status();
  if (status.ok() && cached != nullptr && loaded->map.partition_count() != cached->map.partition_count()) {
    status = absl::FailedPreconditionError(
        StrCat(map_path_, " now covers ", loaded->map.partition_count(), " partitions instead of ",
               cached->map.partition_count(), "; refused (the partition count is fixed for a cluster's life)"));
  }
  std::shared_ptr<const VersionedPartitionMap> installed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    last_status_ = status;
    if (loaded.ok()) ++reads_;
    // Newer: a later version of the same znode, or a znode created later. (A
    // server behind the one read before may answer after a new session; its
    // older map is not installed.)
    bool newer = status.ok() && (cached == nullptr || loaded->created_zxid > cached->created_zxid ||
                                 (loaded->created_zxid == cached->created_zxid && loaded->version > cached->version));
    if (newer) {
      current_ = std::make_shared<const VersionedPartitionMap>(std::move(*loaded));
      installed = current_;
    }
  }
  if (!status.ok()) {
    LogWarning("partition map %s: %s%s", map_path_.c_str(), std::string(status.message()).c_str(),
               cached != nullptr ? StrCat("; still serving version ", cached->version).c_str() : "");
  } else if (installed != nullptr) {
    LogInfo("partition map %s: version %d (%zu shards)", map_path_.c_str(), installed->version,
            installed->map.ShardIds().size());
    if (on_change_) on_change_(installed);
  }
  return status;
}

void PartitionMapWatcher::OnSessionEvent(SessionEvent event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_) return;
  }
  // kDisconnected / kExpired: keep serving the cache; read again once connected.
  // Reload() logs its failures and records them in last_status().
  if (event == SessionEvent::kConnected || event == SessionEvent::kNewSession) (void)Reload();
}

void PartitionMapWatcher::OnNodeEvent(NodeEvent /*event*/, const std::string& path) {
  if (path != map_path_) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_) return;
  }
  (void)Reload();
}

}  // namespace wallet::cluster
