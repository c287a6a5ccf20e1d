// shard_pool.h — the router's connections to every shard: a few pipelined
// ShardConnections per shard id, kept in step with the cluster's list of live
// shards, and the totals a /metrics page needs.
//
// The router (and the TC/C and saga executors) send a command to a shard by id; the
// pool picks one of that shard's connections (connections_per_shard, default 2): the
// connected one with the fewest commands in flight, taking turns on ties, and a
// connecting one only when no connection is ready. SetShards() follows the map: new
// ids get connections, removed ids lose theirs, and an id whose address changed gets
// fresh connections to the new address; the commands in flight on removed or
// re-pointed connections fail with Unavailable (outcome unknown).
//
// Example (on the loop thread):
//   auto pool = ShardPool::Create(*loop, ShardPoolOptions{});
//   if (!pool.ok()) return pool.status();
//   absl::Status set = (*pool)->SetShards({{"shard-0", "127.0.0.1:7001"},
//                                          {"shard-1", "127.0.0.1:7002"}});
//   absl::Status sent = (*pool)->Send("shard-1", {"TRANSFER", "7", "9", "250", "EUR", txid},
//       [](absl::StatusOr<ShardReply> reply) { ... });
//
// Order: replies on one connection come in the order of their commands, but the
// pool spreads a shard's commands over its connections, so two commands to the same
// shard may run in either order. Send a command that depends on another (DEPOSIT
// after OPEN) only once the first one's reply is in.
//
// Outcomes of Send are those of ShardConnection::Send (see shard_connection.h): either
// Send returns an error and the callback is destroyed uncalled (nothing was sent:
// ResourceExhausted for overload, Unavailable when the shard has no usable
// connection, Unauthenticated when its AUTH was refused, NotFound for an unknown
// shard id, InvalidArgument for no arguments), or the callback runs exactly once,
// later, on the loop thread, with the reply, or with Unavailable (outcome unknown)
// or Unauthenticated (not sent).
//
// Threading: loop thread only; callbacks run on it and may call Send() and
// SetShards(). Destroy the pool on the loop thread, never from inside one of its
// callbacks; destruction fails every command in flight with Unavailable (their
// callbacks run inside the destructor, where Send is refused).
//
// Ownership: the pool borrows the loop, which must outlive it, and owns its
// connections.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/event_loop.h"
#include "common/strings.h"
#include "shardlink/shard_connection.h"

namespace wallet::shardlink {

struct ShardPoolOptions {
  ShardConnectionOptions connection;  // for every connection of the pool
  size_t connections_per_shard = 2;   // 1..kMaxConnectionsPerShard
};

// One connection as /metrics and logs show it.
struct ShardLinkInfo {
  std::string shard_id;
  std::string address;
  LinkState state = LinkState::kClosed;
  size_t in_flight = 0;
  std::string last_error;
};

class ShardPool {
 public:
  static constexpr size_t kMaxConnectionsPerShard = 64;

  // InvalidArgument for bad options. The pool starts with no shards.
  static absl::StatusOr<std::unique_ptr<ShardPool>> Create(EventLoop& loop, const ShardPoolOptions& options);
  ~ShardPool();
  ShardPool(const ShardPool&) = delete;
  ShardPool& operator=(const ShardPool&) = delete;

  // Makes the pool serve exactly these shards (id → "host:port"). Called at start
  // and whenever the router sees the live shards or the partition map change.
  // Checks every address first: InvalidArgument (and no change at all) when one is
  // bad or an id is empty. Unchanged shards keep their connections and what is in
  // flight on them.
  absl::Status SetShards(const std::map<std::string, std::string>& addresses);

  // Sends a command to one shard; see the header comment for the outcomes.
  // With order_key != 0, commands with the same key go over the same connection
  // (key % connections_per_shard) while it is usable, so they reach the shard in
  // the order they were sent; if that connection is in backoff another one is used
  // and the order across the switch is not kept.
  absl::Status Send(std::string_view shard_id, absl::Span<const std::string_view> args, ReplyCallback callback,
                    uint64_t order_key = 0);

  bool HasShard(std::string_view shard_id) const { return shards_.contains(shard_id); }
  size_t shard_count() const { return shards_.size(); }
  // Totals over every connection the pool ever had (removed ones included, so the
  // counters never go down), plus the pool's own refusals (unknown shard id).
  ShardLinkStats stats() const;
  // Every current connection, by shard id then connection index.
  std::vector<ShardLinkInfo> Links() const;

 private:
  struct Shard {
    std::string address;
    std::vector<std::unique_ptr<ShardConnection>> connections;
    size_t next_first = 0;  // where the next choice starts looking: turns on ties
  };

  ShardPool(EventLoop& loop, const ShardPoolOptions& options) : loop_(loop), options_(options) {}
  // Closes connections that left the pool (their callbacks run now) and hands them to
  // a loop timer for destruction, as one of them may be running a callback.
  void Retire(std::vector<std::unique_ptr<ShardConnection>> connections);
  ShardConnection* Choose(Shard& shard);

  EventLoop& loop_;
  const ShardPoolOptions options_;
  absl::flat_hash_map<std::string, Shard, StringHash, StringEq> shards_;
  std::vector<std::unique_ptr<ShardConnection>> retired_;  // closed; destroyed by reap_timer_
  EventLoop::TimerId reap_timer_ = 0;
  ShardLinkStats retired_stats_;  // final counters of retired connections
  ShardLinkStats pool_stats_;     // the pool's own refusals
  bool closing_ = false;          // in the destructor: Send and SetShards refuse
};

}  // namespace wallet::shardlink
