#include "cluster/zk_client.h"

#include <errno.h>
#include <zookeeper/zookeeper.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "common/check.h"
#include "common/log.h"
#include "common/strings.h"

namespace wallet::cluster {

// What the C client gets as the watcher context of one handle. Events carry the
// generation, so events of a handle that has since been replaced are dropped.
struct ZkClient::HandleContext {
  ZkClient* client;
  uint64_t generation;
};

namespace {

using Clock = std::chrono::steady_clock;

// True while one of our C callbacks runs on this thread: a synchronous helper
// called there would wait for a completion that only that thread can deliver.
// (Scoped, not sticky: zookeeper_close may run completions on the closing thread.)
thread_local bool t_in_zookeeper_callback = false;

class CallbackScope {
 public:
  CallbackScope() : previous_(std::exchange(t_in_zookeeper_callback, true)) {}
  ~CallbackScope() { t_in_zookeeper_callback = previous_; }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  bool previous_;
};

// Results of one asynchronous C call, shared by the waiting caller and the
// completion callback (which may run after the caller gave up waiting).
struct Completion {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  int rc = ZOK;
};
struct DataCompletion : Completion {
  std::string data;
  NodeStat stat;
};
struct StatCompletion : Completion {
  NodeStat stat;
};
struct ChildrenCompletion : Completion {
  std::vector<std::string> children;
};
// A multi-op transaction: the C client writes `results` when the reply arrives, so
// they (and, to be safe, what the ops point to) live as long as the completion.
struct MultiCompletion : Completion {
  std::vector<std::string> paths;
  std::vector<std::string> values;
  std::vector<zoo_op_t> ops;
  std::vector<zoo_op_result_t> results;
};

NodeStat ToNodeStat(const struct Stat& stat) {
  NodeStat out;
  out.version = stat.version;
  out.child_version = stat.cversion;
  out.ephemeral_owner = stat.ephemeralOwner;
  out.created_zxid = stat.czxid;
  out.modified_zxid = stat.mzxid;
  out.child_count = stat.numChildren;
  out.data_length = stat.dataLength;
  return out;
}

// Takes back the shared_ptr that Run() handed to the C client as `data`.
template <typename T>
std::shared_ptr<T> TakeCompletion(const void* data) {
  std::unique_ptr<std::shared_ptr<T>> holder(static_cast<std::shared_ptr<T>*>(const_cast<void*>(data)));
  return *holder;
}

// Marks a completion done (its mutex held by the caller) and wakes the waiter.
void Finish(Completion* completion, int rc) {
  completion->rc = rc;
  completion->done = true;
  completion->done_cv.notify_all();
}

// The C completion callbacks: copy the result, wake the waiter, return.
void OnVoidCompletion(int rc, const void* data) {
  CallbackScope scope;
  std::shared_ptr<Completion> completion = TakeCompletion<Completion>(data);
  std::lock_guard<std::mutex> lock(completion->mutex);
  Finish(completion.get(), rc);
}

void OnStringCompletion(int rc, const char* /*value*/, const void* data) {
  CallbackScope scope;
  std::shared_ptr<Completion> completion = TakeCompletion<Completion>(data);
  std::lock_guard<std::mutex> lock(completion->mutex);
  Finish(completion.get(), rc);
}

void OnDataCompletion(int rc, const char* value, int value_length, const struct Stat* stat, const void* data) {
  CallbackScope scope;
  std::shared_ptr<DataCompletion> completion = TakeCompletion<DataCompletion>(data);
  std::lock_guard<std::mutex> lock(completion->mutex);
  if (rc == ZOK) {
    if (value != nullptr && value_length > 0) completion->data.assign(value, static_cast<size_t>(value_length));
    if (stat != nullptr) completion->stat = ToNodeStat(*stat);
  }
  Finish(completion.get(), rc);
}

void OnStatCompletion(int rc, const struct Stat* stat, const void* data) {
  CallbackScope scope;
  std::shared_ptr<StatCompletion> completion = TakeCompletion<StatCompletion>(data);
  std::lock_guard<std::mutex> lock(completion->mutex);
  if (rc == ZOK && stat != nullptr) completion->stat = ToNodeStat(*stat);
  Finish(completion.get(), rc);
}

void OnChildrenCompletion(int rc, const struct String_vector* strings, const void* data) {
  CallbackScope scope;
  std::shared_ptr<ChildrenCompletion> completion = TakeCompletion<ChildrenCompletion>(data);
  std::lock_guard<std::mutex> lock(completion->mutex);
  if (rc == ZOK && strings != nullptr) {
    for (int32_t i = 0; i < strings->count; ++i) completion->children.emplace_back(strings->data[i]);
    std::sort(completion->children.begin(), completion->children.end());
  }
  Finish(completion.get(), rc);
}

void OnMultiCompletion(int rc, const void* data) {
  CallbackScope scope;
  std::shared_ptr<MultiCompletion> completion = TakeCompletion<MultiCompletion>(data);
  std::lock_guard<std::mutex> lock(completion->mutex);
  Finish(completion.get(), rc);
}

// The C client's log, rate-limited: while ZooKeeper is unreachable it logs every
// reconnection attempt (about ten lines a second). At most kZooKeeperLogBurst
// lines pass per kZooKeeperLogWindow; the rest are counted and the count is
// reported with the next line that passes.
constexpr int kZooKeeperLogBurst = 5;
constexpr std::chrono::seconds kZooKeeperLogWindow{10};
std::mutex zookeeper_log_mutex;
Clock::time_point zookeeper_log_window_start;
int zookeeper_log_lines = 0;
uint64_t zookeeper_log_suppressed = 0;

// The C client's log lines, through our log (they carry their own timestamp).
void LogFromZooKeeper(const char* message) {
  CallbackScope scope;
  uint64_t suppressed = 0;
  {
    std::lock_guard<std::mutex> lock(zookeeper_log_mutex);
    Clock::time_point now = Clock::now();
    if (now - zookeeper_log_window_start >= kZooKeeperLogWindow) {
      zookeeper_log_window_start = now;
      zookeeper_log_lines = 0;
    }
    if (++zookeeper_log_lines > kZooKeeperLogBurst) {
      ++zookeeper_log_suppressed;
      return;
    }
    suppressed = std::exchange(zookeeper_log_suppressed, 0);
  }
  std::string_view text = message != nullptr ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  if (suppressed > 0) {
    LogWarning("zookeeper client: (%llu similar lines suppressed)", static_cast<unsigned long long>(suppressed));
  }
  LogWarning("zookeeper client: %.*s", static_cast<int>(text.size()), text.data());
}

ZooLogLevel ToZooLogLevel(ZooKeeperLogLevel level) {
  switch (level) {
    case ZooKeeperLogLevel::kError: return ZOO_LOG_LEVEL_ERROR;
    case ZooKeeperLogLevel::kWarning: return ZOO_LOG_LEVEL_WARN;
    case ZooKeeperLogLevel::kInfo: return ZOO_LOG_LEVEL_INFO;
    case ZooKeeperLogLevel::kDebug: return ZOO_LOG_LEVEL_DEBUG;
  }
  return ZOO_LOG_LEVEL_ERROR;
}

// A C return code as a Status whose code says what the caller should do next.
absl::Status ZkStatus(int rc, const char* operation, std::string_view path) {
  if (rc == ZOK) return absl::OkStatus();
  std::string message = StrCat(operation, " ", path, ": ", zerror(rc), " (", rc, ")");
  switch (rc) {
    case ZNONODE:
      return absl::NotFoundError(message);
    case ZNODEEXISTS:
      return absl::AlreadyExistsError(message);
    case ZBADVERSION:
    case ZNOTEMPTY:
    case ZNOCHILDRENFOREPHEMERALS:
      return absl::FailedPreconditionError(message);
    case ZCONNECTIONLOSS:
    case ZOPERATIONTIMEOUT:
    case ZSESSIONEXPIRED:
    case ZSESSIONMOVED:
    case ZCLOSING:
    case ZINVALIDSTATE:
    case ZNOTHING:
      return absl::UnavailableError(message);
    case ZBADARGUMENTS:
    case ZINVALIDACL:
    case ZMARSHALLINGERROR:
      return absl::InvalidArgumentError(message);
    case ZNOAUTH:
    case ZAUTHFAILED:
      return absl::PermissionDeniedError(message);
    default:
      return absl::InternalError(message);
  }
}

std::string SessionIdText(int64_t session_id) {
  return StrCat("0x", absl::Hex(static_cast<uint64_t>(session_id)));
}

}  // namespace

const char* SessionEventName(SessionEvent event) {
  switch (event) {
    case SessionEvent::kConnected: return "connected";
    case SessionEvent::kDisconnected: return "disconnected";
    case SessionEvent::kExpired: return "expired";
    case SessionEvent::kNewSession: return "new-session";
  }
  return "unknown";
}

const char* ConnectionStateName(ConnectionState state) {
  switch (state) {
    case ConnectionState::kConnecting: return "connecting";
    case ConnectionState::kConnected: return "connected";
    case ConnectionState::kDisconnected: return "disconnected";
    case ConnectionState::kExpired: return "expired";
    case ConnectionState::kClosed: return "closed";
  }
  return "unknown";
}

const char* NodeEventName(NodeEvent event) {
  switch (event) {
    case NodeEvent::kCreated: return "created";
    case NodeEvent::kDeleted: return "deleted";
    case NodeEvent::kDataChanged: return "data-changed";
    case NodeEvent::kChildrenChanged: return "children-changed";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------
// Sessions and the event thread.

ZkClient::ZkClient(const ZkClientOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<ZkClient>> ZkClient::Connect(const ZkClientOptions& options) {
  if (options.connect_string.empty()) return absl::InvalidArgumentError("empty ZooKeeper connect string");
  if (options.session_timeout_ms <= 0 || options.connect_timeout_ms <= 0 ||
      options.operation_timeout_ms <= 0 || options.reopen_retry_ms <= 0) {
    return absl::InvalidArgumentError("ZooKeeper timeouts must be positive");
  }
  zoo_set_debug_level(ToZooLogLevel(options.log_level));  // process-wide in the C client
  std::unique_ptr<ZkClient> client(new ZkClient(options));
  if (absl::Status status = client->OpenHandle(); !status.ok()) return status;
  client->event_thread_ = std::thread([raw = client.get()] { raw->RunEventThread(); });

  auto deadline = Clock::now() + std::chrono::milliseconds(options.connect_timeout_ms);
  std::unique_lock<std::mutex> lock(client->mutex_);
  if (!client->changed_.wait_until(lock, deadline,
                                   [&] { return client->state_ == ConnectionState::kConnected; })) {
    lock.unlock();
    return absl::UnavailableError(StrCat("no ZooKeeper session with ", options.connect_string, " within ",
                                         options.connect_timeout_ms, " ms"));
  }
  return client;
}

ZkClient::~ZkClient() {
  WALLET_CHECK(!event_thread_.joinable() || std::this_thread::get_id() != event_thread_.get_id(),
               "a ZkClient must not be destroyed from its own event thread (a listener)");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  {
    // Closing fails every pending call (waiters wake with Unavailable) and ends the
    // session on the server, so ephemeral nodes go at once.
    std::unique_lock<std::shared_mutex> handle_lock(handle_mutex_);
    if (handle_ != nullptr) zookeeper_close(handle_);
    handle_ = nullptr;
    handle_context_.reset();
  }
  if (event_thread_.joinable()) event_thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  state_ = ConnectionState::kClosed;
}

absl::Status ZkClient::OpenHandle() {
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::CancelledError("ZooKeeper client is closing");
    generation = ++generation_;
    state_ = ConnectionState::kConnecting;
    session_ = SessionCredentials{};
  }
  auto context = std::make_unique<HandleContext>(HandleContext{this, generation});
  std::unique_lock<std::shared_mutex> handle_lock(handle_mutex_);
  {
    // The destructor sets stopping_ before it takes handle_mutex_ to close the
    // handle: checked again here, no handle is ever opened after that close.
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::CancelledError("ZooKeeper client is closing");
  }
  if (handle_ != nullptr) {
    // After zookeeper_close returns, the C client calls nothing more for it.
    zookeeper_close(handle_);
    handle_ = nullptr;
  }
  handle_context_.reset();
  errno = 0;
  zhandle_t* handle = zookeeper_init2(options_.connect_string.c_str(), &ZkClient::OnRawEvent,
                                      options_.session_timeout_ms, nullptr, context.get(), 0,
                                      &LogFromZooKeeper);
  if (handle == nullptr) {
    int error = errno;
    std::string message = StrCat("zookeeper_init(", options_.connect_string, "): ", std::strerror(error));
    return error == EINVAL ? absl::InvalidArgumentError(message) : absl::UnavailableError(message);
  }
  handle_ = handle;
  handle_context_ = std::move(context);
  std::lock_guard<std::mutex> lock(mutex_);
  ++sessions_opened_;
  return absl::OkStatus();
}

void ZkClient::OnRawEvent(zhandle_t* /*handle*/, int type, int state, const char* path, void* context) {
  CallbackScope scope;
  auto* handle_context = static_cast<HandleContext*>(context);
  if (handle_context == nullptr) return;
  ZkClient* client = handle_context->client;
  {
    std::lock_guard<std::mutex> lock(client->mutex_);
    client->queue_.push_back(RawEvent{handle_context->generation, type, state, path != nullptr ? path : ""});
  }
  client->changed_.notify_all();
}

void ZkClient::RunEventThread() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (stopping_) return;
    if (!queue_.empty()) {
      RawEvent event = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      HandleEvent(event);
      lock.lock();
      continue;
    }
    if (reopen_pending_) {
      if (Clock::now() >= reopen_at_) {
        reopen_pending_ = false;
        new_session_ = true;
        lock.unlock();
        absl::Status status = OpenHandle();
        lock.lock();
        if (!status.ok() && !stopping_) {
          LogWarning("cannot open a new ZooKeeper session: %s; retrying in %d ms",
                     std::string(status.message()).c_str(), options_.reopen_retry_ms);
          reopen_pending_ = true;
          reopen_at_ = Clock::now() + std::chrono::milliseconds(options_.reopen_retry_ms);
        }
        continue;
      }
      changed_.wait_until(lock, reopen_at_);
    } else {
      changed_.wait(lock);
    }
  }
}

void ZkClient::HandleEvent(const RawEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (event.generation != generation_) return;  // from a handle closed since
  }
  if (event.type == ZOO_SESSION_EVENT) {
    if (event.state == ZOO_CONNECTED_STATE || event.state == ZOO_READONLY_STATE) {
      SessionCredentials credentials;
      {
        std::shared_lock<std::shared_mutex> handle_lock(handle_mutex_);
        if (handle_ != nullptr) {
          const clientid_t* id = zoo_client_id(handle_);
          credentials.session_id = id->client_id;
          credentials.password.assign(id->passwd, sizeof(id->passwd));
        }
      }
      ConnectionState previous;
      bool fresh_session;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        previous = state_;
        fresh_session = new_session_;
        state_ = ConnectionState::kConnected;
        session_ = credentials;
        new_session_ = false;
      }
      changed_.notify_all();
      if (previous == ConnectionState::kConnected) return;
      LogInfo("ZooKeeper %s: session %s (%s)", options_.connect_string.c_str(),
              SessionIdText(credentials.session_id).c_str(), fresh_session ? "new session" : "connected");
      DispatchSession(fresh_session ? SessionEvent::kNewSession : SessionEvent::kConnected);
    } else if (event.state == ZOO_CONNECTING_STATE || event.state == ZOO_ASSOCIATING_STATE ||
               event.state == ZOO_NOTCONNECTED_STATE) {
      int64_t session_id;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (state_ != ConnectionState::kConnected) return;
        state_ = ConnectionState::kDisconnected;
        session_id = session_.session_id;
      }
      changed_.notify_all();
      LogWarning("ZooKeeper %s: connection lost; session %s kept while it reconnects",
                 options_.connect_string.c_str(), SessionIdText(session_id).c_str());
      DispatchSession(SessionEvent::kDisconnected);
    } else if (event.state == ZOO_EXPIRED_SESSION_STATE || event.state == ZOO_AUTH_FAILED_STATE) {
      int64_t session_id;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        state_ = ConnectionState::kExpired;
        session_id = session_.session_id;
      }
      changed_.notify_all();
      LogWarning("ZooKeeper %s: session %s %s; opening a new session", options_.connect_string.c_str(),
                 SessionIdText(session_id).c_str(),
                 event.state == ZOO_EXPIRED_SESSION_STATE ? "expired" : "failed authentication");
      DispatchSession(SessionEvent::kExpired);
      std::lock_guard<std::mutex> lock(mutex_);
      reopen_pending_ = true;  // RunEventThread opens it right away
      reopen_at_ = Clock::now();
    }
    return;
  }
  NodeEvent node_event;
  if (event.type == ZOO_CREATED_EVENT) {
    node_event = NodeEvent::kCreated;
  } else if (event.type == ZOO_DELETED_EVENT) {
    node_event = NodeEvent::kDeleted;
  } else if (event.type == ZOO_CHANGED_EVENT) {
    node_event = NodeEvent::kDataChanged;
  } else if (event.type == ZOO_CHILD_EVENT) {
    node_event = NodeEvent::kChildrenChanged;
  } else {
    return;  // ZOO_NOTWATCHING_EVENT: watches are never removed here
  }
  DispatchNode(node_event, event.path);
}

