// zk_client.h — a ZooKeeper client for the cluster layout, on top of the
// multi-threaded C client (libzookeeper-mt).
//
// What it adds to the C client:
//   - Connect() waits for the first session with a timeout.
//   - Synchronous helpers (Create, Get, Set, Exists, GetChildren, Delete, EnsurePath,
//     CreateAll) that return absl::Status codes chosen by what the caller should do:
//       Unavailable         connection lost, no reply in time, session expired or the
//                           client is closing: retry (the client reconnects by
//                           itself). For a write it is unknown whether it happened:
//                           a retried create may find AlreadyExists, a retried set
//                           with a version FailedPrecondition.
//       NotFound            the node (or, for a create, its parent) does not exist.
//       AlreadyExists       create of a node that exists.
//       FailedPrecondition  version mismatch (someone else wrote first: re-read and
//                           decide again), delete of a node with children.
//       InvalidArgument     malformed path or data; PermissionDenied: ACLs.
//     Each helper waits at most operation_timeout_ms, whatever the network does.
//   - One event thread of its own. The C client's watcher callbacks only copy the
//     event into a queue and return (they never block, never call back into
//     ZooKeeper). The event thread then tells every ZkListener, so listeners MAY
//     call the synchronous helpers (they block the event thread, never the C
//     client's threads). Listeners should still be quick: events queue up behind
//     them.
//   - Sessions: on connection loss the C client reconnects on its own and keeps the
//     session (watches are re-registered for us); listeners hear kDisconnected, then
//     kConnected, and should keep serving their cached data meanwhile. On session
//     expiry the client closes the dead handle, opens a new session and, once it is
//     connected, tells every listener kNewSession: ephemeral nodes and watches of the
//     old session are gone, so owners re-create their ephemeral nodes and re-read
//     (which re-arms) what they watch. See EphemeralNode and PartitionMapWatcher.
//   - Watches are ZooKeeper's one-shot watches: a helper called with Watch::kArm
//     arms one for that path, and the next change is reported once through
//     ZkListener::OnNodeEvent; to keep watching, read again with Watch::kArm (a
//     re-read after the event also picks up changes made before the re-arm).
//   - The C client's own log goes to stderr through common/log.h, at ERROR level
//     unless asked otherwise (at WARN and below it is chatty).
//
// Example:
//   ZkClientOptions options;
//   options.connect_string = "127.0.0.1:2181";
//   absl::StatusOr<std::unique_ptr<ZkClient>> client = ZkClient::Connect(options);
//   if (!client.ok()) return client.status();
//   absl::StatusOr<NodeData> map = (*client)->Get("/wallet/prod/map", Watch::kArm);
//   ... (*client)->AddListener(&my_listener);  // OnNodeEvent(kDataChanged, path)
//
// Thread safety: every method may be called from any thread, including from a
// listener on the event thread, but none from inside a C-client callback (they
// return FailedPrecondition there). The destructor must not run on the event
// thread (i.e. never destroy the client from inside a listener).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

typedef struct _zhandle zhandle_t;  // NOLINT: the C client's handle (zookeeper.h)

namespace wallet::cluster {

// What a listener hears about the session.
enum class SessionEvent {
  kConnected,     // connected again to the same session: watches and ephemeral nodes intact
  kDisconnected,  // connection lost; the session may still be alive; keep cached data
  kExpired,       // the session ended: its ephemeral nodes and watches are gone; a new
                  // session is being opened
  kNewSession,    // connected on a new session after kExpired: re-create ephemeral
                  // nodes, re-read and re-arm watches
};
const char* SessionEventName(SessionEvent event);

// The client's view of its connection, for status pages and tests.
enum class ConnectionState { kConnecting, kConnected, kDisconnected, kExpired, kClosed };
const char* ConnectionStateName(ConnectionState state);

// A watched node changed (one-shot: read again with Watch::kArm to keep watching).
enum class NodeEvent { kCreated, kDeleted, kDataChanged, kChildrenChanged };
const char* NodeEventName(NodeEvent event);

enum class Watch { kNone, kArm };
enum class CreateMode { kPersistent, kEphemeral };
// Level of the C client's own log messages.
enum class ZooKeeperLogLevel { kError, kWarning, kInfo, kDebug };

// expected_version for Set/Delete that matches any version.
inline constexpr int32_t kAnyVersion = -1;

// The parts of ZooKeeper's Stat the project uses.
struct NodeStat {
  int32_t version = 0;          // data version: +1 per set
  int32_t child_version = 0;    // +1 per child created or deleted
  int64_t ephemeral_owner = 0;  // owning session id for ephemeral nodes, else 0
  int64_t created_zxid = 0;     // tells a re-created node from the old one
  int64_t modified_zxid = 0;
  int32_t child_count = 0;
  int32_t data_length = 0;
};

struct NodeData {
  std::string data;
  NodeStat stat;
};

// The session id and password, as zoo_client_id gives them (the password is 16
// bytes). Tests use it to expire a session from outside.
struct SessionCredentials {
  int64_t session_id = 0;
  std::string password;
};

// Receives events on the client's event thread (see the file comment). Both
// methods may call the client's synchronous helpers; neither may destroy the client.
class ZkListener {
 public:
  virtual ~ZkListener() = default;
  virtual void OnSessionEvent(SessionEvent event) = 0;
  virtual void OnNodeEvent(NodeEvent event, const std::string& path) = 0;
};

struct ZkClientOptions {
  std::string connect_string;  // "host:port[,host:port...]"
  // Asked of the server, which clamps it to [2, 20] ticks.
  int session_timeout_ms = 10'000;
  // How long Connect() waits for the first session.
  int connect_timeout_ms = 15'000;
  // How long one synchronous helper waits for its reply.
  int operation_timeout_ms = 10'000;
  // How long to wait before retrying when a new session cannot even be started
  // (zookeeper_init failed, e.g. the host name does not resolve).
  int reopen_retry_ms = 1'000;
  ZooKeeperLogLevel log_level = ZooKeeperLogLevel::kError;
};

class ZkClient {
 public:
  // Opens a session and waits until it is connected (Unavailable after
  // connect_timeout_ms, InvalidArgument for an unusable connect string).
  static absl::StatusOr<std::unique_ptr<ZkClient>> Connect(const ZkClientOptions& options);

