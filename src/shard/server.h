// server.h — wallet-shard's network side: one epoll event loop serving RESP2 over
// TCP in front of one Engine.
//
// Each loop turn: wait for readiness; read every readable connection and run each
// complete command in its query buffer (replies appended to that connection's
// output buffer); commit the turn's events to the event log (one write and, under
// the default fsync policy, one fdatasync: group commit); then write the replies of
// every connection that got some. No reply leaves before the events it reports on
// are in the log.
//
// When the log cannot be written (disk full, I/O error) the replies of the
// connections whose commands appended events in the failed turn are held (those
// connections are neither written nor read, only watched for a hang-up), every further
// mutation is refused with LOG_UNAVAILABLE, reads are still served (they may show
// the held turn's changes, which are applied in memory but not yet durable), and the
// timer retries the write every 100 ms; once it succeeds the held replies leave and
// mutations are accepted again.
//
// Limits: a connection's unparsed query bytes (max_query_bytes), argument count and
// length (RESP limits), clients (max_clients), and output waiting to be sent
// (max_output_bytes: past it the loop stops reading that connection until it drains,
// so a client that pipelines without reading cannot grow the shard's memory).
// A malformed or oversized request is answered with an error naming the problem and
// the connection is closed once the reply is written; other connections are not
// affected and no state changes.
//
// Ownership: the server borrows the engine (which must outlive it) and owns its
// sockets. Not thread-safe, except RequestStop(), which any thread or a signal
// handler may call.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/resp.h"
#include "common/result_code.h"
#include "shard/engine.h"

namespace wallet::shard {

struct ServerOptions {
  std::string bind_address = "127.0.0.1";
  uint16_t port = 7001;              // 0: any free port (see ShardServer::port())
  std::string password;              // empty: no AUTH required
  resp::Limits limits;
  size_t max_query_bytes = 64u << 20;   // unparsed bytes buffered per connection
  size_t max_output_bytes = 64u << 20;  // pending reply bytes before reads pause
  size_t max_clients = 10'000;
  // Records collected per timer tick (every 10 ms) on top of the ones created since
  // the previous tick, so that collection always keeps pace with the insert rate.
  size_t collect_batch = 256;
  // Accept DEBUG commands (fault injection for tests). Never in production.
  bool enable_debug_commands = false;
  std::string version = "0.1.0";
};

// Counters shown by INFO.
struct ServerStats {
  uint64_t connections_received = 0;
  uint64_t connections_rejected = 0;
  uint64_t commands_processed = 0;
  uint64_t protocol_errors = 0;
  uint64_t net_input_bytes = 0;
  uint64_t net_output_bytes = 0;
  uint64_t errors_by_code[static_cast<size_t>(ResultCode::kCount_)] = {};
  double ops_per_second = 0;  // over the last full second
};

class ShardStorage;

class ShardServer {
 public:
  // `storage` (may be null: an in-memory shard) holds the event log the server
  // commits each turn; both engine and storage must outlive the server.
  ShardServer(const ServerOptions& options, Engine* engine, ShardStorage* storage = nullptr);
  ~ShardServer();
  ShardServer(const ShardServer&) = delete;
  ShardServer& operator=(const ShardServer&) = delete;

  // Binds and listens. Fails (bad address, port in use) without side effects.
  absl::Status Listen();
  uint16_t port() const { return bound_port_; }

  // From now on SIGTERM and SIGINT are blocked and delivered to the event loop, which
  // stops cleanly on either. Call before announcing readiness (and before starting
  // threads, which inherit the mask), so no stop signal can find the default action.
  absl::Status HandleStopSignals();

  // Runs the event loop until RequestStop() or a stop signal (see
  // HandleStopSignals). Pending replies are flushed before it returns.
  absl::Status Run();
  void RequestStop();

  // Used by the command handlers (commands.cc).
  const ServerOptions& options() const { return options_; }
  const ServerStats& stats() const { return stats_; }
  Engine& engine() { return *engine_; }
  size_t connected_clients() const { return connections_.size(); }
  int64_t start_time_ms() const { return start_time_ms_; }
  void RecordError(ResultCode code);
  bool PasswordMatches(std::string_view candidate) const;
  void AppendInfo(std::string_view section, std::string* out) const;
  ShardStorage* storage() { return storage_; }

  // Runs `task` on the event loop's thread at its next turn (or when Run starts).
  // The only member any thread may call (besides RequestStop).
  void Post(std::function<void()> task);
  // Loop thread (posted by ShardMembership): the partitions this shard owns now,
  // and each partition's owner for MOVED replies (null: owners unknown).
  void SetPartitionOwnership(PartitionSet owned, std::shared_ptr<const std::vector<std::string>> owners);
  // The shard id owning `partition` per the latest map, or "unknown".
  std::string_view PartitionOwner(uint32_t partition) const;
  // True while the event log cannot be written: mutations are refused.
  bool log_unavailable() const;
  std::string log_failure_message() const;

 private:
  struct Connection;

  void AcceptAll();
  void HandleReadable(Connection* connection);
  void HandleWritable(Connection* connection);
  // Runs every complete command in `data`; returns the bytes consumed.
  size_t ProcessBuffer(Connection* connection, std::string_view data);
  void MarkDirty(Connection* connection);
  void FlushDirty();
  void UpdateInterest(Connection* connection);
  void Close(Connection* connection);
  void OnTimer(int64_t now_ms);
  // Group commit of the turn's events; on failure holds the turn's replies.
  void CommitTurn();
  void ReleaseHeld();
  void RunPosted();

  ServerOptions options_;
  Engine* engine_;
  ShardStorage* storage_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;    // eventfd written by RequestStop
  int post_fd_ = -1;    // eventfd written by Post
  int signal_fd_ = -1;  // SIGTERM/SIGINT when handled
  uint16_t bound_port_ = 0;
  bool stopping_ = false;
  int64_t now_ms_ = 0;
  int64_t start_time_ms_ = 0;
  int64_t next_collect_ms_ = 0;
  int64_t stats_window_start_ms_ = 0;
  uint64_t stats_window_commands_ = 0;
  uint64_t records_created_at_last_tick_ = 0;
  uint64_t next_connection_id_ = 1;
  absl::flat_hash_map<int, std::unique_ptr<Connection>> connections_;
  std::vector<char> read_buffer_;  // one read(2) at a time, shared by all connections
  std::vector<Connection*> dirty_;
  std::vector<Connection*> held_;  // replies waiting for the failed log to recover
  std::mutex post_mutex_;
  std::vector<std::function<void()>> posted_;  // guarded by post_mutex_
  std::shared_ptr<const std::vector<std::string>> partition_owners_;
  int64_t next_log_retry_ms_ = 0;
  std::vector<std::unique_ptr<Connection>> closed_;  // closed this turn, freed at its end
  ServerStats stats_;
};

}  // namespace wallet::shard