template <typename Call>
void ZkClient::Dispatch(const Call& call) {
  std::lock_guard<std::mutex> round(dispatch_mutex_);
  std::vector<ZkListener*> snapshot;
  {
    std::lock_guard<std::mutex> lock(listeners_mutex_);
    snapshot = listeners_;
  }
  for (ZkListener* listener : snapshot) {
    {
      // A listener may have removed another one earlier in this round.
      std::lock_guard<std::mutex> lock(listeners_mutex_);
      if (std::find(listeners_.begin(), listeners_.end(), listener) == listeners_.end()) continue;
    }
    call(listener);
  }
}

void ZkClient::DispatchSession(SessionEvent event) {
  Dispatch([event](ZkListener* listener) { listener->OnSessionEvent(event); });
}

void ZkClient::DispatchNode(NodeEvent event, const std::string& path) {
  Dispatch([event, &path](ZkListener* listener) { listener->OnNodeEvent(event, path); });
}

void ZkClient::AddListener(ZkListener* listener) {
  std::lock_guard<std::mutex> lock(listeners_mutex_);
  if (std::find(listeners_.begin(), listeners_.end(), listener) == listeners_.end()) {
    listeners_.push_back(listener);
  }
}

void ZkClient::RemoveListener(ZkListener* listener) {
  {
    std::lock_guard<std::mutex> lock(listeners_mutex_);
    listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
  }
  if (std::this_thread::get_id() != event_thread_.get_id()) {
    // Wait for a dispatch round in progress, which may still hold the listener.
    std::lock_guard<std::mutex> round(dispatch_mutex_);
  }
}

