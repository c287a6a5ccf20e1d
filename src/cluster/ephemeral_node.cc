#include "cluster/ephemeral_node.h"

#include <chrono>
#include <optional>
#include <thread>
#include <utility>

#include "common/log.h"
#include "common/strings.h"

namespace wallet::cluster {

namespace {

// Rounds of create → exists when the node keeps appearing and vanishing between
// the two calls (another owner leaving just then); the watch covers the rest.
constexpr int kAttemptRounds = 3;

}  // namespace

EphemeralNode::EphemeralNode(ZkClient* client, std::string path, std::string data)
    : client_(client), path_(std::move(path)), data_(std::move(data)) {}

EphemeralNode::~EphemeralNode() {
  client_->RemoveListener(this);
  std::lock_guard<std::mutex> attempt(attempt_mutex_);
  if (!registered()) return;
  // Delete only our own node: the session check and the delete are two calls, but
  // another session can only create the node after ours is gone.
  absl::StatusOr<std::optional<NodeStat>> stat = client_->Exists(path_, Watch::kNone);
  if (stat.ok() && stat->has_value() && (*stat)->ephemeral_owner == client_->session().session_id) {
    absl::Status status = client_->Delete(path_, (*stat)->version);
    if (!status.ok() && !absl::IsNotFound(status)) {
      LogWarning("could not delete %s (the session's end removes it): %s", path_.c_str(),
                 std::string(status.message()).c_str());
    }
  }
}

absl::Status EphemeralNode::Register() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    started_ = true;
  }
  client_->AddListener(this);
  Attempt();
  return last_status();
}

bool EphemeralNode::registered() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return registered_;
}

uint64_t EphemeralNode::creations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return creations_;
}

absl::Status EphemeralNode::last_status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_status_;
}

void EphemeralNode::Attempt() {
  std::lock_guard<std::mutex> attempt(attempt_mutex_);
  absl::Status status;
  bool created = false;
  for (int round = 0; round < kAttemptRounds; ++round) {
    status = client_->Create(path_, data_, CreateMode::kEphemeral);
    if (status.ok()) {
      created = true;
      // Watch it, to re-create it if it is deleted while our session lives.
      absl::StatusOr<std::optional<NodeStat>> watched = client_->Exists(path_, Watch::kArm);
      if (!watched.ok()) status = watched.status();
      break;
    }
    if (!absl::IsAlreadyExists(status)) break;
    // It exists: ours (a create whose reply was lost) or someone else's. The
    // exists-watch fires when it goes away either way.
    absl::StatusOr<std::optional<NodeStat>> stat = client_->Exists(path_, Watch::kArm);
    if (!stat.ok()) {
      status = stat.status();
      break;
    }
    if (!stat->has_value()) continue;  // gone already: create again
    int64_t owner = (*stat)->ephemeral_owner;
    int64_t session_id = client_->session().session_id;
    if (owner != 0 && owner == session_id) {
      status = absl::OkStatus();
      break;
    }
    status = absl::AlreadyExistsError(StrCat(
        path_, " is held by ", owner == 0 ? "a persistent node" : StrCat("another session (0x", absl::Hex(owner), ")"),
        ": another process uses this id; taking over when it goes away"));
    break;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    registered_ = status.ok();
    if (created) ++creations_;
    last_status_ = status;
  }
  if (status.ok()) {
    LogInfo("registered %s", path_.c_str());
  } else {
    LogWarning("cannot register %s yet: %s", path_.c_str(), std::string(status.message()).c_str());
  }
}

void EphemeralNode::OnSessionEvent(SessionEvent event) {
  bool retry = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_) return;
    if (event == SessionEvent::kExpired) registered_ = false;  // the node went with the session
    retry = event == SessionEvent::kNewSession || (event == SessionEvent::kConnected && !registered_);
  }
  if (retry) Attempt();
}

void EphemeralNode::OnNodeEvent(NodeEvent event, const std::string& path) {
  if (path != path_) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_) return;
    if (event == NodeEvent::kDeleted) registered_ = false;
  }
  // Deleted: create it again. Created or changed: look again, which re-arms the
  // watch and tells whether it is ours.
  Attempt();
}

absl::Status EphemeralNode::RegisterWaiting(int64_t wait_ms) {
  absl::Status status = Register();
  if (!absl::IsAlreadyExists(status)) return status;
  LogWarning("%s is held by another ZooKeeper session (a previous run that did not stop cleanly?); "
             "waiting up to %lld ms for it to go",
             path_.c_str(), static_cast<long long>(wait_ms));
  constexpr auto kPollInterval = std::chrono::milliseconds(50);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (registered()) return absl::OkStatus();
    std::this_thread::sleep_for(kPollInterval);
  }
  return registered() ? absl::OkStatus() : last_status();
}

}  // namespace wallet::cluster
