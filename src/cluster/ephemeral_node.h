// ephemeral_node.h — an ephemeral znode that stays registered for as long as its
// owner lives, across connection losses and session expiries: how shards and
// routers announce themselves (/wallet/<cluster>/shards/<id>, routers/<id>).
//
// Register() creates the node on the client's current session. Afterwards, on the
// client's event thread:
//   - kNewSession (the old session expired and took the node with it): create it
//     again on the new session;
//   - kConnected after a failed attempt (ZooKeeper was unreachable): try again;
//   - the node deleted while the session lives (by an operator, or the previous
//     owner's session ended at last): create it again.
// A create whose reply was lost is recognised on retry (the node exists and its
// ephemeral owner is our session). A node owned by ANOTHER live session means two
// processes claim the same id: Register() fails with AlreadyExists, and the node
// keeps a watch on the path and takes over once that session's node goes away.
//
// Example:
//   EphemeralNode registration(client.get(), ClusterPaths("prod").shard("shard-0"), "127.0.0.1:7001");
//   if (absl::Status status = registration.Register(); !status.ok()) return status;
//   ... registration.registered() tells whether the node is in place right now.
//
// Ownership: borrows the client, which must outlive this object. The destructor
// stops listening and deletes the node if the current session owns it (routers see
// the owner leave at once rather than after the session timeout). Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "cluster/zk_client.h"

namespace wallet::cluster {

class EphemeralNode : public ZkListener {
 public:
  EphemeralNode(ZkClient* client, std::string path, std::string data);
  ~EphemeralNode() override;
  EphemeralNode(const EphemeralNode&) = delete;
  EphemeralNode& operator=(const EphemeralNode&) = delete;

  // Creates the node (its parent must exist) and keeps it registered from now on.
  // AlreadyExists when another live session owns it; Unavailable when ZooKeeper
  // could not be reached (it is retried on reconnection either way).
  absl::Status Register();
  // Register(), and when another session holds the node (a previous run of the
  // same process that was killed: its session lives until it times out), waits up
  // to wait_ms for that session's node to go and ours to take its place. Still
  // AlreadyExists after that: a second live owner. Blocks the caller.
  absl::Status RegisterWaiting(int64_t wait_ms);

  const std::string& path() const { return path_; }
  // True while the node is known to exist and belong to the current session.
  bool registered() const;
  // How many times the node was created (1 after Register, +1 per re-creation).
  uint64_t creations() const;
  // The outcome of the latest attempt to create the node.
  absl::Status last_status() const;

  void OnSessionEvent(SessionEvent event) override;
  void OnNodeEvent(NodeEvent event, const std::string& path) override;

 private:
  // Creates the node, or adopts it when our session already owns it; arms an
  // exists-watch either way. Holds attempt_mutex_ (attempts never overlap).
  void Attempt();

  ZkClient* const client_;
  const std::string path_;
  const std::string data_;

  std::mutex attempt_mutex_;  // one attempt at a time (caller's thread vs event thread)
  mutable std::mutex mutex_;  // guards the fields below
  bool started_ = false;      // Register() was called: follow events
  bool registered_ = false;
  uint64_t creations_ = 0;
  absl::Status last_status_ = absl::FailedPreconditionError("not registered yet");
};

}  // namespace wallet::cluster