ConnectionState ZkClient::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

SessionCredentials ZkClient::session() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return session_;
}

uint64_t ZkClient::sessions_opened() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return sessions_opened_;
}

// ---------------------------------------------------------------------------
// Synchronous helpers: one asynchronous C call each, waited for with a deadline.

template <typename CompletionType, typename Submit>
absl::Status ZkClient::Run(const char* operation, const std::string& path,
                           const std::shared_ptr<CompletionType>& completion, const Submit& submit) {
  if (t_in_zookeeper_callback) {
    return absl::FailedPreconditionError(
        StrCat(operation, " ", path, ": called on a ZooKeeper C-client thread (it would deadlock)"));
  }
  // The C client owns this holder until it calls the completion; if the call is
  // refused up front, the completion is never called and the holder is ours.
  auto* holder = new std::shared_ptr<CompletionType>(completion);
  int rc;
  {
    std::shared_lock<std::shared_mutex> handle_lock(handle_mutex_);
    rc = handle_ == nullptr ? ZINVALIDSTATE : submit(handle_, static_cast<const void*>(holder));
  }
  if (rc != ZOK) {
    delete holder;
    return ZkStatus(rc, operation, path);
  }
  std::unique_lock<std::mutex> lock(completion->mutex);
  if (!completion->done_cv.wait_for(lock, std::chrono::milliseconds(options_.operation_timeout_ms),
                                    [&] { return completion->done; })) {
    return absl::UnavailableError(StrCat(operation, " ", path, ": no reply from ZooKeeper within ",
                                         options_.operation_timeout_ms,
                                         " ms (a write may or may not have happened)"));
  }
  return ZkStatus(completion->rc, operation, path);
}

