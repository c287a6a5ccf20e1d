// cluster_view.h — what a router knows of its cluster from ZooKeeper, handed to the
// router's event loop: the partition map and the live shards' addresses. Also
// announces the router itself (/wallet/<cluster>/routers/<router_id>).
//
// Start() connects (cluster::ZkClient), reads the partition count, loads the map
// and starts following it (cluster::PartitionMapWatcher), and reads the children of
// /shards with a watch (and each child's "host:port" with a data watch). Every
// change is read again on the ZooKeeper event thread, which re-arms the one-shot
// watches; a reconnection or a new session (after expiry) reads everything again.
// Nothing blocks the loop: results go into a mailbox and a task posted to the loop
// (EventLoop::Post) hands the newest ones to the handlers; should the loop's queue
// refuse the task, a 1 s timer on the loop picks them up instead.
//
// ZooKeeper away (connection lost, session expired, server down): the handlers are
// simply not called; the router keeps routing by what it has.
//
// RequestMapRefresh() (loop thread, after a -MOVED) wakes a refresher thread that
// re-reads the map (without arming a watch; the watcher's own watch stays armed)
// and hands it over if it is newer. Requests made while a read runs fold into one.
//
// Example:
//   ClusterViewHandlers handlers;
//   handlers.on_map = [&](auto map) { core.SetPartitionMap(std::move(map)); };
//   handlers.on_live_shards = [&](const auto& live) { core.SetLiveShards(live); };
//   auto view = ClusterView::Start(options, *loop, std::move(handlers));
//   if (!view.ok()) return view.status();
//   core.SetMapRefresher([v = view->get()] { v->RequestMapRefresh(); });
//   (*view)->Register("127.0.0.1:7100", /*wait_ms=*/10'000);
//
// Threading: handlers run on the loop thread only. RequestMapRefresh, AppendInfo and
// the accessors may be called from any thread. Ownership: owns its ZooKeeper client,
// watcher, router node and refresher thread; borrows the loop, which must outlive
// it. Destroy it while the loop is not running (or on the loop thread): tasks it
// posted and that have not run yet do nothing afterwards.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cluster/ephemeral_node.h"
#include "cluster/layout.h"
#include "cluster/map_watcher.h"
#include "cluster/zk_client.h"
#include "common/event_loop.h"

namespace wallet::router {

struct ClusterViewOptions {
  std::string zk;         // connect string, "host:port[,host:port...]"
  std::string cluster;    // cluster name
  std::string router_id;  // this router's id under /routers
  int session_timeout_ms = 10'000;
  int connect_timeout_ms = 15'000;
  // One ZooKeeper read or write (map re-read, shard list, router node). Also bounds
  // how long a stop waits for a read in progress while ZooKeeper is away.
  int operation_timeout_ms = 5'000;
};

// Called on the loop thread with the newest state (each at least once per change;
// the map only when newer than the last one handed over).
struct ClusterViewHandlers {
  std::function<void(std::shared_ptr<const cluster::VersionedPartitionMap> map)> on_map;
  std::function<void(const std::map<std::string, std::string>& live_shards)> on_live_shards;
};

class ClusterView : public cluster::ZkListener {
 public:
  // Connects, reads the partition count, the map and the live shards. The first
  // map and shard list are in the mailbox on return; they reach the handlers when
  // the loop runs (or at once with DeliverNow()). Fails (and leaves nothing running)
  // with Unavailable when ZooKeeper cannot be reached, NotFound when the cluster has
  // no layout or map (run `wallet-cluster bootstrap`), DataLoss for a map that does
  // not parse, InvalidArgument for a bad cluster name or router id.
  static absl::StatusOr<std::unique_ptr<ClusterView>> Start(const ClusterViewOptions& options, EventLoop& loop,
                                                            ClusterViewHandlers handlers);
  // Stops the refresher, stops listening, deletes the router's node (other
  // routers and tools see it leave at once) and closes the session.
  ~ClusterView() override;
  ClusterView(const ClusterView&) = delete;
  ClusterView& operator=(const ClusterView&) = delete;

  // Creates the ephemeral node /routers/<router_id> holding `address`. When another
  // live session holds that id (a previous run killed without a clean stop, whose
  // session has not yet timed out), waits up to `wait_ms` for it to go and takes it
  // over; AlreadyExists if it is still held then (two routers with one id).
  // Unavailable (ZooKeeper unreachable) is not fatal: the node is created once it is
  // reachable again.
  absl::Status Register(const std::string& address, int64_t wait_ms);

  // Hands the mailbox's newest state to the handlers now (loop thread, or any one
  // thread while the loop is not running).
  void DeliverNow();

  // Asks the refresher thread to re-read the map. Never blocks; any thread.
  void RequestMapRefresh();

  uint32_t partition_count() const { return partition_count_; }
  cluster::ConnectionState zookeeper_state() const { return client_->state(); }
  // Appends the "# ZooKeeper" INFO section when `section` asks for it.
  void AppendInfo(std::string_view section, std::string* out) const;

  void OnSessionEvent(cluster::SessionEvent event) override;
  void OnNodeEvent(cluster::NodeEvent event, const std::string& path) override;

 private:
  // What the ZooKeeper threads leave for the loop; shared with posted tasks so that
  // a task that runs after the view is gone finds `closed` and does nothing.
  struct Mailbox {
    std::mutex mutex;
    bool closed = false;
    bool task_posted = false;
    std::shared_ptr<const cluster::VersionedPartitionMap> map;  // newest read
    uint64_t shards_generation = 0;                              // +1 per changed list
    std::map<std::string, std::string> shards;
    // What the handlers have been given (loop thread only).
    std::shared_ptr<const cluster::VersionedPartitionMap> delivered_map;
    uint64_t delivered_shards_generation = 0;
    ClusterViewHandlers handlers;
  };

  ClusterView(const ClusterViewOptions& options, EventLoop& loop, ClusterViewHandlers handlers);
  // Puts a map in the mailbox if it is newer than the one there; schedules delivery.
  void OfferMap(std::shared_ptr<const cluster::VersionedPartitionMap> map);
  // Reads /shards (children and data, arming watches) into the mailbox.
  absl::Status ReloadShards();
  // Posts a delivery task unless one is pending.
  void ScheduleDelivery();
  static void Deliver(const std::shared_ptr<Mailbox>& mailbox);
  void RunRefresher();

  const ClusterViewOptions options_;
  EventLoop& loop_;
  const cluster::ClusterPaths paths_;
  const std::string shards_path_;
  std::shared_ptr<Mailbox> mailbox_;
  uint32_t partition_count_ = 0;

  std::unique_ptr<cluster::ZkClient> client_;
  std::unique_ptr<cluster::PartitionMapWatcher> watcher_;
  std::unique_ptr<cluster::EphemeralNode> node_;
  EventLoop::TimerId delivery_timer_ = 0;

  std::mutex reload_shards_mutex_;  // one shard reload at a time
  std::atomic<bool> listening_{false};

  // The refresher thread and its one-slot request queue.
  std::mutex refresh_mutex_;
  std::condition_variable refresh_wanted_changed_;
  bool refresh_wanted_ = false;  // guarded by refresh_mutex_
  bool stopping_ = false;        // guarded by refresh_mutex_
  std::atomic<uint64_t> refresh_reads_{0};
  std::atomic<uint64_t> shard_reloads_{0};
  std::thread refresher_;
};

}  // namespace wallet::router
