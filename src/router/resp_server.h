// resp_server.h — wallet-router's RESP2 front end on a wallet::EventLoop: clients
// (redis-cli, the client library, the load generator) send the public API as Redis
// commands; each call goes to the Router and its reply comes back in order.
//
// Per connection:
//   - an incremental parser (resp::RequestParser) with hard limits; a broken or
//     oversized request is answered (-PROTOCOL / -LIMIT) and the connection closes
//     once every earlier reply has been written;
//   - ordered replies: calls complete out of order (different shards, MOVED
//     retries), so each command takes a reply slot in a queue when it is read; a
//     finished call fills its slot, and the slots at the head of the queue that are
//     filled are moved to the output buffer, in order. Writes happen once per loop
//     turn for every connection that got replies (a timer due at once, which runs
//     after the turn's socket events);
//   - bounds: at most max_pending_per_client calls awaiting the router, at most
//     max_queued_replies_per_client reply slots (answered or not) and
//     max_output_bytes unsent bytes: past any of them the server stops reading the
//     connection until calls are answered and the client reads its replies
//     (backpressure through TCP: a pipelining client is slowed, not refused); at most
//     max_query_bytes of an unfinished request;
//   - AUTH [default] password (when a password is set, every command but AUTH and
//     QUIT is refused -NOAUTH until it succeeds), QUIT, INFO (the info callback's
//     sections plus "# Clients"); every other command goes to Router::Execute.
// At most max_clients connections; the next ones get "-BUSY max number of clients
// reached" and are closed.
//
// Example (loop thread):
//   RespServerOptions options;
//   options.port = 0;
//   RespServer server(*loop, core, options);
//   if (absl::Status status = server.Listen(); !status.ok()) return status;
//   ... loop->Run() ...; server.BeginDrain(); loop->RunUntil([&] { return server.Drained(); }, 5000);
//
// Threading: loop thread only. Ownership: borrows the loop and the router (both
// must outlive the server's use of them); owns its sockets. Replies that arrive
// after the server (or their connection) is gone are dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/event_loop.h"
#include "common/resp.h"
#include "router/router.h"

namespace wallet::router {

struct RespServerOptions {
  std::string bind_address = "127.0.0.1";
  uint16_t port = 7100;                 // 0: any free port (see port())
  std::string password;                 // empty: no AUTH required
  // max_args: room for the largest TRANSFER.BATCH (router.h, kMaxTransferBatchArgs).
  resp::Limits limits = {
      .max_args = kMaxTransferBatchArgs, .max_arg_bytes = 64 * 1024, .max_inline_bytes = 64 * 1024};
  size_t max_clients = 10'000;
  // Bytes of one unfinished request: room for a TRANSFER.BATCH of 10 000 transfers
  // with the longest accounts, amounts and txids (about 1.6 MB).
  size_t max_query_bytes = 4u << 20;
  size_t max_output_bytes = 64u << 20;  // unsent reply bytes before reading pauses
  size_t max_pending_per_client = 1'024;          // calls awaiting the router; at it: reading pauses
  size_t max_queued_replies_per_client = 16'384;  // reply slots; at it reading pauses
  // Appends INFO sections for a section name ("" / "default" / "all": every one).
  std::function<void(std::string_view section, std::string* out)> info;
};

struct RespServerStats {
  uint64_t connections_received = 0;
  uint64_t connections_rejected = 0;  // over max_clients
  uint64_t commands = 0;              // parsed commands, AUTH and QUIT included
  uint64_t client_busy = 0;           // -BUSY for max_pending_per_client
  uint64_t protocol_errors = 0;       // -PROTOCOL and -LIMIT (connection closed)
  uint64_t read_pauses = 0;           // times a connection stopped being read (backpressure)
  uint64_t net_input_bytes = 0;
  uint64_t net_output_bytes = 0;
};

class RespServer {
 public:
  RespServer(EventLoop& loop, Router& router, const RespServerOptions& options);
  // Closes every connection and the listening socket (replies still owed are dropped).
  ~RespServer();
  RespServer(const RespServer&) = delete;
  RespServer& operator=(const RespServer&) = delete;

  // Binds, listens and starts accepting on the loop. Fails without side effects
  // (bad address, port in use).
  absl::Status Listen();
  uint16_t port() const { return port_; }

  // Stops accepting and reading (no new calls); replies still owed are written as
  // they arrive. For a clean stop: BeginDrain(), then run the loop until Drained().
  void BeginDrain();
  // True when no connection owes a reply or has unsent bytes.
  bool Drained() const;

  size_t connection_count() const { return connections_.size(); }
  const RespServerStats& stats() const { return stats_; }
  // Appends the "# Clients" section when `section` asks for it.
  void AppendInfo(std::string_view section, std::string* out) const;

 private:
  struct Connection;
  // One reply owed to a client, in command order.
  struct Slot {
    bool ready = false;
    std::string bytes;  // the RESP reply, once ready
  };

  void AcceptAll();
  void OnConnectionEvent(uint64_t id, FdReadiness readiness);
  void HandleReadable(Connection* connection);
  // Parses and runs the complete commands in the connection's query buffer while
  // its bounds allow.
  void ProcessQuery(Connection* connection);
  void HandleCommand(Connection* connection, const std::vector<std::string_view>& args);
  // Appends a slot already answered with `bytes`.
  void AddReadySlot(Connection* connection, std::string bytes);
  void HandleAuth(Connection* connection, const std::vector<std::string_view>& args);
  // A call's reply: fills its slot (if the connection is still there).
  void OnReply(uint64_t connection_id, uint64_t sequence, const shardlink::ShardReply& reply);
  // Moves answered slots at the head of the queue to the output buffer.
  void MoveReadySlots(Connection* connection);
  void MarkDirty(Connection* connection);
  void FlushDirty();
  // Writes what it can; closes a closing connection once everything is written.
  void Write(Connection* connection);
  // Reads resume when the connection's bounds allow (and parses what waits).
  void UpdateInterest(Connection* connection);
  bool CanRead(const Connection& connection) const;
  void Close(Connection* connection);

  EventLoop& loop_;
  Router& router_;
  const RespServerOptions options_;
  int listen_fd_ = -1;
  EventLoop::WatchId listen_watch_ = 0;
  uint16_t port_ = 0;
  bool draining_ = false;
  uint64_t next_connection_id_ = 1;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  std::vector<uint64_t> dirty_;           // connections with output to write this turn
  EventLoop::TimerId flush_timer_ = 0;    // due at once: writes after the turn's fd events
  std::vector<std::unique_ptr<Connection>> closed_;  // freed by the next flush
  std::vector<char> read_buffer_;
  // Shared with reply callbacks: false once the server is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  RespServerStats stats_;
};

}  // namespace wallet::router
