// events.h — the shard engine's events: the only things that change its state.
//
// The engine turns each accepted command into one Event (two for a TC/C confirm or
// cancel or a saga compensation with a row update: a kRowUpdate, then the branch
// event, at the same time), hands each to the EventSink (the event log, in the
// durability issue) and then applies it. Replaying
// the same events in the same order into an empty engine rebuilds exactly the same
// state, because an event carries everything its application needs, including the
// time it happened (the engine has no clock of its own).
//
// Field use per type ("-" = unused, left zero):
//
//   type            account   peer      amount  currency direction step mode  text
//   kOpen           account   -         -       yes      -         -    -     -
//   kDeposit        account   -         amount  -        -         -    -     -
//   kWithdraw       account   -         amount  -        -         -    -     -
//   kTransfer       from      to        amount  yes      -         -    -     -
//   kTccTry         account   row peer  amount  yes      yes       -    row?  -
//   kTccConfirm     -         -         -       -        yes       -    -     -
//   kTccCancel      -         -         -       -        yes       -    -     -
//   kSagaStep       account   row peer  amount  yes      yes       yes  row?  -
//   kSagaCompensate -         -         -       -        -         yes  -     -
//   kRowCreate      from      to        amount  yes      -         -    yes   -
//   kRowUpdate      -         -         -       -        -         -    -     -     (row_update)
//   kRowClaim       -         -         lease   -        -         -    -     owner
//   kCollect        -         -         max     -        -         -    -     -     (cutoff_ms)
//
// `mode` on kTccTry / kSagaStep is kNone unless the home row is created in the same
// atomic step. Every type but kOpen and kCollect carries a txid.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/money.h"
#include "common/result_code.h"

namespace wallet::shard {

enum class EventType : uint8_t {
  kOpen = 1,
  kDeposit = 2,
  kWithdraw = 3,
  kTransfer = 4,
  kTccTry = 5,
  kTccConfirm = 6,
  kTccCancel = 7,
  kSagaStep = 8,
  kSagaCompensate = 9,
  kRowCreate = 10,
  kRowUpdate = 11,
  kRowClaim = 12,
  kCollect = 13,
};
std::string_view EventTypeName(EventType type);

enum class Direction : uint8_t { kNone = 0, kDebit = 1, kCredit = 2 };
enum class Mode : uint8_t { kNone = 0, kTcc = 1, kSaga = 2 };

// The phase state table row's enums (see docs/shard-protocol.md, "Phase state table").
enum class Decision : uint8_t { kNone = 0, kConfirm = 1, kCancel = 2 };
enum class RowPhase : uint8_t {
  kTrying = 0,      // tries (TC/C) or forward steps (saga) under way
  kConfirming = 1,  // decision confirm written; second phase under way
  kCancelling = 2,  // decision cancel written; cancels / compensations under way
  kCommitted = 3,   // finished: money moved
  kAborted = 4,     // finished: nothing moved (every side rolled back)
};
inline bool IsFinished(RowPhase phase) {
  return phase == RowPhase::kCommitted || phase == RowPhase::kAborted;
}
// A branch's first phase (try / forward step) as the executor saw it.
enum class TryStatus : uint8_t { kNone = 0, kSent = 1, kOk = 2, kFailed = 3 };
// A branch's second phase (confirm/cancel, or compensation).
enum class EndStatus : uint8_t { kNone = 0, kSent = 1, kDone = 2 };

// A partial update of a phase state row: only the fields whose bit is set in `mask`.
struct RowUpdate {
  enum Field : uint16_t {
    kDecision = 1 << 0,
    kPhase = 1 << 1,
    kDebitTry = 1 << 2,
    kCreditTry = 1 << 3,
    kDebitEnd = 1 << 4,
    kCreditEnd = 1 << 5,
    kOutOfOrder = 1 << 6,
    kAttempts = 1 << 7,  // adds attempts_added
    kDebitAnswer = 1 << 8,
    kCreditAnswer = 1 << 9,
  };
  uint16_t mask = 0;
  Decision decision = Decision::kNone;
  RowPhase phase = RowPhase::kTrying;
  TryStatus debit_try = TryStatus::kNone;
  TryStatus credit_try = TryStatus::kNone;
  EndStatus debit_end = EndStatus::kNone;
  EndStatus credit_end = EndStatus::kNone;
  ResultCode debit_answer = ResultCode::kOk;  // the branch's try reply, when it failed
  ResultCode credit_answer = ResultCode::kOk;
  uint8_t out_of_order = 0;
  uint32_t attempts_added = 0;

  bool has(Field field) const { return (mask & field) != 0; }
};

struct Event {
  EventType type = EventType::kOpen;
  int64_t time_ms = 0;
  std::string_view txid;  // borrowed: valid while the event is being appended/applied
  AccountId account = 0;
  AccountId peer = 0;
  Amount amount = 0;
  Currency currency;
  Direction direction = Direction::kNone;
  uint8_t step = 0;
  Mode mode = Mode::kNone;
  std::string_view text;  // kRowClaim: the lease owner (borrowed)
  RowUpdate row_update;
  int64_t cutoff_ms = 0;  // kCollect: records finished at or before it may be removed
};

// Wire names of the enums above (lower case, as in docs/shard-protocol.md), and
// their parsers (return false on an unknown name).
std::string_view DirectionName(Direction direction);  // "DEBIT" / "CREDIT"
std::string_view ModeName(Mode mode);                 // "tcc" / "saga"
std::string_view DecisionName(Decision decision);     // "none" / "confirm" / "cancel"
std::string_view RowPhaseName(RowPhase phase);        // "trying" ... "aborted"
std::string_view TryStatusName(TryStatus status);     // "none" / "sent" / "ok" / "failed"
std::string_view EndStatusName(EndStatus status);     // "none" / "sent" / "done"
bool ParseDirection(std::string_view text, Direction* out);  // case-insensitive
bool ParseMode(std::string_view text, Mode* out);
bool ParseDecision(std::string_view text, Decision* out);
bool ParseRowPhase(std::string_view text, RowPhase* out);
bool ParseTryStatus(std::string_view text, TryStatus* out);
bool ParseEndStatus(std::string_view text, EndStatus* out);

// Receives each event before it is applied. The durability issue's log writer
// implements it; tests use it to record and replay events.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Append(const Event& event) = 0;
};

}  // namespace wallet::shard
