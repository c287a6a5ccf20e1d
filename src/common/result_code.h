// result_code.h — one named result per business rule.
//
// Every component (engine, shard server, router, executors, client library) speaks
// these codes. Each has a stable wire name (the first word of a RESP error reply,
// e.g. "-INSUFFICIENT_FUNDS account 7 has 100 available, needs 250") and a class
// that tells the caller what to do next, in the spirit of absl::StatusCode:
//
//   kRejected   — the request is wrong for the current state; do not retry it as is.
//   kRetry      — a transient condition (overload, not owner yet); retry later.
//   kProtocol   — the request could not be understood; fix the caller.
//
// Example:
//   if (code != ResultCode::kOk) reply.Error(ResultCodeName(code), message);
#pragma once

#include <cstdint>
#include <string_view>

namespace wallet {

enum class ResultCode : uint8_t {
  kOk = 0,
  // Money rules.
  kInsufficientFunds,    // available < amount
  kUnknownAccount,       // account was never opened here
  kAccountExists,        // OPEN of an existing account with another currency
  kCurrencyMismatch,     // account currency differs from the request's
  kOverflow,             // the change would overflow a signed 64-bit balance
  kTxidReused,           // same transaction id, different arguments
  kSameAccount,          // transfer from an account to itself
  // Partitions.
  kWrongPartition,       // MOVED: this shard does not own the account's partition
  // TC/C and saga branches.
  kFenced,               // a try/step arrived after its cancel/compensation (fence)
  kNotTried,             // confirm of a branch that was never tried
  kAlreadyCancelled,     // confirm of a cancelled branch
  kAlreadyConfirmed,     // cancel of a confirmed branch
  // Phase state table.
  kRowExists,            // ROW.CREATE of an existing row with other content
  kNoRow,                // row not found
  kDecisionFixed,        // attempt to change a decision once written
  kBadTransition,        // phase change that the row's rules forbid
  kLeased,               // row is claimed by another owner whose lease has not expired
  // Request shape.
  kMalformed,            // bad syntax, bad number, bad currency code, bad txid
  kUnknownCommand,
  kWrongArity,
  kNotAuthenticated,
  kAuthFailed,
  kProtocolError,        // the RESP stream itself is broken (connection closes)
  kLimitExceeded,        // argument count/size or query buffer above a hard limit
  kBusy,                 // a bounded table or queue is full; retry later
  kLogUnavailable,       // the event log cannot be written (disk full, I/O error): mutations
                         // refused until it can; retry later with the same txid
  kCrossShardUnsupported,  // router: a transfer between two shards before the executors exist
  kUnavailable,          // router: the owning shard could not be reached or did not answer
  kAborted,              // router: a cross-shard transfer was cancelled because a shard could
                         // not be reached in time; nothing moved; retry with a new txid
  kCount_,               // not a code
};

enum class ResultClass : uint8_t { kOk, kRejected, kRetry, kProtocol };

// Stable wire name, e.g. "INSUFFICIENT_FUNDS". Never changes once released.
std::string_view ResultCodeName(ResultCode code);
ResultClass ResultCodeClass(ResultCode code);
// Inverse of ResultCodeName (exact, upper case). False for an unknown name.
bool ParseResultCode(std::string_view name, ResultCode* out);

}  // namespace wallet