absl::Status ZkClient::Create(const std::string& path, std::string_view data, CreateMode mode) {
  auto completion = std::make_shared<Completion>();
  int flags = mode == CreateMode::kEphemeral ? ZOO_EPHEMERAL : ZOO_PERSISTENT;
  return Run("create", path, completion, [&](zhandle_t* handle, const void* context) {
    return zoo_acreate(handle, path.c_str(), data.data(), static_cast<int>(data.size()), &ZOO_OPEN_ACL_UNSAFE,
                       flags, &OnStringCompletion, context);
  });
}

absl::StatusOr<NodeData> ZkClient::Get(const std::string& path, Watch watch) {
  auto completion = std::make_shared<DataCompletion>();
  absl::Status status = Run("get", path, completion, [&](zhandle_t* handle, const void* context) {
    return zoo_aget(handle, path.c_str(), watch == Watch::kArm ? 1 : 0, &OnDataCompletion, context);
  });
  if (!status.ok()) return status;
  std::lock_guard<std::mutex> lock(completion->mutex);
  return NodeData{std::move(completion->data), completion->stat};
}

absl::StatusOr<NodeStat> ZkClient::Set(const std::string& path, std::string_view data, int32_t expected_version) {
  auto completion = std::make_shared<StatCompletion>();
  absl::Status status = Run("set", path, completion, [&](zhandle_t* handle, const void* context) {
    return zoo_aset(handle, path.c_str(), data.data(), static_cast<int>(data.size()), expected_version,
                    &OnStatCompletion, context);
  });
  if (!status.ok()) return status;
  std::lock_guard<std::mutex> lock(completion->mutex);
  return completion->stat;
}

