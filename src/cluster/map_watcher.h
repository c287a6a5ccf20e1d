// map_watcher.h — follows a cluster's partition map in ZooKeeper and keeps the
// latest good copy in memory: what shards and routers consult on every request
// (current() is one mutex and a shared_ptr copy; ZooKeeper is never on that path).
//
// Start() reads the map and arms a watch on it. Each change fires the one-shot
// watch once; the watcher then reads the map again, which re-arms the watch and
// picks up every change made up to that read (so changes made between the event
// and the re-read are not lost; intermediate versions may be skipped). When the
// read gives a new map (another version, or a re-created znode), it replaces the
// cached one and the owner's callback runs with it.
//
// Faults:
//   - connection lost: the cached map keeps being served; ZooKeeper's own watch
//     re-registration covers the outage, and the watcher re-reads on reconnection
//     anyway (cheap, and it catches a re-arm that failed during the outage);
//   - session expired: the watch is gone; on kNewSession the watcher re-reads and
//     re-arms; the cache is kept meanwhile;
//   - map deleted or not created yet: the cache is kept and an exists-watch waits
//     for it; a map that does not parse, or that changes the partition count (fixed
//     for a cluster's life), is refused and logged, the cache is kept. last_status()
//     tells which.
//
// Example:
//   PartitionMapWatcher watcher(client.get(), "prod",
//       [&](std::shared_ptr<const VersionedPartitionMap> map) { owned = map->map.PartitionsOf(id); });
//   if (absl::Status status = watcher.Start(); !status.ok()) return status;
//   std::shared_ptr<const VersionedPartitionMap> map = watcher.current();
//
// The callback runs with each new map, in version order, on the thread that read
// it: Start()'s caller for the first map, the client's event thread afterwards. It
// must not block for long (other ZooKeeper events wait behind it) and must not
// destroy the watcher or the client. The destructor waits for a callback in
// progress, so do not destroy the watcher while holding a lock the callback takes.
// Ownership: borrows the client, which must outlive the watcher. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "cluster/layout.h"
#include "cluster/zk_client.h"

namespace wallet::cluster {

class PartitionMapWatcher : public ZkListener {
 public:
  using Callback = std::function<void(std::shared_ptr<const VersionedPartitionMap> map)>;

  // `cluster` must be a valid name (ValidateName). `on_change` may be empty.
  PartitionMapWatcher(ZkClient* client, std::string_view cluster, Callback on_change);
  ~PartitionMapWatcher() override;
  PartitionMapWatcher(const PartitionMapWatcher&) = delete;
  PartitionMapWatcher& operator=(const PartitionMapWatcher&) = delete;

  // Loads the map and starts following it. Fails when no valid map could be read
  // now (NotFound: no map yet; Unavailable; DataLoss: unparsable); the watcher
  // keeps following the map either way, so a later success still arrives through
  // the callback.
  absl::Status Start();

  // The latest good map, or null before the first one.
  std::shared_ptr<const VersionedPartitionMap> current() const;
  // The outcome of the latest read (OK when the cache matches ZooKeeper as of then).
  absl::Status last_status() const;
  // How many reads of the map succeeded (each re-arms the watch), for tests and
  // metrics.
  uint64_t reads() const;

  void OnSessionEvent(SessionEvent event) override;
  void OnNodeEvent(NodeEvent event, const std::string& path) override;

 private:
  // Reads the map with a watch and installs it if it is new. Holds reload_mutex_
  // throughout, so reloads (and callbacks) never overlap or reorder.
  absl::Status Reload();

  ZkClient* const client_;
  const ClusterPaths paths_;
  const std::string map_path_;
  const Callback on_change_;

  std::mutex reload_mutex_;
  mutable std::mutex mutex_;  // guards the fields below
  bool started_ = false;
  std::shared_ptr<const VersionedPartitionMap> current_;
  absl::Status last_status_ = absl::FailedPreconditionError("not started");
  uint64_t reads_ = 0;
};

}  // namespace wallet::cluster
