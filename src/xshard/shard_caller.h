// shard_caller.h — how the cross-shard executors reach shards: the one seam between
// the TC/C and saga flows (src/tcc, src/saga) and the network.
//
// The router implements ShardCaller over its partition map and ShardPool (MOVED
// replies retried there); the executors' fault tests implement it over real shard
// processes with faults injected between the flow and the wire (a message dropped,
// a reply lost, a message delivered twice or late). The flows never see sockets.
//
// Example:
//   caller.CallOwnerOf(from, {"TCC.TRY", txid, "DEBIT", ...}, [](CallResult result) {
//     if (result.Ok()) ...; else if (result.Transient()) ...; else ... result.Code() ...;
//   });
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/money.h"
#include "common/result_code.h"
#include "shardlink/shard_reply.h"

namespace wallet::xshard {

// What became of one command sent to a shard.
struct CallResult {
  enum class Kind : uint8_t {
    kReply,    // the shard answered (an error reply included)
    kNotSent,  // refused before it left (no route, link down, overload): it did not run
    kUnknown,  // sent, but no answer came (link lost, timeout): it may have run
  };
  Kind kind = Kind::kReply;
  shardlink::ShardReply reply;  // kReply
  std::string why;              // kNotSent / kUnknown: for logs and client messages

  static CallResult Reply(shardlink::ShardReply reply);
  static CallResult NotSent(std::string why);
  static CallResult Unknown(std::string why);

  // A success reply: +OK, +EMPTY (a fence was recorded) or +REPLAYED.
  bool Ok() const;
  bool Empty() const { return IsStatus("EMPTY"); }
  bool Replayed() const { return IsStatus("REPLAYED"); }
  // An error reply's code (nullopt for successes, link failures and unknown words).
  std::optional<ResultCode> Code() const;
  // Worth sending again later: not sent, unknown, or an error of the retry class
  // (BUSY, LOG_UNAVAILABLE, MOVED past the router's retries, LEASED, UNAVAILABLE).
  bool Transient() const;
  // "+OK", "-INSUFFICIENT_FUNDS ...", "not sent: why", "unknown: why".
  std::string ToString() const;

 private:
  bool IsStatus(std::string_view word) const;
};

using CallDone = std::function<void(CallResult)>;

class ShardCaller {
 public:
  virtual ~ShardCaller() = default;
  // Sends `args` to the shard that owns `account`'s partition now. `done` runs once,
  // on the loop thread; it may run before the call returns.
  virtual void CallOwnerOf(AccountId account, std::vector<std::string> args, CallDone done) = 0;
  // Sends `args` to shard `shard_id` (where a resolver found a row).
  virtual void CallShard(const std::string& shard_id, std::vector<std::string> args, CallDone done) = 0;
};

}  // namespace wallet::xshard
