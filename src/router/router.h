// router.h — the router's core: takes one public API call (as RESP-style
// arguments) and answers it by sending the right command to the right shard.
//
// Both front ends use it: the RESP server (resp_server.*) for clients such as
// redis-cli and the client library, and the HTTP server (http_server.*) for
// JSON callers. The core knows the cluster from ZooKeeper (the partition map and
// the live shards' addresses, followed by watches) and reaches the shards through
// a shardlink::ShardPool (pipelined hiredis connections).
//
// Public API (docs/api.md), amounts in minor units:
//   OPEN account currency                     -> +OK
//   DEPOSIT account amount txid               -> +OK
//   WITHDRAW account amount txid              -> +OK
//   TRANSFER from to amount currency txid [MODE tcc|saga]
//                                             -> +OK; one shard command when both
//                                                accounts share a shard, else the TC/C
//                                                or saga executor (src/tcc, src/saga):
//                                                -ABORTED when it was cancelled because
//                                                a shard was unreachable, -UNAVAILABLE
//                                                while its outcome is not known yet
//   BALANCE account                           -> [available, held, currency]
//   TX txid                                   -> the transaction's state: the record of
//                                                the shard that holds its phase row (or
//                                                of the first shard that knows it) plus a
//                                                "shard" field; nil when every shard
//                                                answered and none knows it
//   TX.INDOUBT [min_age_ms] [COUNT n]         -> unfinished cross-shard txids (all shards)
//   TX.RESOLVE txid confirm|cancel            -> an operator drives a row to its end, in
//                                                the safe direction only
//   TRANSFER.BATCH [MODE tcc|saga] n from to amount currency txid [...]
//                                             -> an array of n replies, one per transfer
//                                                in the request's order (each what a
//                                                TRANSFER of that item would answer); the
//                                                same-shard items go to each shard as one
//                                                TRANSFER.BATCH, the others through the
//                                                executors. n <= kMaxTransferBatchItems
//   PING [message]                            -> +PONG
//   INFO [section]                            -> router counters
// (AUTH is handled by the front end before a call reaches the core.)
// Errors the router makes itself (common/result_code.h): MALFORMED, WRONG_ARITY,
// UNKNOWN_COMMAND, SAME_ACCOUNT (checked as a shard would), CROSS_SHARD_UNSUPPORTED,
// BUSY (a bound reached; nothing done), UNAVAILABLE (a shard unreachable or late; the
// message says "nothing was done" or "outcome unknown, retry with the same txid").
//
// Routing: account -> PartitionOf(account, P) -> owner in the cached map -> the
// owner's address. A -MOVED reply from a shard makes the router re-read the map
// and retry, at most max_moved_retries times; ZooKeeper itself is never on the
// request path (a cached map keeps routing while it is away).
//
// Threading: everything runs on the EventLoop's thread. Front ends on other
// threads (the HTTP server's) hand calls over with EventLoop::Post. Execute's
// callback runs exactly once, on the loop thread, possibly before Execute returns
// (for calls refused without a shard round trip).
//
// Example:
//   router.Execute({"TRANSFER", "7", "8", "250", "USD", "tx-1"},
//                  [](shardlink::ShardReply reply) { ... reply.is_ok() ... });
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "common/result_code.h"
#include "router/transactions.h"
#include "shardlink/shard_reply.h"
#include "xshard/transfer.h"