  ZkClient(const ZkClient&) = delete;
  ZkClient& operator=(const ZkClient&) = delete;
  // Closes the session (its ephemeral nodes go away at once), fails pending helpers
  // with Unavailable, stops the event thread. Listeners hear nothing more.
  ~ZkClient();

  ConnectionState state() const;
  // The current session; session_id is 0 while a new session is being opened.
  SessionCredentials session() const;
  // Sessions opened so far: 1 + how many times an expired session was replaced.
  uint64_t sessions_opened() const;
  const ZkClientOptions& options() const { return options_; }

  // Listeners are borrowed and must outlive their registration. After
  // RemoveListener returns (on any thread but the event thread) the listener is
  // never called again; on the event thread it is not called after the current call.
  void AddListener(ZkListener* listener);
  void RemoveListener(ZkListener* listener);

  // Creates `path` with `data` (open ACL). NotFound when the parent is missing.
  absl::Status Create(const std::string& path, std::string_view data, CreateMode mode);
  // Reads a node's data and version; Watch::kArm arms a data watch (kDataChanged,
  // kDeleted) when the node exists.
  absl::StatusOr<NodeData> Get(const std::string& path, Watch watch);
  // Writes a node's data when its version is expected_version (or kAnyVersion);
  // returns the new stat. FailedPrecondition on a version mismatch.
  absl::StatusOr<NodeStat> Set(const std::string& path, std::string_view data, int32_t expected_version);
  // The node's stat, or nullopt when it does not exist. Watch::kArm arms a watch
  // either way (kCreated for a missing node).
  absl::StatusOr<std::optional<NodeStat>> Exists(const std::string& path, Watch watch);
  // The names (not paths) of a node's children, sorted. Watch::kArm arms a child
  // watch (kChildrenChanged, kDeleted).
  absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& path, Watch watch);
  // Deletes a node of version expected_version (or kAnyVersion).
  absl::Status Delete(const std::string& path, int32_t expected_version);
  // Creates `path` and every missing ancestor as empty persistent nodes; nodes
  // that exist are left as they are.
  absl::Status EnsurePath(const std::string& path);
  // Creates all the given persistent nodes (path, data) in one transaction: all of
  // them or none. The error names the first node that failed (AlreadyExists, ...).
  absl::Status CreateAll(const std::vector<std::pair<std::string, std::string>>& nodes);

 private:
  struct HandleContext;
  struct RawEvent {
    uint64_t generation = 0;
    int type = 0;
    int state = 0;
    std::string path;
  };

  explicit ZkClient(const ZkClientOptions& options);

  // The C client's watcher (all events of all handles): queues, never blocks.
  static void OnRawEvent(zhandle_t* handle, int type, int state, const char* path, void* context);

  // Opens a new C handle (a new session) in place of the current one, closing the
  // old one. Runs on the event thread (and in Connect before it starts).
  absl::Status OpenHandle();
  void RunEventThread();
  void HandleEvent(const RawEvent& event);
  void DispatchSession(SessionEvent event);
  void DispatchNode(NodeEvent event, const std::string& path);
  template <typename Call>
  void Dispatch(const Call& call);

  // Submits one asynchronous C call (`submit(handle, completion_data)` returns the
  // C return code) and waits for its completion; see zk_client.cc.
  template <typename Completion, typename Submit>
  absl::Status Run(const char* operation, const std::string& path,
                   const std::shared_ptr<Completion>& completion, const Submit& submit);

  const ZkClientOptions options_;

  // The C handle. Shared while a call is being submitted; exclusive while the
  // handle is replaced or closed. Never held while waiting for a reply.
  mutable std::shared_mutex handle_mutex_;
  zhandle_t* handle_ = nullptr;
  std::unique_ptr<HandleContext> handle_context_;

  // State and the event queue.
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<RawEvent> queue_;
  ConnectionState state_ = ConnectionState::kConnecting;
  uint64_t generation_ = 0;     // of the current handle; events of older ones are dropped
  bool new_session_ = false;    // the current handle replaced an expired session
  bool reopen_pending_ = false; // OpenHandle failed; retry at reopen_at_
  std::chrono::steady_clock::time_point reopen_at_;
  bool stopping_ = false;
  SessionCredentials session_;
  uint64_t sessions_opened_ = 0;

  // Listeners: the list, and a lock held for a whole dispatch round so that
  // RemoveListener can wait for a round in progress.
  std::mutex listeners_mutex_;
  std::vector<ZkListener*> listeners_;
  std::mutex dispatch_mutex_;
  std::thread event_thread_;
  std::thread::id event_thread_id_;
};

}  // namespace wallet::cluster
