#include "router/cluster_view.h"

#include <chrono>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/strings.h"
#include "router/router.h"

namespace wallet::router {

namespace {

// The refresher reads the map at most this often, however many -MOVED replies ask.
constexpr auto kMinRefreshInterval = std::chrono::milliseconds(100);
// Loop timer that delivers what a refused Post could not.
constexpr int64_t kDeliveryPeriodMs = 1000;
// How often Register() looks whether a held router id has been freed.

bool Newer(const cluster::VersionedPartitionMap& candidate, const cluster::VersionedPartitionMap* current) {
  return current == nullptr || candidate.created_zxid > current->created_zxid ||
         (candidate.created_zxid == current->created_zxid && candidate.version > current->version);
}

std::string Describe(const std::map<std::string, std::string>& shards) {
  std::string text;
  for (const auto& [id, address] : shards) StrAppend(&text, text.empty() ? "" : ", ", id, "=", address);
  return text.empty() ? "none" : text;
}

}  // namespace

ClusterView::ClusterView(const ClusterViewOptions& options, EventLoop& loop, ClusterViewHandlers handlers)
    : options_(options),
      loop_(loop),
      paths_(options.cluster),
      shards_path_(paths_.shards()),
      mailbox_(std::make_shared<Mailbox>()) {
  mailbox_->handlers = std::move(handlers);
}

absl::StatusOr<std::unique_ptr<ClusterView>> ClusterView::Start(const ClusterViewOptions& options, EventLoop& loop,
                                                                ClusterViewHandlers handlers) {
  if (absl::Status status = cluster::ValidateName("cluster name", options.cluster); !status.ok()) return status;
  if (absl::Status status = cluster::ValidateName("router id", options.router_id); !status.ok()) return status;
  std::unique_ptr<ClusterView> view(new ClusterView(options, loop, std::move(handlers)));
  cluster::ZkClientOptions client_options;
  client_options.connect_string = options.zk;
  client_options.session_timeout_ms = options.session_timeout_ms;
  client_options.connect_timeout_ms = options.connect_timeout_ms;
  client_options.operation_timeout_ms = options.operation_timeout_ms;
  absl::StatusOr<std::unique_ptr<cluster::ZkClient>> client = cluster::ZkClient::Connect(client_options);
  if (!client.ok()) return client.status();
  view->client_ = std::move(*client);

  absl::StatusOr<uint32_t> count = cluster::ReadPartitionCount(*view->client_, view->paths_);
  if (!count.ok()) return count.status();
  view->partition_count_ = *count;

  ClusterView* self = view.get();
  view->watcher_ = std::make_unique<cluster::PartitionMapWatcher>(
      view->client_.get(), options.cluster,
      [self](std::shared_ptr<const cluster::VersionedPartitionMap> map) { self->OfferMap(std::move(map)); });
  if (absl::Status status = view->watcher_->Start(); !status.ok()) return status;
  std::shared_ptr<const cluster::VersionedPartitionMap> map = view->watcher_->current();
  if (map == nullptr || map->map.partition_count() != view->partition_count_) {
    return absl::FailedPreconditionError(StrCat("the partition map of cluster ", options.cluster, " does not cover its ",
                                                view->partition_count_, " partitions"));
  }

  view->client_->AddListener(self);
  view->listening_ = true;
  if (absl::Status status = view->ReloadShards(); !status.ok()) return status;
  view->refresher_ = std::thread([self] { self->RunRefresher(); });
  std::shared_ptr<Mailbox> mailbox = view->mailbox_;
  view->delivery_timer_ = loop.RunEvery(kDeliveryPeriodMs, [mailbox] { Deliver(mailbox); });
  return view;
}

ClusterView::~ClusterView() {
  {
    std::lock_guard<std::mutex> lock(refresh_mutex_);
    stopping_ = true;
  }
  refresh_wanted_changed_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  if (listening_) client_->RemoveListener(this);
  node_.reset();     // deletes /routers/<id> at once
  watcher_.reset();  // waits for a callback in progress
  {
    std::lock_guard<std::mutex> lock(mailbox_->mutex);
    mailbox_->closed = true;
  }
  loop_.CancelTimer(delivery_timer_);
  client_.reset();
}

absl::Status ClusterView::Register(const std::string& address, int64_t wait_ms) {
  if (absl::Status status = client_->EnsurePath(paths_.routers()); !status.ok()) {
    LogWarning("cannot make sure %s exists: %s", paths_.routers().c_str(), std::string(status.message()).c_str());
  }
  node_ = std::make_unique<cluster::EphemeralNode>(client_.get(), paths_.router(options_.router_id), address);
  return node_->RegisterWaiting(wait_ms);
}

// --- Hand-over to the loop ----------------------------------------------------------

void ClusterView::OfferMap(std::shared_ptr<const cluster::VersionedPartitionMap> map) {
  if (map == nullptr || map->map.partition_count() != partition_count_) return;
  {
    std::lock_guard<std::mutex> lock(mailbox_->mutex);
    if (!Newer(*map, mailbox_->map.get())) return;
    mailbox_->map = std::move(map);
  }
  ScheduleDelivery();
}

void ClusterView::ScheduleDelivery() {
  {
    std::lock_guard<std::mutex> lock(mailbox_->mutex);
    if (mailbox_->closed || mailbox_->task_posted) return;
    mailbox_->task_posted = true;
  }
  std::shared_ptr<Mailbox> mailbox = mailbox_;
  absl::Status posted = loop_.Post([mailbox] { Deliver(mailbox); });
  if (!posted.ok()) {
    // The loop's queue is full: the periodic delivery timer takes over.
    std::lock_guard<std::mutex> lock(mailbox_->mutex);
    mailbox_->task_posted = false;
  }
}

void ClusterView::DeliverNow() { Deliver(mailbox_); }

// Loop thread: live shards first (so the pool knows a new owner's address when the
// map that names it arrives), then the map.
void ClusterView::Deliver(const std::shared_ptr<Mailbox>& mailbox) {
  std::shared_ptr<const cluster::VersionedPartitionMap> map;
  std::map<std::string, std::string> shards;
  bool shards_changed = false;
  {
    std::lock_guard<std::mutex> lock(mailbox->mutex);
    if (mailbox->closed) return;
    mailbox->task_posted = false;
    map = mailbox->map;
    if (mailbox->shards_generation != mailbox->delivered_shards_generation) {
      shards = mailbox->shards;
      shards_changed = true;
      mailbox->delivered_shards_generation = mailbox->shards_generation;
    }
  }
  // The handlers and delivered_map are touched on the loop thread only.
  if (shards_changed && mailbox->handlers.on_live_shards) mailbox->handlers.on_live_shards(shards);
  if (map != nullptr && map != mailbox->delivered_map) {
    mailbox->delivered_map = map;
    if (mailbox->handlers.on_map) mailbox->handlers.on_map(std::move(map));
  }
}

// --- ZooKeeper side -----------------------------------------------------------------

absl::Status ClusterView::ReloadShards() {
  std::lock_guard<std::mutex> reload(reload_shards_mutex_);
  ++shard_reloads_;
  absl::StatusOr<std::vector<std::string>> children = client_->GetChildren(shards_path_, cluster::Watch::kArm);
  if (absl::IsNotFound(children.status())) {
    // No /shards yet: wait for its creation. An empty list is the truth then.
    (void)client_->Exists(shards_path_, cluster::Watch::kArm);
    children = std::vector<std::string>();
  }
  if (!children.ok()) {
    LogWarning("cannot list live shards under %s: %s; keeping the last list", shards_path_.c_str(),
               std::string(children.status().message()).c_str());
    return children.status();
  }
  std::map<std::string, std::string> live;
  for (const std::string& child : *children) {
    absl::StatusOr<cluster::NodeData> node = client_->Get(StrCat(shards_path_, "/", child), cluster::Watch::kArm);
    if (absl::IsNotFound(node.status())) continue;  // left between the listing and the read
    if (!node.ok()) {
      LogWarning("cannot read live shard %s: %s; keeping the last list", child.c_str(),
                 std::string(node.status().message()).c_str());
      return node.status();
    }
    live.emplace(child, node->data);
  }
  {
    std::lock_guard<std::mutex> lock(mailbox_->mutex);
    if (live == mailbox_->shards && mailbox_->shards_generation != 0) return absl::OkStatus();
    mailbox_->shards = live;
    ++mailbox_->shards_generation;
  }
  LogInfo("live shards: %s", Describe(live).c_str());
  ScheduleDelivery();
  return absl::OkStatus();
}

void ClusterView::OnSessionEvent(cluster::SessionEvent event) {
  // Disconnected / expired: keep what we have. Connected again (watches may have
  // missed changes) or on a new session (watches gone): read again, re-arming.
  if (event == cluster::SessionEvent::kConnected || event == cluster::SessionEvent::kNewSession) {
    (void)ReloadShards();
  }
}

void ClusterView::OnNodeEvent(cluster::NodeEvent /*event*/, const std::string& path) {
  if (path == shards_path_ || (path.size() > shards_path_.size() && path.compare(0, shards_path_.size(), shards_path_) == 0 &&
                               path[shards_path_.size()] == '/')) {
    (void)ReloadShards();
  }
}

void ClusterView::RequestMapRefresh() {
  {
    std::lock_guard<std::mutex> lock(refresh_mutex_);
    refresh_wanted_ = true;
  }
  refresh_wanted_changed_.notify_one();
}

void ClusterView::RunRefresher() {
  bool last_failed = false;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(refresh_mutex_);
      refresh_wanted_changed_.wait(lock, [&] { return refresh_wanted_ || stopping_; });
      if (stopping_) return;
      refresh_wanted_ = false;
    }
    absl::StatusOr<cluster::VersionedPartitionMap> map =
        cluster::ReadPartitionMap(*client_, paths_, cluster::Watch::kNone);
    ++refresh_reads_;
    if (map.ok()) {
      last_failed = false;
      OfferMap(std::make_shared<const cluster::VersionedPartitionMap>(*std::move(map)));
    } else if (!last_failed) {
      last_failed = true;
      LogWarning("re-reading the partition map after MOVED failed: %s; routing by the cached map",
                 std::string(map.status().message()).c_str());
    }
    std::unique_lock<std::mutex> lock(refresh_mutex_);
    refresh_wanted_changed_.wait_for(lock, kMinRefreshInterval, [&] { return stopping_; });
    if (stopping_) return;
  }
}

void ClusterView::AppendInfo(std::string_view section, std::string* out) const {
  if (!InfoSectionWanted(section, "zookeeper")) return;
  const absl::Status map_status = watcher_->last_status();
  StrAppend(out, "# ZooKeeper\r\n", "zookeeper_connect:", options_.zk, "\r\n", "cluster:", options_.cluster, "\r\n",
            "zookeeper_state:", cluster::ConnectionStateName(client_->state()), "\r\n",
            "zookeeper_sessions_opened:", client_->sessions_opened(), "\r\n",
            "map_watch_status:", map_status.ok() ? std::string("ok") : std::string(map_status.message()), "\r\n",
            "map_watch_reads:", watcher_->reads(), "\r\n", "map_refresh_reads:", refresh_reads_.load(), "\r\n",
            "shard_list_reads:", shard_reloads_.load(), "\r\n",
            "router_node:", paths_.router(options_.router_id), "\r\n",
            "router_node_registered:", node_ != nullptr && node_->registered() ? 1 : 0, "\r\n", "\r\n");
}

}  // namespace wallet::router