namespace wallet::router {

using RouterCallback = std::function<void(shardlink::ShardReply reply)>;

// The public API's commands, as counters and metric labels index them. kOther
// counts calls whose name is not in the API (answered UNKNOWN_COMMAND).
enum class RouterCommand : uint8_t {
  kOpen, kDeposit, kWithdraw, kTransfer, kBalance, kTx, kPing, kInfo, kTxInDoubt, kTxResolve, kTransferBatch,
  kOther, kCount_
};
// "OPEN", "DEPOSIT", ..., "OTHER": for INFO fields and metric labels.
std::string_view RouterCommandName(RouterCommand command);

// TRANSFER.BATCH: at most this many transfers in one call (as the shard's command),
// and the arguments of the largest call (name, MODE tcc|saga, n, 5 per transfer).
inline constexpr size_t kMaxTransferBatchItems = 10'000;
inline constexpr size_t kMaxTransferBatchArgs = 4 + 5 * kMaxTransferBatchItems;

// Upper bounds (inclusive, microseconds) of the latency histogram's buckets; one
// more bucket, +Inf, counts the calls slower than the last bound. The latency of a
// call runs from Execute() to its callback, MOVED retries included.
inline constexpr int64_t kCallLatencyBoundsUs[] = {100,    250,    500,     1'000,   2'500,   5'000,    10'000,
                                                     25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 5'000'000};
inline constexpr size_t kCallLatencyBucketCount = std::size(kCallLatencyBoundsUs) + 1;
// Slots for error counters: one per ResultCode, then one (the last) for error words
// that are not a ResultCode.
inline constexpr size_t kErrorSlots = 64;
static_assert(static_cast<size_t>(ResultCode::kCount_) < kErrorSlots, "errors_by_code needs a slot per code");
static_assert(static_cast<size_t>(RouterCommand::kCount_) <= 16, "calls_by_command needs a slot per command");

// Counters for INFO and /metrics (monotonic unless named *_now).
struct RouterStats {
  uint64_t calls = 0;
  uint64_t calls_by_command[16] = {};  // indexed by RouterCommand
  uint64_t errors_by_code[kErrorSlots] = {};  // indexed by ResultCode (shard or router errors);
                                              // the last slot: words that are not a ResultCode
  uint64_t moved_retries = 0;   // calls sent again after a -MOVED reply
  uint64_t map_refreshes = 0;   // re-reads of the map asked of ZooKeeper after a -MOVED
  uint64_t overloads = 0;       // calls refused -BUSY (router or shard link limits)
  uint64_t outcome_unknown = 0; // mutations answered -UNAVAILABLE with an unknown outcome:
                                // in doubt for the client until it retries with the txid
  uint64_t cross_shard_refused = 0;  // transfers refused -CROSS_SHARD_UNSUPPORTED (none since the
                                     // executors landed; kept for dashboards)
  // Cross-shard transfers: the executors' counters (by mode, outcome) and the resolver's.
  xshard::ExecutorStats transactions;
  ResolverStats resolver;
  uint64_t in_flight_now = 0;
  int32_t map_version_now = -1;
  uint64_t live_shards_now = 0;
  // Latency of every answered call by command: per-bucket counts (not cumulative;
  // bucket i counts latencies in (bound[i-1], bound[i]], the last one the rest), and
  // the sum, in microseconds. A Prometheus histogram is the running sum of buckets.
  uint64_t call_latency_buckets_by_command[16][kCallLatencyBucketCount] = {};
  uint64_t call_latency_sum_us_by_command[16] = {};
};

// An error reply made by the router itself: "-CODE message".
shardlink::ShardReply RouterError(ResultCode code, std::string_view message);

// Whether INFO `asked` ("" / "default" / "all" / "everything": every section, else
// one name, case-insensitive) includes the section `name`.
bool InfoSectionWanted(std::string_view asked, std::string_view name);

class Router {
 public:
  virtual ~Router() = default;
  // Runs one public API call; args[0] is the command name (case-insensitive).
  // Malformed calls are answered -MALFORMED / -WRONG_ARITY / -UNKNOWN_COMMAND
  // without reaching a shard.
  // Calls with the same order_key (a client connection's id) that go to the same
  // shard reach it in the order they were made, as a pipelining client expects
  // (OPEN then DEPOSIT). 0: no order needed (each call waits for its reply).
  virtual void Execute(std::vector<std::string> args, RouterCallback done, uint64_t order_key) = 0;
  void Execute(std::vector<std::string> args, RouterCallback done) { Execute(std::move(args), std::move(done), 0); }
  virtual RouterStats stats() const = 0;
};

}  // namespace wallet::router