absl::StatusOr<std::optional<NodeStat>> ZkClient::Exists(const std::string& path, Watch watch) {
  auto completion = std::make_shared<StatCompletion>();
  absl::Status status = Run("exists", path, completion, [&](zhandle_t* handle, const void* context) {
    return zoo_aexists(handle, path.c_str(), watch == Watch::kArm ? 1 : 0, &OnStatCompletion, context);
  });
  if (absl::IsNotFound(status)) return std::optional<NodeStat>();
  if (!status.ok()) return status;
  std::lock_guard<std::mutex> lock(completion->mutex);
  return std::optional<NodeStat>(completion->stat);
}

absl::StatusOr<std::vector<std::string>> ZkClient::GetChildren(const std::string& path, Watch watch) {
  auto completion = std::make_shared<ChildrenCompletion>();
  absl::Status status = Run("get children of", path, completion, [&](zhandle_t* handle, const void* context) {
    return zoo_aget_children(handle, path.c_str(), watch == Watch::kArm ? 1 : 0, &OnChildrenCompletion,
                             context);
  });
  if (!status.ok()) return status;
  std::lock_guard<std::mutex> lock(completion->mutex);
  return std::move(completion->children);
}

absl::Status ZkClient::Delete(const std::string& path, int32_t expected_version) {
  auto completion = std::make_shared<Completion>();
  return Run("delete", path, completion, [&](zhandle_t* handle, const void* context) {
    return zoo_adelete(handle, path.c_str(), expected_version, &OnVoidCompletion, context);
  });
}

