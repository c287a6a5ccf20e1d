// transactions.h — the router's cross-shard transactions: TransactionExecutor starts
// a transfer in its mode (tcc::MakeTccFlow, saga::MakeSagaFlow) and resumes a row
// found in doubt; Resolver scans every shard's phase rows for ones in doubt longer
// than a threshold, claims each with a lease and resumes it, so that a transaction
// any router left behind (killed mid-way) is finished by any other. Routers keep no
// durable state: everything a resume needs is in the row on the home shard.
//
// Example (loop thread):
//   TransactionExecutor executor(loop, caller, ExecutorOptions{.owner = "router-a"});
//   executor.Start(spec, [](const xshard::TransferOutcome& outcome) { ... });
//   Resolver resolver(loop, executor, caller, ResolverOptions{}, [&] { return shard_ids; });
//   resolver.Start();
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "xshard/flow.h"
#include "xshard/shard_caller.h"
#include "xshard/transfer.h"

namespace wallet::router {

class TransactionExecutor {
 public:
  TransactionExecutor(EventLoop& loop, xshard::ShardCaller& caller, xshard::ExecutorOptions options);
  // Flows still waiting for a message or timer are dropped without an answer (a
  // router that stops leaves its rows to the resolvers). The loop must outlive it.
  ~TransactionExecutor();
  TransactionExecutor(const TransactionExecutor&) = delete;
  TransactionExecutor& operator=(const TransactionExecutor&) = delete;

  // A new cross-shard transfer; `done` gets the client's outcome (transfer.h).
  void Start(xshard::TransferSpec spec, xshard::OutcomeCallback done);
  // Takes over `txid`'s row on `shard_id`: claims its lease for options.owner, reads
  // it and drives it to its end. `done` gets the row's outcome once it is decided
  // (kCommitted / kRejected), or kRejected with LEASED (another owner drives it),
  // NO_ROW, BAD_TRANSITION (an operator's intent that is not safe) or kInDoubt (a
  // shard did not answer within answer_within_ms; the drive goes on).
  void Resume(const std::string& shard_id, const std::string& txid, xshard::ResumeIntent intent,
              xshard::OutcomeCallback done);

  bool IsActive(const std::string& txid) const { return env_->active.contains(txid); }
  size_t active() const { return env_->active.size(); }
  const xshard::ExecutorStats& stats() const { return env_->stats; }
  const xshard::ExecutorOptions& options() const { return env_->options; }

 private:
  std::shared_ptr<xshard::FlowEnv> env_;
};

struct ResolverOptions {
  int64_t interval_ms = 1'000;  // one scan of every shard per interval
  int64_t min_age_ms = 5'000;   // rows not updated for this long are in doubt
  size_t max_per_scan = 100;    // rows taken per shard per scan
};

// Counters of the resolver (monotonic unless *_now).
struct ResolverStats {
  uint64_t scans = 0;
  uint64_t claimed = 0;        // rows taken over
  uint64_t lease_refused = 0;  // rows another router was driving
  uint64_t finished = 0;       // taken-over rows brought to an outcome
  uint64_t scan_errors = 0;    // shards that did not answer a scan
  uint64_t in_doubt_now = 0;   // rows in doubt at the last scan (all shards)
  int64_t oldest_in_doubt_ms_now = 0;  // age of the oldest of them (0: none)
};

class Resolver {
 public:
  // `shards` lists the shard ids to scan (called at each scan).
  Resolver(EventLoop& loop, TransactionExecutor& executor, xshard::ShardCaller& caller, ResolverOptions options,
           std::function<std::vector<std::string>()> shards);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  void Start();
  // One scan now (tests, and the first scan at start).
  void ScanNow();
  const ResolverStats& stats() const { return stats_; }

 private:
  struct Scan;
  void ScanShard(const std::shared_ptr<Scan>& scan, const std::string& shard_id);

  EventLoop& loop_;
  TransactionExecutor& executor_;
  xshard::ShardCaller& caller_;
  const ResolverOptions options_;
  std::function<std::vector<std::string>()> shards_;
  EventLoop::TimerId timer_ = 0;
  bool scanning_ = false;
  ResolverStats stats_;
  std::shared_ptr<bool> alive_;
};

}  // namespace wallet::router
