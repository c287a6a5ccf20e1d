// router_core.h — RouterCore, the Router (router.h) of wallet-router: checks each
// public API call as strictly as a shard would, finds the owning shard in the cached
// partition map and sends it one command through the ShardPool.
//
// What it does with each call:
//   - arguments: the shard's own rules (common/money.h parsers, the shard's arity
//     and messages), so a malformed call is answered -MALFORMED / -WRONG_ARITY /
//     -UNKNOWN_COMMAND without any shard round trip;
//   - routing: account -> PartitionOf(account, P) -> owner in the map -> the pool;
//     a TRANSFER whose two accounts have different owners is refused with
//     -CROSS_SHARD_UNSUPPORTED (nothing is sent) until the executors exist; MODE
//     tcc|saga is accepted and, for a same-shard transfer, ignored;
//   - TX txid: asks every shard in the pool and answers with the first one that
//     knows the id (its reply plus a "shard" field), nil when every shard answered
//     and none knows it, -UNAVAILABLE when some did not answer and none knew it;
//   - -MOVED from a shard: asks for a fresh map (the refresher set with
//     SetMapRefresher, which re-reads ZooKeeper off the loop), waits for a newer map
//     or a short backoff, and sends again: to the new map's owner, or, while the map
//     is unchanged, to the owner the MOVED reply named (shards refuse what they do
//     not own, so a wrong guess costs a retry, never money). At most
//     max_moved_retries times; then the client gets the shard's MOVED error;
//   - failures: a shard that cannot be reached or does not answer in time gives
//     -UNAVAILABLE; the message says whether the command was not sent ("nothing was
//     done") or its outcome is unknown ("retry with the same txid");
//   - overload: more than max_in_flight calls at once, or a shard link at its own
//     bound, gives -BUSY at once; nothing queues without a bound;
//   - TRANSFER.BATCH: one call (one in-flight slot, one reply) carrying n transfers.
//     Each item is checked as a TRANSFER (a bad one is answered in its place and never
//     sent); the same-shard items are grouped by owner and each owner gets them as
//     TRANSFER.BATCH commands (at most max_batch_items_per_shard_command items each,
//     in the request's order, with the call's order key); each cross-shard item runs
//     through the executor as a TRANSFER would. An item a shard answers -MOVED (or all
//     the items of a shard that does not know TRANSFER.BATCH) goes again alone, down
//     the single TRANSFER path and its MOVED retries; a link failure answers each item
//     of that shard command as a TRANSFER's would be. The reply: n results in order.
//
// Every call ends: the shard links time out (command_timeout_ms) and fail what they
// carry, the MOVED retries are bounded and each waits a bounded time.
//
// Shards in the pool: every live shard (ZooKeeper's /shards), plus map owners that
// have left /shards, at their last known address ("sticky"), so that a shard whose
// ZooKeeper session lapsed while it still serves keeps being reached; an owner
// that is really gone answers nothing and its calls get -UNAVAILABLE. A shard that
// owns nothing and has left /shards leaves the pool.
//
// Example (loop thread):
//   RouterCore core(*loop, *pool, RouterCoreOptions{});
//   core.SetPartitionMap(map);                         // from ClusterView
//   core.SetLiveShards({{"shard-0", "127.0.0.1:7001"}});
//   core.Execute({"BALANCE", "42"}, [](shardlink::ShardReply reply) { ... });
//
// Threading: loop thread only (see router.h). Ownership: borrows the loop and the
// pool, which must outlive it; the pool must not be shared with another user that
// calls SetShards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/layout.h"
#include "common/event_loop.h"
#include "router/router.h"
#include "router/transactions.h"
#include "shardlink/shard_pool.h"
#include "xshard/shard_caller.h"
#include "xshard/transfer.h"

namespace wallet::router {

struct RouterCoreOptions {
  size_t max_in_flight = 100'000;      // calls answered at once (all clients); beyond: -BUSY
  int max_moved_retries = 3;           // sends after a -MOVED per call; then the MOVED error
  int64_t moved_retry_wait_ms = 20;    // wait before the 1st retry (doubled for each next one),
                                       // cut short when a newer map arrives
  std::string router_id;               // INFO, and the owner name of the rows' leases
  // Cross-shard transfers (src/tcc, src/saga): the mode of a TRANSFER without MODE.
  xshard::TransferMode default_mode = xshard::TransferMode::kTcc;
  xshard::ExecutorOptions executor;    // executor.owner is set from router_id
  ResolverOptions resolver;
  bool run_resolver = true;            // false: this router never resumes others' rows
  // TRANSFER.BATCH: a shard's items go to it as TRANSFER.BATCH commands of at most this
  // many transfers each (1..1638: the shard links' argument bound, 5 per transfer).
  size_t max_batch_items_per_shard_command = 1'000;
};

class RouterCore : public Router, public xshard::ShardCaller {
 public:
  RouterCore(EventLoop& loop, shardlink::ShardPool& pool, const RouterCoreOptions& options);
  // Calls still waiting for a MOVED retry are answered -UNAVAILABLE (not sent again).
  ~RouterCore() override;
  RouterCore(const RouterCore&) = delete;
  RouterCore& operator=(const RouterCore&) = delete;

  using Router::Execute;
  void Execute(std::vector<std::string> args, RouterCallback done, uint64_t order_key) override;
  RouterStats stats() const override;

  // xshard::ShardCaller, for the executors: one command to a shard, MOVED retried
  // as for client calls; not counted as client calls.
  void CallOwnerOf(AccountId account, std::vector<std::string> args, xshard::CallDone done) override;
  void CallShard(const std::string& shard_id, std::vector<std::string> args, xshard::CallDone done) override;
  TransactionExecutor& executor() { return *executor_; }
  Resolver& resolver() { return *resolver_; }