absl::Status ZkClient::EnsurePath(const std::string& path) {
  if (path.empty() || path[0] != '/' || path.back() == '/') {
    return absl::InvalidArgumentError(StrCat("'", path, "' is not an absolute ZooKeeper path"));
  }
  for (size_t end = path.find('/', 1);; end = path.find('/', end + 1)) {
    std::string prefix = path.substr(0, end);
    absl::Status status = Create(prefix, "", CreateMode::kPersistent);
    if (!status.ok() && !absl::IsAlreadyExists(status)) return status;
    if (end == std::string::npos) return absl::OkStatus();
  }
}

absl::Status ZkClient::CreateAll(const std::vector<std::pair<std::string, std::string>>& nodes) {
  if (nodes.empty()) return absl::OkStatus();
  auto completion = std::make_shared<MultiCompletion>();
  for (const auto& [path, value] : nodes) {
    completion->paths.push_back(path);
    completion->values.push_back(value);
  }
  completion->ops.resize(nodes.size());
  completion->results.resize(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    zoo_create_op_init(&completion->ops[i], completion->paths[i].c_str(), completion->values[i].data(),
                       static_cast<int>(completion->values[i].size()), &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT,
                       nullptr, 0);
  }
  absl::Status status = Run("create", nodes.front().first, completion, [&](zhandle_t* handle, const void* context) {
    return zoo_amulti(handle, static_cast<int>(completion->ops.size()), completion->ops.data(),
                      completion->results.data(), &OnMultiCompletion, context);
  });
  if (status.ok() || absl::IsUnavailable(status)) return status;
  // Name the node that failed (the others report ZRUNTIMEINCONSISTENCY or ZOK).
  std::lock_guard<std::mutex> lock(completion->mutex);
  for (size_t i = 0; i < completion->results.size(); ++i) {
    int rc = completion->results[i].err;
    if (rc != ZOK && rc != ZRUNTIMEINCONSISTENCY) return ZkStatus(rc, "create", completion->paths[i]);
  }
  return status;
}

}  // namespace wallet::cluster
