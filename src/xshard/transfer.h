// transfer.h — the vocabulary of a cross-shard transfer shared by the TC/C and saga
// executors (src/tcc, src/saga) and the router that runs them: what was asked
// (TransferSpec), what the client is told (TransferOutcome), the phase row as the
// executors read it back (RowView), and the executors' options and counters.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/money.h"
#include "common/result_code.h"
#include "shardlink/shard_reply.h"

namespace wallet::xshard {

enum class TransferMode : uint8_t { kTcc = 0, kSaga = 1 };
inline constexpr int kModeCount = 2;
std::string_view TransferModeName(TransferMode mode);  // "tcc" / "saga"
bool ParseTransferMode(std::string_view text, TransferMode* out);  // case-insensitive

// One cross-shard transfer as the client asked for it (arguments already checked).
struct TransferSpec {
  std::string txid;
  AccountId from = 0;  // its shard is the home: the row lives there
  AccountId to = 0;
  Amount amount = 0;
  std::string currency;  // three letters
  TransferMode mode = TransferMode::kTcc;
};

// What the client is told. Exactly one per request, and never contradicted later:
//   kCommitted  the money moved (the decision is durable); reply +OK
//   kRejected   nothing moved and nothing will: `code` is the rule (the shard's
//               INSUFFICIENT_FUNDS, UNKNOWN_ACCOUNT, ..., or ABORTED when a shard
//               could not be reached and the transfer was cancelled)
//   kInDoubt    the outcome is not known yet (a shard is slow or down): the
//               transfer will be finished by this router or a resolver; the
//               client retries with the same txid or asks TX (reply -UNAVAILABLE)
struct TransferOutcome {
  enum class Kind : uint8_t { kCommitted, kRejected, kInDoubt };
  Kind kind = Kind::kInDoubt;
  ResultCode code = ResultCode::kOk;  // kRejected: the reason; kInDoubt: kUnavailable or kBusy
  std::string message;

  static TransferOutcome Committed();
  static TransferOutcome Rejected(ResultCode code, std::string message);
  static TransferOutcome InDoubt(std::string message, ResultCode code = ResultCode::kUnavailable);
  // +OK or -CODE message, as the router answers it.
  shardlink::ShardReply ToReply() const;
};

// A phase row as ROW.GET returns it (docs/shard-protocol.md, "Phase state table").
struct RowView {
  TransferMode mode = TransferMode::kTcc;
  AccountId from = 0;
  AccountId to = 0;
  Amount amount = 0;
  std::string currency;
  std::string decision = "none";  // none / confirm / cancel
  std::string phase = "trying";   // trying / confirming / cancelling / committed / aborted
  std::string debit_try = "none", credit_try = "none";  // none / sent / ok / failed
  std::string debit_answer = "OK", credit_answer = "OK";
  std::string debit_end = "none", credit_end = "none";  // none / sent / done
  bool out_of_order = false;
  uint32_t attempts = 0;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  std::string lease_owner;
  int64_t lease_until_ms = 0;

  bool finished() const { return phase == "committed" || phase == "aborted"; }
  // The spec the row records (txid given by the caller).
  TransferSpec Spec(std::string txid) const;
  // The client's outcome of a finished row: committed -> kCommitted; aborted -> the
  // recorded refusal of a branch (its answer), or ABORTED when none was recorded.
  TransferOutcome FinalOutcome(std::string_view txid) const;
};

// Parses a ROW.GET reply (a flat field/value array). False (with *error) when it is
// not one: nil, an error, or a missing or malformed field.
bool ParseRowView(const shardlink::ShardReply& reply, RowView* out, std::string* error);

// The state of one branch in a shard's TX reply: the "state=" word of field `field`
// ("branch:CREDIT", "step:2"), or "" when the reply has no such branch.
std::string BranchStateIn(const shardlink::ShardReply& tx_reply, std::string_view field);

struct ExecutorOptions {
  std::string owner = "router";      // lease owner name (the router id); 1-64 visible chars
  int64_t answer_within_ms = 2'000;  // a client waits at most this long; then kInDoubt
  int first_phase_attempts = 3;      // sends of a try / forward step that got no answer
                                     // before the transaction gives up on it (TC/C cancels;
                                     // a saga keeps going forward in the background)
  int64_t retry_initial_ms = 20;     // backoff of a resend; doubled each time ...
  int64_t retry_max_ms = 1'000;      // ... up to this
  int64_t lease_ms = 10'000;         // a driver's claim on a row (renewed on each retry)
  int64_t follow_poll_ms = 20;       // a repeated request polls the row this often
};

// Counters (monotonic unless *_now), indexed by TransferMode where an array.
struct ExecutorStats {
  uint64_t started[kModeCount] = {};          // new transfers (client requests)
  uint64_t committed[kModeCount] = {};        // clients told committed
  uint64_t rejected[kModeCount] = {};         // clients told rejected (business rule)
  uint64_t aborted[kModeCount] = {};          // clients told ABORTED (shard unreachable)
  uint64_t answered_in_doubt[kModeCount] = {};  // clients told the outcome is not known yet
  uint64_t followed[kModeCount] = {};         // repeated requests that read the row instead
  uint64_t finished_committed[kModeCount] = {};  // rows this router brought to committed
  uint64_t finished_aborted[kModeCount] = {};    // ... to aborted
  uint64_t resends = 0;                       // messages sent again after no answer / a transient error
  uint64_t resumed = 0;                       // rows taken over (resolver or operator)
  uint64_t lost_leases = 0;                   // drives stopped because another owner held the row
  uint64_t invariant_alarms = 0;              // replies that contradict the protocol (logged)
  uint64_t active_now = 0;                    // transactions being driven here now
};

}  // namespace wallet::xshard