  // --- From ClusterView, on the loop thread. ------------------------------------

  // Installs a newer map (an older or equal one is ignored) and sends again, at once,
  // the calls that wait after a -MOVED.
  void SetPartitionMap(std::shared_ptr<const cluster::VersionedPartitionMap> map);
  // The live shards (id -> "host:port") as ZooKeeper lists them now; updates the
  // pool (adding the sticky owners, see the header comment). Addresses that do not
  // parse are left out (and logged).
  void SetLiveShards(const std::map<std::string, std::string>& live);
  // Called (loop thread, must not block) when a -MOVED reply suggests the map is
  // stale. Without one the core just waits for the next map.
  void SetMapRefresher(std::function<void()> request_refresh);

  // Appends INFO sections (Redis style "# Router", "# Stats", "# Errorstats",
  // "# Shards") for `section` ("" or "default"/"all": every one).
  void AppendInfo(std::string_view section, std::string* out) const;

  size_t in_flight() const { return in_flight_; }
  // The map in use (null before the first one).
  const std::shared_ptr<const cluster::VersionedPartitionMap>& map() const { return map_; }
  // The shards given to the pool: live ones plus sticky owners.
  const std::map<std::string, std::string>& pooled_shards() const { return pooled_; }

 private:
  struct Call;
  struct TxFanout;
  struct Batch;
  using CallPtr = std::shared_ptr<Call>;
  using BatchPtr = std::shared_ptr<Batch>;

  // Sends a checked call to its owner (or refuses it): first try and every retry.
  void Dispatch(const CallPtr& call);
  // A shard's answer to a call sent by Dispatch.
  void OnShardReply(const CallPtr& call, const std::string& shard_id, absl::StatusOr<shardlink::ShardReply> reply);
  // After a -MOVED: records the named owner, asks for a fresh map and parks the call.
  void RetryAfterMoved(const CallPtr& call, const shardlink::ShardReply& moved);
  // TX: asks every pooled shard.
  void FanOutTx(const CallPtr& call);
  // TX.INDOUBT: ROW.INDOUBT on every pooled shard, the txids joined.
  void FanOutInDoubt(const CallPtr& call);
  // TX.RESOLVE: finds the row's shard (ROW.GET on every shard), then resumes it.
  void ResolveByHand(const CallPtr& call);
  // A TRANSFER whose accounts have different owners: the executor in its mode.
  void StartCrossShard(const CallPtr& call);
  // TRANSFER.BATCH: checks the items, sends each owner its same-shard items, starts
  // the cross-shard ones, and answers once every item has its result.
  void StartBatch(const CallPtr& call);
  // Sends one TRANSFER.BATCH of `items` (indexes into the batch) to `shard_id`.
  void SendBatchChunk(const BatchPtr& batch, const std::string& shard_id, std::vector<size_t> items);
  // A shard's answer to a chunk sent by SendBatchChunk.
  void OnBatchChunkReply(const BatchPtr& batch, const std::string& shard_id, const std::vector<size_t>& items,
                         absl::StatusOr<shardlink::ShardReply> reply);
  // Item `index` alone, as a single TRANSFER (a cross-shard item, or one to send
  // again after -MOVED: `moved` set). Its reply fills the item's result.
  void RunBatchItem(const BatchPtr& batch, size_t index, const shardlink::ShardReply* moved);
  // Records item `index`'s result; answers the call when it was the last one.
  void BatchItemDone(const BatchPtr& batch, size_t index, shardlink::ShardReply reply);
  // Sends `args` to every pooled shard; `done` gets (shard id, result) pairs once all answered.
  void FanOut(std::vector<std::string> args,
              std::function<void(std::vector<std::pair<std::string, xshard::CallResult>>)> done);
  // Answers an executor's call (an internal Call).
  void FinishInternal(const CallPtr& call, xshard::CallResult result);
  // Answers a call: counters, latency, in-flight count, then the callback.
  void Finish(const CallPtr& call, shardlink::ShardReply reply);
  // Answers a call that never reached the in-flight count (checked and refused at once).
  void Refuse(RouterCommand command, int64_t start_us, ResultCode code, std::string_view message,
              const RouterCallback& done);
  // The -UNAVAILABLE or -BUSY reply for a link-level failure of a call to `shard_id`.
  shardlink::ShardReply LinkFailureReply(const Call& call, std::string_view shard_id, const absl::Status& status);
  void CountReply(RouterCommand command, int64_t start_us, const shardlink::ShardReply& reply);
  // Recomputes pooled_ from live_ and the map's owners and hands it to the pool.
  void UpdatePool();

  EventLoop& loop_;
  shardlink::ShardPool& pool_;
  const RouterCoreOptions options_;
  std::function<void()> request_refresh_;

  std::shared_ptr<const cluster::VersionedPartitionMap> map_;
  std::map<std::string, std::string> live_;    // from ZooKeeper
  std::map<std::string, std::string> known_;   // every address ever seen, by id (for sticky owners)
  std::map<std::string, std::string> pooled_;  // what the pool serves

  size_t in_flight_ = 0;
  // Calls waiting after a -MOVED, with their retry timer. Bounded: each is in flight.
  std::map<uint64_t, std::pair<CallPtr, EventLoop::TimerId>> parked_;
  uint64_t next_park_id_ = 1;
  int64_t last_refresh_request_ms_ = -1;  // loop time of the last request_refresh_ call
  bool destroying_ = false;
  RouterStats stats_;
  // Declared last: destroyed first, while the pool and the loop still stand.
  std::unique_ptr<TransactionExecutor> executor_;
  std::unique_ptr<Resolver> resolver_;
};

}  // namespace wallet::router
