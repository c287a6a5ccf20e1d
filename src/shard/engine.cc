#include "shard/engine.h"

#include <algorithm>
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/strings.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace wallet::shard {

namespace {

Result Fail(ResultCode code, std::string message) {
  Result result;
  result.code = code;
  result.message = std::move(message);
  return result;
}

Result WithNote(Result::Note note) {
  Result result;
  result.note = note;
  return result;
}

bool ValidDirection(Direction direction) {
  return direction == Direction::kDebit || direction == Direction::kCredit;
}

// May a row move from `from` to `to`? (Staying put is always allowed.)
bool PhaseTransitionAllowed(RowPhase from, RowPhase to) {
  if (from == to) return true;
  switch (from) {
    case RowPhase::kTrying:
      return true;
    case RowPhase::kConfirming:
      return to == RowPhase::kCommitted;
    case RowPhase::kCancelling:
      return to == RowPhase::kAborted;
    case RowPhase::kCommitted:
    case RowPhase::kAborted:
      return false;
  }
  return false;
}

// The decision a phase needs, or kNone when any will do.
Decision DecisionRequiredBy(RowPhase phase) {
  switch (phase) {
    case RowPhase::kConfirming:
    case RowPhase::kCommitted:
      return Decision::kConfirm;
    case RowPhase::kCancelling:
    case RowPhase::kAborted:
      return Decision::kCancel;
    case RowPhase::kTrying:
      break;
  }
  return Decision::kNone;
}

// Would applying `update` to `row` change any field?
bool UpdateChangesRow(const PhaseRow& row, const RowUpdate& update) {
  using F = RowUpdate;
  return (update.has(F::kDecision) && update.decision != row.decision) ||
         (update.has(F::kPhase) && update.phase != row.phase) ||
         (update.has(F::kDebitTry) && update.debit_try != row.debit_try) ||
         (update.has(F::kCreditTry) && update.credit_try != row.credit_try) ||
         (update.has(F::kDebitEnd) && update.debit_end != row.debit_end) ||
         (update.has(F::kCreditEnd) && update.credit_end != row.credit_end) ||
         (update.has(F::kDebitAnswer) && update.debit_answer != row.debit_answer) ||
         (update.has(F::kCreditAnswer) && update.credit_answer != row.credit_answer) ||
         (update.has(F::kOutOfOrder) && (update.out_of_order != 0) != row.out_of_order) ||
         (update.has(F::kAttempts) && update.attempts_added != 0);
}

// A row update's own shape: something to set, every value in range.
bool CheckUpdateValues(const RowUpdate& update, Result* result) {
  if (update.mask == 0) {
    *result = Fail(ResultCode::kMalformed, "nothing to set");
    return false;
  }
  if ((update.has(RowUpdate::kDecision) && update.decision != Decision::kConfirm &&
       update.decision != Decision::kCancel) ||
      (update.has(RowUpdate::kPhase) && update.phase > RowPhase::kAborted) ||
      (update.has(RowUpdate::kDebitTry) && update.debit_try > TryStatus::kFailed) ||
      (update.has(RowUpdate::kCreditTry) && update.credit_try > TryStatus::kFailed) ||
      (update.has(RowUpdate::kDebitEnd) && update.debit_end > EndStatus::kDone) ||
      (update.has(RowUpdate::kCreditEnd) && update.credit_end > EndStatus::kDone) ||
      (update.has(RowUpdate::kDebitAnswer) && update.debit_answer >= ResultCode::kCount_) ||
      (update.has(RowUpdate::kCreditAnswer) && update.credit_answer >= ResultCode::kCount_) ||
      (update.has(RowUpdate::kOutOfOrder) && update.out_of_order > 1)) {
    *result = Fail(ResultCode::kMalformed, "row field value out of range");
    return false;
  }
  return true;
}

// The row's rules for `update` (ROW.SET's): sets *changes; an update that changes
// nothing is always allowed (a replay), one that changes a finished row never is.
bool CheckUpdateAgainstRow(std::string_view txid, const PhaseRow& row, const RowUpdate& update,
                           bool* changes, Result* result) {
  *changes = UpdateChangesRow(row, update);
  if (!*changes) return true;
  if (IsFinished(row.phase)) {
    *result = Fail(ResultCode::kBadTransition, StrCat("row ", txid, " is finished"));
    return false;
  }
  Decision decision = row.decision;
  if (update.has(RowUpdate::kDecision)) {
    if (row.decision != Decision::kNone && row.decision != update.decision) {
      *result = Fail(ResultCode::kDecisionFixed,
                     StrCat("row ", txid, " has already decided to ",
                            row.decision == Decision::kConfirm ? "confirm" : "cancel"));
      return false;
    }
    decision = update.decision;
  }
  if (update.has(RowUpdate::kPhase)) {
    if (!PhaseTransitionAllowed(row.phase, update.phase)) {
      *result = Fail(ResultCode::kBadTransition,
                     StrCat("row ", txid, " cannot move to that phase from its current one"));
      return false;
    }
    Decision required = DecisionRequiredBy(update.phase);
    if (required != Decision::kNone && decision != required) {
      *result = Fail(ResultCode::kBadTransition,
                     StrCat("that phase needs the decision ",
                            required == Decision::kConfirm ? "confirm" : "cancel",
                            " written first or with it"));
      return false;
    }
  }
  return true;
}

}  // namespace

std::string_view BranchStateName(BranchState state) {
  switch (state) {
    case BranchState::kTried:
      return "tried";
    case BranchState::kConfirmed:
      return "confirmed";
    case BranchState::kCancelled:
      return "cancelled";
    case BranchState::kDone:
      return "done";
    case BranchState::kCompensated:
      return "compensated";
    case BranchState::kFenced:
      return "fenced";
  }
  return "unknown";
}

bool Engine::DistributedRecord::finished() const {
  if (row != nullptr && !IsFinished(row->phase)) return false;
  for (const Branch& branch : branches) {
    if (branch.state == BranchState::kTried) return false;
  }
  return true;
}

Engine::Engine(const EngineOptions& options, PartitionSet owned)
    : options_(options), owned_(std::move(owned)) {
  WALLET_CHECK(options_.partition_count >= 1 && options_.partition_count <= kMaxPartitionCount,
               "partition count out of range");
  WALLET_CHECK(owned_.partition_count() == options_.partition_count,
               "owned partition set has another partition count");
}

void Engine::set_owned_partitions(PartitionSet owned) {
  WALLET_CHECK(owned.partition_count() == options_.partition_count,
               "owned partition set has another partition count");
  owned_ = std::move(owned);
}

// ---------------------------------------------------------------------------
// Validation helpers. Each returns false and fills *result when its rule fails.

bool Engine::CheckOwned(AccountId account, Result* result) const {
  uint32_t partition = PartitionOf(account, options_.partition_count);
  if (owned_.Contains(partition)) return true;
  *result = Fail(ResultCode::kWrongPartition,
                 StrCat("account ", account, " is in partition ", partition,
                              ", which this shard does not own"));
  result->partition = partition;
  return false;
}

bool Engine::CheckTxid(std::string_view txid, Result* result) const {
  if (IsValidTxid(txid)) return true;
  *result = Fail(ResultCode::kMalformed,
                 StrCat("transaction id must be 1-", kMaxTxidBytes,
                              " visible ASCII characters"));
  return false;
}

bool Engine::CheckRoomForRecord(Result* result) const {
  if (record_count() < options_.max_txn_records) return true;
  *result = Fail(ResultCode::kBusy,
                 StrCat("idempotency table full (", record_count(),
                              " records within the window); retry later"));
  return false;
}

const Engine::Account* Engine::FindAccount(AccountId account, Result* result) const {
  auto it = accounts_.find(account);
  if (it != accounts_.end()) return &it->second;
  *result = Fail(ResultCode::kUnknownAccount, StrCat("account ", account, " is not open"));
  return nullptr;
}

bool Engine::CheckCurrency(AccountId account, const Account& record, Currency currency,
                           Result* result) const {
  if (record.currency == currency.packed()) return true;
  *result = Fail(ResultCode::kCurrencyMismatch,
                 StrCat("account ", account, " holds ",
                              Currency::FromPacked(record.currency).ToString(), ", not ",
                              currency.ToString()));
  return false;
}

Engine::Reserve Engine::ReserveOf(AccountId account, const Account& record) const {
  if ((record.flags & kHasReserve) == 0) return Reserve{};
  auto it = reserves_.find(account);
  WALLET_CHECK(it != reserves_.end(), "reserve flag without reserve");
  return it->second;
}

bool Engine::CheckHeadroom(AccountId account, const Account& record, Amount amount,
                           Result* result) const {
  Reserve reserve = ReserveOf(account, record);
  // available + held + pending <= INT64_MAX is an invariant, so these sums are safe.
  Amount total = record.available + reserve.held + reserve.pending_credit;
  Amount after;
  if (CheckedAdd(total, amount, &after)) return true;
  *result = Fail(ResultCode::kOverflow,
                 StrCat("crediting ", amount, " to account ", account,
                              " would overflow its balance"));
  return false;
}

bool Engine::CheckFunds(AccountId account, const Account& record, Amount amount,
                        Result* result) const {
  if (record.available >= amount) return true;
  *result = Fail(ResultCode::kInsufficientFunds,
                 StrCat("account ", account, " has ", record.available,
                              " available, needs ", amount));
  return false;
}

bool Engine::CheckRowSpec(const RowSpec& spec, Result* result) const {
  if (spec.mode != Mode::kTcc && spec.mode != Mode::kSaga) {
    *result = Fail(ResultCode::kMalformed, "row mode must be tcc or saga");
    return false;
  }
  if (spec.amount <= 0 || !spec.currency.valid()) {
    *result = Fail(ResultCode::kMalformed, "row needs a positive amount and a currency");
    return false;
  }
  if (spec.from == spec.to) {
    *result = Fail(ResultCode::kSameAccount, "a transfer needs two different accounts");
    return false;
  }
  return CheckOwned(spec.from, result);
}

const Engine::LocalRecord* Engine::FindLocal(std::string_view txid) const {
  TxidDigest digest = DigestTxid(txid);
  const LocalIndex& part = IndexPart(digest);
  auto it = part.find(digest);
  return it == part.end() ? nullptr : it->second;
}

Result Engine::ReplayLocal(std::string_view txid, const LocalRecord& record, EventType type,
                           AccountId account, AccountId peer, Amount amount,
                           Currency currency) const {
  if (record.type == type && record.account == account && record.peer == peer &&
      record.amount == amount && record.currency == currency) {
    return WithNote(Result::Note::kReplayed);
  }
  return Fail(ResultCode::kTxidReused,
              StrCat("transaction id ", txid, " was already used for ",
                           EventTypeName(record.type), " with other arguments"));
}

// ---------------------------------------------------------------------------
// Accounts and local transactions.

Result Engine::Open(AccountId account, Currency currency, int64_t now_ms) {
  Result result;
  if (!currency.valid()) return Fail(ResultCode::kMalformed, "currency must be 3 letters A-Z");
  if (!CheckOwned(account, &result)) return result;
  if (auto it = accounts_.find(account); it != accounts_.end()) {
    if (it->second.currency == currency.packed()) return WithNote(Result::Note::kReplayed);
    return Fail(ResultCode::kAccountExists,
                StrCat("account ", account, " is already open in ",
                             Currency::FromPacked(it->second.currency).ToString()));
  }
  if (accounts_.size() >= options_.max_accounts) {
    return Fail(ResultCode::kBusy,
                StrCat("account table full (", options_.max_accounts, " accounts)"));
  }
  Event event;
  event.type = EventType::kOpen;
  event.time_ms = EventTime(now_ms);
  event.account = account;
  event.currency = currency;
  Commit(event);
  return result;
}

Result Engine::Deposit(std::string_view txid, AccountId account, Amount amount, int64_t now_ms) {
  return SingleAccountOp(EventType::kDeposit, txid, account, amount, now_ms);
}

Result Engine::Withdraw(std::string_view txid, AccountId account, Amount amount, int64_t now_ms) {
  return SingleAccountOp(EventType::kWithdraw, txid, account, amount, now_ms);
}

// Deposit and withdrawal: money enters or leaves through one account.
Result Engine::SingleAccountOp(EventType type, std::string_view txid, AccountId account,
                               Amount amount, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (amount <= 0) return Fail(ResultCode::kMalformed, "amount must be a positive integer");
  if (!CheckOwned(account, &result)) return result;
  if (const LocalRecord* local = FindLocal(txid); local != nullptr) {
    return ReplayLocal(txid, *local, type, account, 0, amount, Currency());
  }
  if (!distributed_.empty() && distributed_.contains(txid)) {
    return Fail(ResultCode::kTxidReused,
                StrCat("transaction id ", txid, " belongs to a cross-shard transfer"));
  }
  if (!CheckRoomForRecord(&result)) return result;
  const Account* record = FindAccount(account, &result);
  if (record == nullptr) return result;
  bool ok = type == EventType::kDeposit ? CheckHeadroom(account, *record, amount, &result)
                                        : CheckFunds(account, *record, amount, &result);
  if (!ok) return result;
  Event event;
  event.type = type;
  event.time_ms = EventTime(now_ms);
  event.txid = txid;
  event.account = account;
  event.amount = amount;
  Commit(event);
  return result;
}

Result Engine::Transfer(std::string_view txid, AccountId from, AccountId to, Amount amount,
                        Currency currency, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (amount <= 0) return Fail(ResultCode::kMalformed, "amount must be a positive integer");
  if (!currency.valid()) return Fail(ResultCode::kMalformed, "currency must be 3 letters A-Z");
  if (from == to) return Fail(ResultCode::kSameAccount, "a transfer needs two different accounts");
  if (!CheckOwned(from, &result) || !CheckOwned(to, &result)) return result;
  if (const LocalRecord* local = FindLocal(txid); local != nullptr) {
    return ReplayLocal(txid, *local, EventType::kTransfer, from, to, amount, currency);
  }
  if (!distributed_.empty() && distributed_.contains(txid)) {
    return Fail(ResultCode::kTxidReused,
                StrCat("transaction id ", txid, " belongs to a cross-shard transfer"));
  }
  if (!CheckRoomForRecord(&result)) return result;
  const Account* source = FindAccount(from, &result);
  if (source == nullptr) return result;
  const Account* target = FindAccount(to, &result);
  if (target == nullptr) return result;
  if (!CheckCurrency(from, *source, currency, &result) ||
      !CheckCurrency(to, *target, currency, &result) ||
      !CheckFunds(from, *source, amount, &result) ||
      !CheckHeadroom(to, *target, amount, &result)) {
    return result;
  }
  Event event;
  event.type = EventType::kTransfer;
  event.time_ms = EventTime(now_ms);
  event.txid = txid;
  event.account = from;
  event.peer = to;
  event.amount = amount;
  event.currency = currency;
  Commit(event);
  return result;
}

// ---------------------------------------------------------------------------
// TC/C branches.

Result Engine::TccTry(std::string_view txid, Direction direction, AccountId account,
                      Amount amount, Currency currency, const RowSpec* home, int64_t now_ms) {
  return FirstPhase(Mode::kTcc, txid, 0, direction, account, amount, currency, home, now_ms);
}

bool Engine::CheckNotLocal(std::string_view txid, Result* result) const {
  if (FindLocal(txid) == nullptr) return true;
  *result = Fail(ResultCode::kTxidReused,
                 StrCat("transaction id ", txid, " belongs to a local transaction"));
  return false;
}

bool Engine::CheckBranchMode(std::string_view txid, const DistributedRecord& record, Mode mode,
                             Result* result) const {
  bool row_mode_differs = record.row != nullptr && record.row->spec.mode != mode;
  for (const Branch& branch : record.branches) {
    if (branch.mode != mode || row_mode_differs) {
      *result = Fail(ResultCode::kTxidReused,
                     StrCat("transaction id ", txid, " belongs to a ",
                            mode == Mode::kTcc ? "saga" : "TC/C transfer"));
      return false;
    }
  }
  if (row_mode_differs) {
    *result = Fail(ResultCode::kTxidReused,
                   StrCat("transaction id ", txid, " belongs to a ", ModeName(record.row->spec.mode),
                          " transfer"));
    return false;
  }
  return true;
}

// The first phase of a branch: a TC/C try (mode kTcc; branches keyed by direction)
// or a saga step (mode kSaga; keyed by step). A debit needs available funds, a credit
// headroom; with `home`, the debit also creates the transaction's phase row.
Result Engine::FirstPhase(Mode mode, std::string_view txid, uint8_t step, Direction direction,
                          AccountId account, Amount amount, Currency currency,
                          const RowSpec* home, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (!ValidDirection(direction)) return Fail(ResultCode::kMalformed, "direction must be DEBIT or CREDIT");
  if (amount <= 0) return Fail(ResultCode::kMalformed, "amount must be a positive integer");
  if (!currency.valid()) return Fail(ResultCode::kMalformed, "currency must be 3 letters A-Z");
  if (home != nullptr) {
    if (direction != Direction::kDebit) {
      return Fail(ResultCode::kMalformed, "the home row is created with the DEBIT branch only");
    }
    if (home->mode != mode || home->from != account || home->amount != amount ||
        home->currency != currency) {
      return Fail(ResultCode::kMalformed, "the home row must describe this debit");
    }
    if (!CheckRowSpec(*home, &result)) return result;
  }
  if (!CheckOwned(account, &result) || !CheckNotLocal(txid, &result)) return result;
  auto found = distributed_.find(txid);
  if (found != distributed_.end()) {
    const DistributedRecord& record = found->second;
    if (!CheckBranchMode(txid, record, mode, &result)) return result;
    if (home != nullptr && record.row != nullptr && !(record.row->spec == *home)) {
      return Fail(ResultCode::kRowExists,
                  StrCat("transaction ", txid, " already has a row with other content"));
    }
    const Branch* existing = nullptr;
    for (const Branch& branch : record.branches) {
      bool same_branch = mode == Mode::kTcc ? branch.direction == direction : branch.step == step;
      if (same_branch) existing = &branch;
    }
    // A new branch of a transaction that has decided to cancel, or has finished,
    // would be a hold (or debit) that nothing will ever undo: refuse it like a fence.
    if (existing == nullptr && record.row != nullptr &&
        (record.row->decision == Decision::kCancel || IsFinished(record.row->phase))) {
      return Fail(ResultCode::kFenced,
                  StrCat("transaction ", txid, " has already ",
                         IsFinished(record.row->phase) ? "finished" : "decided to cancel"));
    }
    for (const Branch& branch : record.branches) {
      if (&branch != existing) continue;
      if (branch.state == BranchState::kFenced) {
        return Fail(ResultCode::kFenced,
                    mode == Mode::kTcc
                        ? StrCat(DirectionName(direction), " branch of ", txid,
                                 " was cancelled before its try arrived")
                        : StrCat("step ", step, " of ", txid, " was compensated before it arrived"));
      }
      if (branch.direction != direction || branch.account != account ||
          branch.amount != amount || branch.currency != currency ||
          (home != nullptr && record.row == nullptr)) {
        return Fail(ResultCode::kTxidReused,
                    StrCat("transaction id ", txid, " was used for this branch with other arguments"));
      }
      return WithNote(Result::Note::kReplayed);
    }
  } else if (!CheckRoomForRecord(&result)) {
    return result;
  }
  const Account* record = FindAccount(account, &result);
  if (record == nullptr || !CheckCurrency(account, *record, currency, &result)) return result;
  if (direction == Direction::kDebit ? !CheckFunds(account, *record, amount, &result)
                                     : !CheckHeadroom(account, *record, amount, &result)) {
    return result;
  }
  Event event;
  event.type = mode == Mode::kTcc ? EventType::kTccTry : EventType::kSagaStep;
  event.time_ms = EventTime(now_ms);
  event.txid = txid;
  event.step = step;
  event.direction = direction;
  event.account = account;
  event.amount = amount;
  event.currency = currency;
  if (home != nullptr) {
    event.mode = mode;
    event.peer = home->to;
  }
  Commit(event);
  return result;
}

Result Engine::TccConfirm(std::string_view txid, Direction direction, int64_t now_ms,
                          const RowUpdate* row_update) {
  return SecondPhase(EventType::kTccConfirm, txid, direction, 0, row_update, now_ms);
}

Result Engine::TccCancel(std::string_view txid, Direction direction, int64_t now_ms,
                         const RowUpdate* row_update) {
  return SecondPhase(EventType::kTccCancel, txid, direction, 0, row_update, now_ms);
}

// The branch rules of a TC/C confirm or cancel (the ordering table in
// docs/shard-protocol.md), without the decision guard. The caller has checked the
// txid, the direction and the record's mode.
Result Engine::PlanTccEnd(EventType type, std::string_view txid, Direction direction,
                          const DistributedRecord* record, Event* event, bool* commit) const {
  Result result;
  const bool confirm = type == EventType::kTccConfirm;
  event->type = type;
  event->direction = direction;
  *commit = false;
  if (record != nullptr) {
    for (const Branch& branch : record->branches) {
      if (branch.direction != direction) continue;
      switch (branch.state) {
        case BranchState::kConfirmed:
          if (confirm) return WithNote(Result::Note::kReplayed);
          return Fail(ResultCode::kAlreadyConfirmed,
                      StrCat(DirectionName(direction), " branch of ", txid, " was confirmed"));
        case BranchState::kCancelled:
        case BranchState::kFenced:
          if (confirm) {
            return Fail(ResultCode::kAlreadyCancelled,
                        StrCat(DirectionName(direction), " branch of ", txid, " was cancelled"));
          }
          return WithNote(branch.state == BranchState::kCancelled ? Result::Note::kReplayed
                                                                  : Result::Note::kEmptyRollback);
        case BranchState::kTried:
          *commit = true;
          return result;
        case BranchState::kDone:
        case BranchState::kCompensated:
          break;
      }
    }
  }
  if (confirm) {
    return Fail(ResultCode::kNotTried,
                StrCat(DirectionName(direction), " branch of ", txid, " was never tried here"));
  }
  // No try seen: record a fence so that a late try is refused.
  if (record == nullptr && !CheckRoomForRecord(&result)) return result;
  *commit = true;
  return WithNote(Result::Note::kEmptyRollback);
}

// ---------------------------------------------------------------------------
// Saga steps.

Result Engine::SagaStep(std::string_view txid, uint8_t step, Direction direction,
                        AccountId account, Amount amount, Currency currency,
                        const RowSpec* home, int64_t now_ms) {
  if (step < 1 || step > options_.max_saga_step) {
    return Fail(ResultCode::kMalformed, StrCat("saga step must be 1-", options_.max_saga_step));
  }
  return FirstPhase(Mode::kSaga, txid, step, direction, account, amount, currency, home, now_ms);
}

Result Engine::SagaCompensate(std::string_view txid, uint8_t step, int64_t now_ms,
                              const RowUpdate* row_update) {
  return SecondPhase(EventType::kSagaCompensate, txid, Direction::kNone, step, row_update, now_ms);
}

// The rules of a saga compensation, without the decision guard. The caller has
// checked the txid, the step and the record's mode.
Result Engine::PlanCompensate(uint8_t step, const DistributedRecord* record, Event* event,
                              bool* commit) const {
  Result result;
  event->type = EventType::kSagaCompensate;
  event->step = step;
  *commit = false;
  if (record != nullptr) {
    for (const Branch& branch : record->branches) {
      if (branch.step != step) continue;
      switch (branch.state) {
        case BranchState::kCompensated:
          return WithNote(Result::Note::kReplayed);
        case BranchState::kFenced:
          return WithNote(Result::Note::kEmptyRollback);
        case BranchState::kDone: {
          // Undo: a debit is credited back, a credit is debited back.
          const Account* account = FindAccount(branch.account, &result);
          if (account == nullptr) return result;
          bool ok = branch.direction == Direction::kDebit
                        ? CheckHeadroom(branch.account, *account, branch.amount, &result)
                        : CheckFunds(branch.account, *account, branch.amount, &result);
          if (!ok) return result;
          *commit = true;
          return result;
        }
        case BranchState::kTried:
        case BranchState::kConfirmed:
        case BranchState::kCancelled:
          break;
      }
    }
  } else if (!CheckRoomForRecord(&result)) {
    return result;
  }
  *commit = true;  // no step seen: a fence
  return WithNote(Result::Note::kEmptyRollback);
}

// ---------------------------------------------------------------------------
// Second phases with an optional row update, and the decision guard.

Result Engine::SecondPhase(EventType type, std::string_view txid, Direction direction,
                           uint8_t step, const RowUpdate* row_update, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (type == EventType::kSagaCompensate) {
    if (step < 1 || step > options_.max_saga_step) {
      return Fail(ResultCode::kMalformed, StrCat("saga step must be 1-", options_.max_saga_step));
    }
  } else if (!ValidDirection(direction)) {
    return Fail(ResultCode::kMalformed, "direction must be DEBIT or CREDIT");
  }
  if (row_update != nullptr && !CheckUpdateValues(*row_update, &result)) return result;
  if (!CheckNotLocal(txid, &result)) return result;
  auto found = distributed_.find(txid);
  const DistributedRecord* record = found == distributed_.end() ? nullptr : &found->second;
  const PhaseRow* row = record == nullptr ? nullptr : record->row.get();
  const Mode mode = type == EventType::kSagaCompensate ? Mode::kSaga : Mode::kTcc;
  if (record != nullptr && !CheckBranchMode(txid, *record, mode, &result)) return result;

  // 1. The row update, as RowSet checks it.
  bool update_changes = false;
  if (row_update != nullptr) {
    if (row == nullptr) return Fail(ResultCode::kNoRow, StrCat("no row for ", txid, " on this shard"));
    if (!CheckUpdateAgainstRow(txid, *row, *row_update, &update_changes, &result)) return result;
  }

  // 2. The branch's own rules.
  Event event;
  bool commit = false;
  result = type == EventType::kSagaCompensate
               ? PlanCompensate(step, record, &event, &commit)
               : PlanTccEnd(type, txid, direction, record, &event, &commit);
  if (!result.ok()) return result;

  // 3. The decision guard, against the row as it will be after the update.
  if (row != nullptr) {
    const Decision decision = row_update != nullptr && row_update->has(RowUpdate::kDecision)
                                  ? row_update->decision
                                  : row->decision;
    const Decision required =
        type == EventType::kTccConfirm ? Decision::kConfirm : Decision::kCancel;
    const std::string_view what = type == EventType::kTccConfirm  ? "a confirm"
                                  : type == EventType::kTccCancel ? "a cancel"
                                                                  : "a compensation";
    if (decision == Decision::kNone) {
      return Fail(ResultCode::kBadTransition,
                  StrCat("row ", txid, " has no decision yet and ", what,
                         " needs one: write the decision first, e.g. ROW decision ",
                         DecisionName(required)));
    }
    if (decision != required) {
      return Fail(ResultCode::kDecisionFixed,
                  StrCat("row ", txid, " has decided to ", DecisionName(decision), "; ", what,
                         " needs the decision ", DecisionName(required)));
    }
  }

  // 4. Commit: the row update first, then the branch event, at the same time.
  const int64_t time_ms = EventTime(now_ms);
  if (update_changes) {
    Event update;
    update.type = EventType::kRowUpdate;
    update.time_ms = time_ms;
    update.txid = txid;
    update.row_update = *row_update;
    Commit(update);
  }
  if (commit) {
    event.time_ms = time_ms;
    event.txid = txid;
    Commit(event);
  }
  return result;
}

// ---------------------------------------------------------------------------
// Phase state table.

Result Engine::RowCreate(std::string_view txid, const RowSpec& spec, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result) || !CheckRowSpec(spec, &result)) return result;
  if (!CheckNotLocal(txid, &result)) return result;
  auto found = distributed_.find(txid);
  if (found != distributed_.end()) {
    if (found->second.row != nullptr) {
      if (found->second.row->spec == spec) return WithNote(Result::Note::kReplayed);
      return Fail(ResultCode::kRowExists,
                  StrCat("transaction ", txid, " already has a row with other content"));
    }
  } else if (!CheckRoomForRecord(&result)) {
    return result;
  }
  Event event;
  event.type = EventType::kRowCreate;
  event.time_ms = EventTime(now_ms);
  event.txid = txid;
  event.mode = spec.mode;
  event.account = spec.from;
  event.peer = spec.to;
  event.amount = spec.amount;
  event.currency = spec.currency;
  Commit(event);
  return result;
}

Result Engine::RowSet(std::string_view txid, const RowUpdate& update, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result) || !CheckUpdateValues(update, &result)) return result;
  const PhaseRow* row = FindRow(txid);
  if (row == nullptr) return Fail(ResultCode::kNoRow, StrCat("no row for ", txid));
  bool changes = false;
  if (!CheckUpdateAgainstRow(txid, *row, update, &changes, &result)) return result;
  if (!changes) return WithNote(Result::Note::kReplayed);
  Event event;
  event.type = EventType::kRowUpdate;
  event.time_ms = EventTime(now_ms);
  event.txid = txid;
  event.row_update = update;
  Commit(event);
  return result;
}

Result Engine::RowClaim(std::string_view txid, std::string_view owner, int64_t lease_ms,
                        int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (!IsValidTxid(owner)) {
    return Fail(ResultCode::kMalformed, "owner must be 1-64 visible ASCII characters");
  }
  if (lease_ms <= 0 || lease_ms > kMaxLeaseMs) {
    return Fail(ResultCode::kMalformed, StrCat("lease must be 1-", kMaxLeaseMs, " ms"));
  }
  const PhaseRow* row = FindRow(txid);
  if (row == nullptr) return Fail(ResultCode::kNoRow, StrCat("no row for ", txid));
  if (IsFinished(row->phase)) {
    return Fail(ResultCode::kBadTransition, StrCat("row ", txid, " is finished"));
  }
  int64_t time_ms = EventTime(now_ms);
  if (!row->lease_owner.empty() && row->lease_owner != owner && row->lease_until_ms > time_ms) {
    return Fail(ResultCode::kLeased,
                StrCat("row ", txid, " is leased to ", row->lease_owner, " for another ",
                             row->lease_until_ms - time_ms, " ms"));
  }
  Event event;
  event.type = EventType::kRowClaim;
  event.time_ms = time_ms;
  event.txid = txid;
  event.text = owner;
  event.amount = lease_ms;
  Commit(event);
  return result;
}

// ---------------------------------------------------------------------------
// Collection.

bool Engine::IsCollectable(const CollectEntry& entry) const {
  auto found = distributed_.find(entry.txid);
  return found != distributed_.end() && found->second.last_change_ms == entry.time_ms &&
         found->second.finished();
}

// What a collection of records finished at or before cutoff_ms may do: pop
// `local` local records and the first `distributed_entries` entries of the
// distributed queue, removing `removed` records in all. Stale queue entries (their record changed again after it was queued) are
// popped without counting, at most kMaxStaleEntriesPerCollect of them per call. Both
// Collect() and ApplyCollect() use this plan, so what Collect() reports is exactly
// what the event does, live and on replay.
Engine::CollectPlan Engine::PlanCollect(int64_t cutoff_ms, size_t max_records) const {
  constexpr size_t kMaxStaleEntriesPerCollect = 1024;
  const int64_t cutoff = cutoff_ms;  // inclusive
  CollectPlan plan;
  while (plan.removed < max_records && plan.local < local_records_.size() &&
         local_records_[plan.local].time_ms <= cutoff) {
    ++plan.local;
    ++plan.removed;
  }
  size_t stale = 0;
  while (plan.removed < max_records && plan.distributed_entries < distributed_collect_.size()) {
    const CollectEntry& entry = distributed_collect_[plan.distributed_entries];
    if (entry.time_ms > cutoff) break;
    if (IsCollectable(entry)) {
      ++plan.removed;
    } else if (++stale > kMaxStaleEntriesPerCollect) {
      break;
    }
    ++plan.distributed_entries;
  }
  return plan;
}

size_t Engine::Collect(int64_t now_ms, size_t max_records) {
  int64_t time_ms = EventTime(now_ms);
  // The cutoff travels in the event, so a replay removes the same records even if
  // the shard restarts with another idempotency window.
  const int64_t cutoff_ms = time_ms - options_.idempotency_window_ms;
  CollectPlan plan = PlanCollect(cutoff_ms, max_records);
  // Stale queue entries alone are still work: logging their removal keeps the queue
  // moving when many of them lead it.
  if (plan.local == 0 && plan.distributed_entries == 0) return 0;
  Event event;
  event.type = EventType::kCollect;
  event.time_ms = time_ms;
  event.amount = static_cast<Amount>(max_records);
  event.cutoff_ms = cutoff_ms;
  Commit(event);
  return plan.removed;
}

void Engine::ApplyCollect(int64_t cutoff_ms, size_t max_records) {
  const CollectPlan plan = PlanCollect(cutoff_ms, max_records);
  for (size_t i = 0; i < plan.local; ++i) {
    const TxidDigest& digest = local_records_.front().digest;
    size_t erased = IndexPart(digest).erase(digest);
    WALLET_CHECK(erased == 1, "local record missing from its index");
    local_records_.pop_front();
    ++records_collected_;
  }
  for (size_t i = 0; i < plan.distributed_entries; ++i) {
    const CollectEntry& entry = distributed_collect_.front();
    if (IsCollectable(entry)) {
      distributed_.erase(entry.txid);
      ++records_collected_;
    }
    distributed_collect_.pop_front();
  }
}

// ---------------------------------------------------------------------------
// Apply: the only code that changes state.

void Engine::Commit(const Event& event) {
  if (sink_ != nullptr) sink_->Append(event);
  Apply(event);
}

Engine::Account& Engine::MutableAccount(AccountId account) {
  auto it = accounts_.find(account);
  WALLET_CHECK(it != accounts_.end(), "event names an account that is not open");
  return it->second;
}

Engine::Reserve& Engine::MutableReserve(AccountId account, Account& record) {
  record.flags |= kHasReserve;
  return reserves_[account];
}

void Engine::DropReserveIfEmpty(AccountId account, Account& record) {
  auto it = reserves_.find(account);
  WALLET_CHECK(it != reserves_.end(), "reserve missing");
  if (it->second.held == 0 && it->second.pending_credit == 0) {
    reserves_.erase(it);
    record.flags &= static_cast<uint8_t>(~kHasReserve);
  }
}

void Engine::Prefetch(const Event& event) const {
  switch (event.type) {
    case EventType::kOpen:
      accounts_.prefetch(event.account);
      return;
    case EventType::kTransfer:
      accounts_.prefetch(event.peer);
      [[fallthrough]];
    case EventType::kDeposit:
    case EventType::kWithdraw: {
      accounts_.prefetch(event.account);
      const TxidDigest digest = DigestTxid(event.txid);
      IndexPart(digest).prefetch(digest);
      return;
    }
    default:
      return;
  }
}

void Engine::RecordLocal(const Event& event) {
  local_records_.push_back(LocalRecord{DigestTxid(event.txid), event.type, event.currency,
                                       event.account, event.peer, event.amount, event.time_ms});
  LocalRecord* record = &local_records_.back();
  bool inserted = IndexPart(record->digest).emplace(record->digest, record).second;
  ++records_created_;
  WALLET_CHECK(inserted, "local transaction id applied twice");
}

Engine::DistributedRecord& Engine::MutableDistributed(std::string_view txid) {
  auto it = distributed_.find(txid);
  if (it == distributed_.end()) {
    it = distributed_.emplace(std::string(txid), DistributedRecord{}).first;
    ++records_created_;
  }
  return it->second;
}

void Engine::CreateRow(std::string_view txid, DistributedRecord& record, const RowSpec& spec,
                       int64_t time_ms) {
  if (record.row != nullptr) {
    WALLET_CHECK(record.row->spec == spec, "row created twice with different content");
    return;
  }
  record.row = std::make_unique<PhaseRow>();
  record.row->spec = spec;
  record.row->created_ms = time_ms;
  record.row->updated_ms = time_ms;
  open_rows_.insert(std::string(txid));
}

// A debit try / saga debit step with a home spec: creates the row (unless a
// ROW.CREATE already did) and records the debit's try as ok. A row created here
// starts with credit_try sent: the executor sends the credit's try right after, so
// from now on it may be in flight.
void Engine::CreateRowWithDebit(const Event& event, DistributedRecord& record) {
  const bool created = record.row == nullptr;
  CreateRow(event.txid, record,
            RowSpec{event.mode, event.account, event.peer, event.amount, event.currency},
            event.time_ms);
  record.row->debit_try = TryStatus::kOk;
  if (created) record.row->credit_try = TryStatus::kSent;
}

// A branch's second phase applied on the shard holding the row: its end is done.
void Engine::MarkEndDone(DistributedRecord& record, Direction direction, int64_t time_ms) {
  if (record.row == nullptr) return;
  if (direction == Direction::kDebit) {
    record.row->debit_end = EndStatus::kDone;
  } else if (direction == Direction::kCredit) {
    record.row->credit_end = EndStatus::kDone;
  } else {
    return;
  }
  record.row->updated_ms = time_ms;
}

void Engine::AfterDistributedChange(std::string_view txid, DistributedRecord& record,
                                    int64_t time_ms) {
  record.last_change_ms = time_ms;
  if (record.row != nullptr && IsFinished(record.row->phase)) {
    open_rows_.erase(txid);
  }
  if (record.finished() && record.queued_ms != time_ms) {
    record.queued_ms = time_ms;  // one queue entry per (record, time): plans stay exact
    distributed_collect_.push_back(CollectEntry{time_ms, std::string(txid)});
  }
}

void Engine::Apply(const Event& event) {
  WALLET_CHECK(event.time_ms >= last_time_ms_, "event time went backwards");
  last_time_ms_ = event.time_ms;
  ++events_applied_;
  switch (event.type) {
    case EventType::kOpen: {
      Account account;
      account.currency = event.currency.packed();
      bool inserted = accounts_.emplace(event.account, account).second;
      WALLET_CHECK(inserted, "account opened twice");
      return;
    }
    case EventType::kDeposit: {
      Account& account = MutableAccount(event.account);
      account.available += event.amount;
      audit_.available += event.amount;
      audit_.deposited += event.amount;
      RecordLocal(event);
      return;
    }
    case EventType::kWithdraw: {
      Account& account = MutableAccount(event.account);
      WALLET_CHECK(account.available >= event.amount, "withdrawal beyond available");
      account.available -= event.amount;
      audit_.available -= event.amount;
      audit_.withdrawn += event.amount;
      RecordLocal(event);
      return;
    }
    case EventType::kTransfer: {
      Account& source = MutableAccount(event.account);
      Account& target = MutableAccount(event.peer);
      WALLET_CHECK(source.available >= event.amount, "transfer beyond available");
      source.available -= event.amount;
      target.available += event.amount;
      RecordLocal(event);
      return;
    }
    case EventType::kTccTry: {
      Account& account = MutableAccount(event.account);
      Reserve& reserve = MutableReserve(event.account, account);
      if (event.direction == Direction::kDebit) {
        WALLET_CHECK(account.available >= event.amount, "try-debit beyond available");
        account.available -= event.amount;
        reserve.held += event.amount;
        audit_.available -= event.amount;
        audit_.held += event.amount;
      } else {
        reserve.pending_credit += event.amount;
        audit_.pending_credit += event.amount;
      }
      DistributedRecord& record = MutableDistributed(event.txid);
      record.branches.push_back(Branch{Mode::kTcc, event.direction, 0, BranchState::kTried,
                                       event.currency, event.account, event.amount});
      if (event.mode != Mode::kNone) CreateRowWithDebit(event, record);
      AfterDistributedChange(event.txid, record, event.time_ms);
      return;
    }
    case EventType::kTccConfirm:
    case EventType::kTccCancel: {
      DistributedRecord& record = MutableDistributed(event.txid);
      Branch* branch = nullptr;
      for (Branch& candidate : record.branches) {
        if (candidate.mode == Mode::kTcc && candidate.direction == event.direction) {
          branch = &candidate;
        }
      }
      if (branch == nullptr) {
        WALLET_CHECK(event.type == EventType::kTccCancel, "confirm of an untried branch");
        record.branches.push_back(
            Branch{Mode::kTcc, event.direction, 0, BranchState::kFenced, Currency(), 0, 0});
        MarkEndDone(record, event.direction, event.time_ms);
        AfterDistributedChange(event.txid, record, event.time_ms);
        return;
      }
      WALLET_CHECK(branch->state == BranchState::kTried, "second phase of a finished branch");
      Account& account = MutableAccount(branch->account);
      Reserve& reserve = MutableReserve(branch->account, account);
      bool confirm = event.type == EventType::kTccConfirm;
      if (branch->direction == Direction::kDebit) {
        WALLET_CHECK(reserve.held >= branch->amount, "hold smaller than its branch");
        reserve.held -= branch->amount;
        audit_.held -= branch->amount;
        if (confirm) {
          audit_.moved_out += branch->amount;
        } else {
          account.available += branch->amount;
          audit_.available += branch->amount;
        }
      } else {
        WALLET_CHECK(reserve.pending_credit >= branch->amount, "pending smaller than its branch");
        reserve.pending_credit -= branch->amount;
        audit_.pending_credit -= branch->amount;
        if (confirm) {
          account.available += branch->amount;
          audit_.available += branch->amount;
          audit_.moved_in += branch->amount;
        }
      }
      branch->state = confirm ? BranchState::kConfirmed : BranchState::kCancelled;
      DropReserveIfEmpty(branch->account, account);
      MarkEndDone(record, branch->direction, event.time_ms);
      AfterDistributedChange(event.txid, record, event.time_ms);
      return;
    }
    case EventType::kSagaStep: {
      Account& account = MutableAccount(event.account);
      if (event.direction == Direction::kDebit) {
        WALLET_CHECK(account.available >= event.amount, "saga debit beyond available");
        account.available -= event.amount;
        audit_.available -= event.amount;
        audit_.moved_out += event.amount;
      } else {
        account.available += event.amount;
        audit_.available += event.amount;
        audit_.moved_in += event.amount;
      }
      DistributedRecord& record = MutableDistributed(event.txid);
      record.branches.push_back(Branch{Mode::kSaga, event.direction, event.step,
                                       BranchState::kDone, event.currency, event.account,
                                       event.amount});
      if (event.mode != Mode::kNone) CreateRowWithDebit(event, record);
      AfterDistributedChange(event.txid, record, event.time_ms);
      return;
    }
    case EventType::kSagaCompensate: {
      DistributedRecord& record = MutableDistributed(event.txid);
      Branch* branch = nullptr;
      for (Branch& candidate : record.branches) {
        if (candidate.mode == Mode::kSaga && candidate.step == event.step) branch = &candidate;
      }
      if (branch == nullptr) {
        record.branches.push_back(Branch{Mode::kSaga, Direction::kNone, event.step,
                                         BranchState::kFenced, Currency(), 0, 0});
        AfterDistributedChange(event.txid, record, event.time_ms);
        return;
      }
      WALLET_CHECK(branch->state == BranchState::kDone, "compensation of a step not done");
      Account& account = MutableAccount(branch->account);
      if (branch->direction == Direction::kDebit) {
        account.available += branch->amount;
        audit_.available += branch->amount;
        audit_.moved_in += branch->amount;
      } else {
        WALLET_CHECK(account.available >= branch->amount, "compensation beyond available");
        account.available -= branch->amount;
        audit_.available -= branch->amount;
        audit_.moved_out += branch->amount;
      }
      branch->state = BranchState::kCompensated;
      MarkEndDone(record, branch->direction, event.time_ms);
      AfterDistributedChange(event.txid, record, event.time_ms);
      return;
    }
    case EventType::kRowCreate: {
      DistributedRecord& record = MutableDistributed(event.txid);
      CreateRow(event.txid, record,
                RowSpec{event.mode, event.account, event.peer, event.amount, event.currency},
                event.time_ms);
      AfterDistributedChange(event.txid, record, event.time_ms);
      return;
    }
    case EventType::kRowUpdate: {
      auto found = distributed_.find(event.txid);
      WALLET_CHECK(found != distributed_.end() && found->second.row != nullptr,
                   "update of a missing row");
      PhaseRow& row = *found->second.row;
      const RowUpdate& update = event.row_update;
      if (update.has(RowUpdate::kDecision)) row.decision = update.decision;
      if (update.has(RowUpdate::kPhase)) row.phase = update.phase;
      if (update.has(RowUpdate::kDebitTry)) row.debit_try = update.debit_try;
      if (update.has(RowUpdate::kCreditTry)) row.credit_try = update.credit_try;
      if (update.has(RowUpdate::kDebitEnd)) row.debit_end = update.debit_end;
      if (update.has(RowUpdate::kCreditEnd)) row.credit_end = update.credit_end;
      if (update.has(RowUpdate::kDebitAnswer)) row.debit_answer = update.debit_answer;
      if (update.has(RowUpdate::kCreditAnswer)) row.credit_answer = update.credit_answer;
      if (update.has(RowUpdate::kOutOfOrder)) row.out_of_order = update.out_of_order != 0;
      if (update.has(RowUpdate::kAttempts)) {
        row.attempts = update.attempts_added > UINT32_MAX - row.attempts ? UINT32_MAX
                                                                          : row.attempts + update.attempts_added;
      }
      row.updated_ms = event.time_ms;
      AfterDistributedChange(event.txid, found->second, event.time_ms);
      return;
    }
    case EventType::kRowClaim: {
      auto found = distributed_.find(event.txid);
      WALLET_CHECK(found != distributed_.end() && found->second.row != nullptr,
                   "claim of a missing row");
      found->second.row->lease_owner.assign(event.text);
      found->second.row->lease_until_ms = event.time_ms + event.amount;
      return;
    }
    case EventType::kCollect:
      ApplyCollect(event.cutoff_ms, static_cast<size_t>(event.amount));
      return;
  }
  WALLET_CHECK(false, "unknown event type");
}

// ---------------------------------------------------------------------------
// State snapshots: helpers. The stream, the digest and loading are at the end.

// True while nothing has been applied or loaded: the only state LoadState fills.
bool Engine::IsFresh() const {
  return events_applied_ == 0 && last_time_ms_ == 0 && accounts_.empty() && reserves_.empty() &&
         local_records_.empty() && distributed_.empty() && distributed_collect_.empty() &&
         open_rows_.empty();
}

// Back to the state of a freshly constructed engine (options, owned partitions and
// sink stay). Called by LoadState when the stream turns out to be malformed.
void Engine::ClearState() {
  last_time_ms_ = 0;
  accounts_.clear();
  reserves_.clear();
  for (LocalIndex& part : local_index_) part.clear();
  local_records_.clear();
  distributed_.clear();
  distributed_collect_.clear();
  open_rows_.clear();
  audit_ = AuditTotals{};
  events_applied_ = 0;
  records_collected_ = 0;
  records_created_ = 0;
}

// ---------------------------------------------------------------------------
// Reads.

Result Engine::Balance(AccountId account, AccountView* out) const {
  Result result;
  if (!CheckOwned(account, &result)) return result;
  const Account* record = FindAccount(account, &result);
  if (record == nullptr) return result;
  Reserve reserve = ReserveOf(account, *record);
  out->available = record->available;
  out->held = reserve.held;
  out->pending_credit = reserve.pending_credit;
  out->currency = Currency::FromPacked(record->currency);
  return result;
}

const PhaseRow* Engine::FindRow(std::string_view txid) const {
  auto found = distributed_.find(txid);
  return found == distributed_.end() ? nullptr : found->second.row.get();
}

TxView Engine::FindTx(std::string_view txid) const {
  TxView view;
  if (const LocalRecord* local = FindLocal(txid); local != nullptr) {
    const LocalRecord& record = *local;
    view.kind = TxView::Kind::kLocal;
    view.local_type = record.type;
    view.account = record.account;
    view.peer = record.peer;
    view.amount = record.amount;
    view.currency = record.currency;
    view.time_ms = record.time_ms;
    return view;
  }
  if (auto it = distributed_.find(txid); it != distributed_.end()) {
    view.kind = TxView::Kind::kDistributed;
    view.branches.assign(it->second.branches.begin(), it->second.branches.end());
    view.row = it->second.row.get();
    view.time_ms = it->second.last_change_ms;
  }
  return view;
}

std::vector<std::string> Engine::RowsInDoubt(int64_t min_age_ms, size_t limit,
                                             int64_t now_ms) const {
  std::vector<std::pair<int64_t, std::string_view>> candidates;
  for (const std::string& txid : open_rows_) {
    const PhaseRow* row = FindRow(txid);
    WALLET_CHECK(row != nullptr && !IsFinished(row->phase), "open row index out of date");
    if (now_ms - row->updated_ms < min_age_ms) continue;
    if (!row->lease_owner.empty() && row->lease_until_ms > now_ms) continue;  // being resolved
    candidates.emplace_back(row->updated_ms, txid);
  }
  std::sort(candidates.begin(), candidates.end());
  if (candidates.size() > limit) candidates.resize(limit);
  std::vector<std::string> out;
  out.reserve(candidates.size());
  for (const auto& candidate : candidates) out.emplace_back(candidate.second);
  return out;
}

EngineStats Engine::stats() const {
  EngineStats stats;
  stats.accounts = accounts_.size();
  stats.accounts_with_reserve = reserves_.size();
  stats.local_records = local_records_.size();
  stats.distributed_records = distributed_.size();
  stats.open_rows = open_rows_.size();
  stats.events_applied = events_applied_;
  stats.records_collected = records_collected_;
  stats.records_created = records_created_;
  return stats;
}

bool Engine::CheckInvariants(std::string* error) const {
  __int128 available = 0, held = 0, pending = 0;
  for (const auto& [id, account] : accounts_) {
    Reserve reserve = ReserveOf(id, account);
    if (account.available < 0 || reserve.held < 0 || reserve.pending_credit < 0) {
      *error = StrCat("account ", id, " has a negative balance");
      return false;
    }
    __int128 total = static_cast<__int128>(account.available) + reserve.held + reserve.pending_credit;
    if (total > kMaxAmount) {
      *error = StrCat("account ", id, " exceeds the int64 headroom");
      return false;
    }
    if ((account.flags & kHasReserve) != 0 && reserve.held == 0 && reserve.pending_credit == 0) {
      *error = StrCat("account ", id, " keeps an empty reserve");
      return false;
    }
    available += account.available;
    held += reserve.held;
    pending += reserve.pending_credit;
  }
  if (reserves_.size() > accounts_.size()) {
    *error = "more reserves than accounts";
    return false;
  }
  __int128 branch_held = 0, branch_pending = 0;
  for (const auto& [txid, record] : distributed_) {
    for (const Branch& branch : record.branches) {
      if (branch.mode != Mode::kTcc || branch.state != BranchState::kTried) continue;
      (branch.direction == Direction::kDebit ? branch_held : branch_pending) += branch.amount;
    }
    bool open = record.row != nullptr && !IsFinished(record.row->phase);
    if (open != open_rows_.contains(txid)) {
      *error = StrCat("open row index disagrees for ", txid);
      return false;
    }
  }
  if (available != audit_.available || held != audit_.held || pending != audit_.pending_credit) {
    *error = "running totals disagree with the accounts";
    return false;
  }
  if (held != branch_held || pending != branch_pending) {
    *error = "held or pending amounts disagree with the open TC/C branches";
    return false;
  }
  if (available + held != audit_.deposited - audit_.withdrawn + audit_.moved_in - audit_.moved_out) {
    *error = "money not conserved: available + held != deposited - withdrawn + in - out";
    return false;
  }
  size_t indexed = 0;
  for (const LocalIndex& part : local_index_) indexed += part.size();
  if (indexed != local_records_.size()) {
    *error = "local record index out of date";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// The state stream (Engine::SaveState / LoadState) and the state digest.
//
// Grammar of the stream. Integers are fixed-width little-endian; i128 is two's
// complement, low half first; a "TAG" is its 4 ASCII bytes; str is u8 length + bytes.
//
//   state       := preamble accounts reserves locals distributed queue open_rows audit end
//   preamble    := "WENG" u32:state_version(=1) u32:partition_count i64:last_time_ms
//                  u64:events_applied u64:records_collected u64:records_created
//   accounts    := "ACCT" u64:n account{n}                 (hash-table order)
//   account     := u64:id i64:available u16:currency u8:flags
//   reserves    := "RSRV" u64:n reserve{n}                 (hash-table order)
//   reserve     := u64:id i64:held i64:pending_credit
//   locals      := "LOCL" u64:n local{n}                   (collection order: oldest first)
//   local       := u64:digest_low u64:digest_high u8:event_type u16:currency
//                  u64:account u64:peer i64:amount i64:time_ms
//   distributed := "DIST" u64:n record{n}                  (hash-table order)
//   record      := str:txid i64:last_change_ms i64:queued_ms u16:b branch{b}
//                  u8:has_row row{has_row}
//   branch      := u8:mode u8:direction u8:step u8:state u16:currency u64:account i64:amount
//   row         := u8:mode u64:from u64:to i64:amount u16:currency u8:decision u8:phase
//                  u8:debit_try u8:credit_try u8:debit_answer u8:credit_answer
//                  u8:debit_end u8:credit_end u8:out_of_order u32:attempts
//                  i64:created_ms i64:updated_ms str:lease_owner i64:lease_until_ms
//   queue       := "QUEU" u64:n entry{n}                   (collection order)
//   entry       := i64:time_ms str:txid
//   open_rows   := "OPEN" u64:n str:txid{n}
//   audit       := "AUDT" i128:available i128:held i128:pending_credit i128:deposited
//                  i128:withdrawn i128:moved_in i128:moved_out
//   end         := "END!"
//
// Enums are their numeric values in events.h / engine.h / result_code.h (which are
// persisted in the event log too and never renumbered); currencies are packed
// (money.h). The digest hashes each item's encoding above (see Engine::Digest).

namespace {

constexpr uint32_t kStateVersion = 1;
// Packed currencies run 1..26^3 (money.h); 0 is "no currency".
constexpr uint16_t kMaxPackedCurrency = 26 * 26 * 26;

constexpr uint32_t Tag(const char (&name)[5]) {
  return static_cast<uint32_t>(static_cast<uint8_t>(name[0])) |
         static_cast<uint32_t>(static_cast<uint8_t>(name[1])) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(name[2])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(name[3])) << 24;
}
constexpr uint32_t kTagPreamble = Tag("WENG");
constexpr uint32_t kTagAccounts = Tag("ACCT");
constexpr uint32_t kTagReserves = Tag("RSRV");
constexpr uint32_t kTagLocals = Tag("LOCL");
constexpr uint32_t kTagDistributed = Tag("DIST");
constexpr uint32_t kTagQueue = Tag("QUEU");
constexpr uint32_t kTagOpenRows = Tag("OPEN");
constexpr uint32_t kTagAudit = Tag("AUDT");
constexpr uint32_t kTagEnd = Tag("END!");

// The smallest encoding of one item of each section: a count read from a stream
// must fit in the bytes that remain before anything is allocated for it.
constexpr size_t kAccountBytes = 8 + 8 + 2 + 1;
constexpr size_t kReserveBytes = 8 + 8 + 8;
constexpr size_t kLocalBytes = 16 + 1 + 2 + 8 + 8 + 8 + 8;
constexpr size_t kBranchBytes = 4 + 2 + 8 + 8;
constexpr size_t kMinRecordBytes = 2 + 8 + 8 + 2 + 1;
constexpr size_t kMinEntryBytes = 8 + 2;
constexpr size_t kMinOpenRowBytes = 2;

// One item's canonical bytes, for hashing; the buffer is reused across items.
class ItemBytes : public LittleEndianPut<ItemBytes> {
 public:
  void Append(const void* data, size_t size_bytes) {
    bytes_.append(static_cast<const char*>(data), size_bytes);
  }
  void Clear() { bytes_.clear(); }
  std::string_view view() const { return bytes_; }

 private:
  std::string bytes_;
};

// What a section contributes to the digest.
struct SectionDigest {
  uint64_t count = 0;
  uint64_t low = 0;
  uint64_t high = 0;
};

// Digest of a set (hash-table contents): the sums mod 2^64 of the halves of each
// item's XXH3-128, so the order of iteration does not matter.
class SetDigest {
 public:
  void Add(std::string_view bytes) {
    XXH128_hash_t hash = XXH3_128bits(bytes.data(), bytes.size());
    out_.low += hash.low64;
    out_.high += hash.high64;
    ++out_.count;
  }
  SectionDigest Finish() { return out_; }

 private:
  SectionDigest out_;
};

// Digest of a sequence (a queue): XXH3-128 of the items' encodings one after the
// other (each encoding is self-delimiting, so the concatenation is unambiguous).
class SequenceDigest {
 public:
  SequenceDigest() { XXH3_128bits_reset(&state_); }
  void Add(std::string_view bytes) {
    XXH3_128bits_update(&state_, bytes.data(), bytes.size());
    ++count_;
  }
  SectionDigest Finish() {
    XXH128_hash_t hash = XXH3_128bits_digest(&state_);
    return SectionDigest{count_, hash.low64, hash.high64};
  }

 private:
  XXH3_state_t state_;
  uint64_t count_ = 0;
};

// Encodes each element of `range` with `encode` and adds it to a new `DigestType`.
template <typename DigestType, typename Range, typename Encode>
SectionDigest DigestItems(const Range& range, ItemBytes* item, const Encode& encode) {
  DigestType digest;
  for (const auto& element : range) {
    item->Clear();
    encode(*item, element);
    digest.Add(item->view());
  }
  return digest.Finish();
}

// DataLoss naming the stream offset (the reader's, which may count from a file start).
absl::Status BadState(uint64_t offset, std::string_view what) {
  return absl::DataLossError(StrCat("engine state at byte ", offset, ": ", what));
}

// Reads a 4-byte tag and checks it is `tag` (the start of section `name`).
absl::Status ExpectTag(StateReader* in, uint32_t tag, std::string_view name) {
  const uint64_t offset = in->offset();
  const uint32_t got = in->GetU32();
  if (in->failed()) return BadState(offset, StrCat("truncated before the ", name, " section"));
  if (got != tag) return BadState(offset, StrCat("the ", name, " section's tag is missing"));
  return absl::OkStatus();
}

// Reads a section's tag and item count; the count must fit in the bytes left at
// `min_item_bytes` an item.
absl::Status ReadSectionStart(StateReader* in, uint32_t tag, std::string_view name,
                              size_t min_item_bytes, uint64_t* count) {
  if (absl::Status status = ExpectTag(in, tag, name); !status.ok()) return status;
  const uint64_t offset = in->offset();
  *count = in->GetU64();
  if (in->failed()) return BadState(offset, StrCat("truncated in the ", name, " count"));
  if (*count > in->remaining_bytes() / min_item_bytes) {
    return BadState(offset, StrCat(name, " count ", *count, " cannot fit in the ",
                                   in->remaining_bytes(), " bytes left"));
  }
  return absl::OkStatus();
}

// A transaction id as read from a stream: 1-64 visible ASCII bytes.
absl::Status CheckStoredTxid(uint64_t offset, std::string_view txid, std::string_view what) {
  if (IsValidTxid(txid)) return absl::OkStatus();
  return BadState(offset, StrCat(what, " has an invalid transaction id"));
}

// Is `time_ms` a time an event of this state could have had?
bool ValidEventTime(int64_t time_ms, int64_t last_time_ms) {
  return time_ms >= 0 && time_ms <= last_time_ms;
}

bool ValidCurrencyOrNone(Currency currency) { return currency.packed() <= kMaxPackedCurrency; }

// Do a branch's fields make sense together (as Apply creates them)?
bool ValidBranch(const Branch& branch) {
  if (!ValidCurrencyOrNone(branch.currency) || branch.direction > Direction::kCredit) return false;
  switch (branch.state) {
    case BranchState::kFenced:
      return branch.mode == Mode::kTcc || branch.mode == Mode::kSaga;
    case BranchState::kTried:
    case BranchState::kConfirmed:
    case BranchState::kCancelled:
      if (branch.mode != Mode::kTcc) return false;
      break;
    case BranchState::kDone:
    case BranchState::kCompensated:
      if (branch.mode != Mode::kSaga) return false;
      break;
    default:
      return false;
  }
  return branch.direction != Direction::kNone && branch.amount > 0 && branch.currency.valid();
}

// Are a row's enums in range and its spec and lease well formed?
bool ValidRow(const PhaseRow& row) {
  return (row.spec.mode == Mode::kTcc || row.spec.mode == Mode::kSaga) && row.spec.amount > 0 &&
         row.spec.currency.valid() && row.spec.currency.packed() <= kMaxPackedCurrency &&
         row.decision <= Decision::kCancel && row.phase <= RowPhase::kAborted &&
         row.debit_try <= TryStatus::kFailed && row.credit_try <= TryStatus::kFailed &&
         row.debit_answer < ResultCode::kCount_ && row.credit_answer < ResultCode::kCount_ &&
         row.debit_end <= EndStatus::kDone && row.credit_end <= EndStatus::kDone &&
         (row.lease_owner.empty() || IsValidTxid(row.lease_owner));
}

}  // namespace

// Writes, reads and digests the engine's state. A friend of Engine, so that the
// stream and the digest see the private tables; used only by Engine::SaveState,
// LoadState and Digest.
class EngineStateCodec {
 public:
  static void Save(const Engine& engine, StateWriter* out);
  static absl::Status Load(Engine& engine, StateReader* in);
  static StateDigest Digest(const Engine& engine);

 private:
  using Account = Engine::Account;
  using Reserve = Engine::Reserve;
  using LocalRecord = Engine::LocalRecord;
  using DistributedRecord = Engine::DistributedRecord;
  using CollectEntry = Engine::CollectEntry;

  // Item encoders, shared by Save (Out = StateWriter) and Digest (Out = ItemBytes).
  template <typename Out>
  static void PutAccount(Out& out, AccountId id, const Account& account) {
    out.PutU64(id);
    out.PutI64(account.available);
    out.PutU16(account.currency);
    out.PutU8(account.flags);
  }
  template <typename Out>
  static void PutReserve(Out& out, AccountId id, const Reserve& reserve) {
    out.PutU64(id);
    out.PutI64(reserve.held);
    out.PutI64(reserve.pending_credit);
  }
  template <typename Out>
  static void PutLocal(Out& out, const LocalRecord& record) {
    out.PutU64(record.digest.low);
    out.PutU64(record.digest.high);
    out.PutU8(static_cast<uint8_t>(record.type));
    out.PutU16(record.currency.packed());
    out.PutU64(record.account);
    out.PutU64(record.peer);
    out.PutI64(record.amount);
    out.PutI64(record.time_ms);
  }
  template <typename Out>
  static void PutRow(Out& out, const PhaseRow& row) {
    out.PutU8(static_cast<uint8_t>(row.spec.mode));
    out.PutU64(row.spec.from);
    out.PutU64(row.spec.to);
    out.PutI64(row.spec.amount);
    out.PutU16(row.spec.currency.packed());
    for (uint8_t field : {static_cast<uint8_t>(row.decision), static_cast<uint8_t>(row.phase),
                          static_cast<uint8_t>(row.debit_try), static_cast<uint8_t>(row.credit_try),
                          static_cast<uint8_t>(row.debit_answer),
                          static_cast<uint8_t>(row.credit_answer),
                          static_cast<uint8_t>(row.debit_end), static_cast<uint8_t>(row.credit_end),
                          static_cast<uint8_t>(row.out_of_order ? 1 : 0)}) {
      out.PutU8(field);
    }
    out.PutU32(row.attempts);
    out.PutI64(row.created_ms);
    out.PutI64(row.updated_ms);
    out.PutString8(row.lease_owner);
    out.PutI64(row.lease_until_ms);
  }
  template <typename Out>
  static void PutDistributed(Out& out, std::string_view txid, const DistributedRecord& record) {
    WALLET_CHECK(record.branches.size() <= UINT16_MAX, "too many branches to save");
    out.PutString8(txid);
    out.PutI64(record.last_change_ms);
    out.PutI64(record.queued_ms);
    out.PutU16(static_cast<uint16_t>(record.branches.size()));
    for (const Branch& branch : record.branches) {
      out.PutU8(static_cast<uint8_t>(branch.mode));
      out.PutU8(static_cast<uint8_t>(branch.direction));
      out.PutU8(branch.step);
      out.PutU8(static_cast<uint8_t>(branch.state));
      out.PutU16(branch.currency.packed());
      out.PutU64(branch.account);
      out.PutI64(branch.amount);
    }
    out.PutU8(record.row != nullptr ? 1 : 0);
    if (record.row != nullptr) PutRow(out, *record.row);
  }
  template <typename Out>
  static void PutEntry(Out& out, const CollectEntry& entry) {
    out.PutI64(entry.time_ms);
    out.PutString8(entry.txid);
  }
  template <typename Out>
  static void PutAudit(Out& out, const AuditTotals& audit) {
    for (__int128 total : {audit.available, audit.held, audit.pending_credit, audit.deposited,
                           audit.withdrawn, audit.moved_in, audit.moved_out}) {
      out.PutI128(total);
    }
  }

  // Whether a table's order is part of the state (queues) or not (hash tables).
  enum class Order { kSet, kSequence };
  // Calls visit(tag, order, table, encode) for each table in stream order, encode
  // being encode(out, element). Shared by Save and Digest, so that both cover the
  // same tables with the same encodings.
  template <typename Visitor>
  static void VisitSections(const Engine& engine, const Visitor& visit) {
    visit(kTagAccounts, Order::kSet, engine.accounts_,
          [](auto& out, const auto& entry) { PutAccount(out, entry.first, entry.second); });
    visit(kTagReserves, Order::kSet, engine.reserves_,
          [](auto& out, const auto& entry) { PutReserve(out, entry.first, entry.second); });
    visit(kTagLocals, Order::kSequence, engine.local_records_,
          [](auto& out, const LocalRecord& record) { PutLocal(out, record); });
    visit(kTagDistributed, Order::kSet, engine.distributed_,
          [](auto& out, const auto& entry) { PutDistributed(out, entry.first, entry.second); });
    visit(kTagQueue, Order::kSequence, engine.distributed_collect_,
          [](auto& out, const CollectEntry& entry) { PutEntry(out, entry); });
    visit(kTagOpenRows, Order::kSet, engine.open_rows_,
          [](auto& out, const std::string& txid) { out.PutString8(txid); });
  }

  static absl::Status LoadPreamble(Engine& engine, StateReader* in);
  static absl::Status LoadAccounts(Engine& engine, StateReader* in, uint64_t* with_reserve);
  static absl::Status LoadReserves(Engine& engine, StateReader* in, uint64_t with_reserve);
  static absl::Status LoadLocals(Engine& engine, StateReader* in);
  static absl::Status LoadDistributed(Engine& engine, StateReader* in, uint64_t* open_rows);
  static absl::Status ReadBranch(StateReader* in, uint64_t offset, Branch* branch);
  static absl::Status ReadRow(StateReader* in, uint64_t offset, PhaseRow* row);
  static absl::Status CheckReservesMatchBranches(const Engine& engine);
  static absl::Status LoadQueue(Engine& engine, StateReader* in);
  static absl::Status LoadOpenRows(Engine& engine, StateReader* in, uint64_t open_rows);
  static absl::Status LoadAudit(Engine& engine, StateReader* in);
};

// Streams every table in the grammar's order. Called by Engine::SaveState.
void EngineStateCodec::Save(const Engine& engine, StateWriter* out) {
  out->PutU32(kTagPreamble);
  out->PutU32(kStateVersion);
  out->PutU32(engine.options_.partition_count);
  out->PutI64(engine.last_time_ms_);
  out->PutU64(engine.events_applied_);
  out->PutU64(engine.records_collected_);
  out->PutU64(engine.records_created_);

  VisitSections(engine, [out](uint32_t tag, Order, const auto& table, const auto& encode) {
    out->PutU32(tag);
    out->PutU64(table.size());
    for (const auto& element : table) encode(*out, element);
  });
  out->PutU32(kTagAudit);
  PutAudit(*out, engine.audit_);
  out->PutU32(kTagEnd);
}

// Hashes each table's items (sets by sums, queues in order), then the section
// digests with the scalars. Called by Engine::Digest.
StateDigest EngineStateCodec::Digest(const Engine& engine) {
  ItemBytes item;
  ItemBytes summary;
  summary.PutU32(engine.options_.partition_count);
  summary.PutI64(engine.last_time_ms_);
  VisitSections(engine, [&](uint32_t tag, Order order, const auto& table, const auto& encode) {
    const SectionDigest section = order == Order::kSet
                                      ? DigestItems<SetDigest>(table, &item, encode)
                                      : DigestItems<SequenceDigest>(table, &item, encode);
    summary.PutU32(tag);
    summary.PutU64(section.count);
    summary.PutU64(section.low);
    summary.PutU64(section.high);
  });
  summary.PutU32(kTagAudit);
  PutAudit(summary, engine.audit_);
  XXH128_hash_t hash = XXH3_128bits(summary.view().data(), summary.view().size());
  return StateDigest{hash.low64, hash.high64};
}

// Reads every section into the (fresh) engine, checking each item as it comes and
// the cross-references between tables at the end. Called by Engine::LoadState,
// which checks the money invariants afterwards and clears the engine on error.
absl::Status EngineStateCodec::Load(Engine& engine, StateReader* in) {
  uint64_t with_reserve = 0;
  uint64_t open_rows = 0;
  absl::Status status = LoadPreamble(engine, in);
  if (status.ok()) status = LoadAccounts(engine, in, &with_reserve);
  if (status.ok()) status = LoadReserves(engine, in, with_reserve);
  if (status.ok()) status = LoadLocals(engine, in);
  if (status.ok()) status = LoadDistributed(engine, in, &open_rows);
  if (status.ok()) status = CheckReservesMatchBranches(engine);
  if (status.ok()) status = LoadQueue(engine, in);
  if (status.ok()) status = LoadOpenRows(engine, in, open_rows);
  if (status.ok()) status = LoadAudit(engine, in);
  if (status.ok()) status = ExpectTag(in, kTagEnd, "end");
  return status;
}

// Each Load* reads one section of the grammar and checks its items; called in
// order by Load. Counts were bounded by ReadSectionStart before any reserve().

// Preamble: version, partition count (must match this engine), time, counters.
absl::Status EngineStateCodec::LoadPreamble(Engine& engine, StateReader* in) {
  if (absl::Status status = ExpectTag(in, kTagPreamble, "preamble"); !status.ok()) return status;
  const uint64_t offset = in->offset();
  const uint32_t version = in->GetU32();
  const uint32_t partition_count = in->GetU32();
  const int64_t last_time_ms = in->GetI64();
  engine.events_applied_ = in->GetU64();
  engine.records_collected_ = in->GetU64();
  engine.records_created_ = in->GetU64();
  if (in->failed()) return BadState(offset, "truncated in the preamble");
  if (version != kStateVersion) {
    return absl::FailedPreconditionError(
        StrCat("engine state version ", version, " is not the supported ", kStateVersion));
  }
  if (partition_count != engine.options_.partition_count) {
    return absl::FailedPreconditionError(
        StrCat("engine state was saved with ", partition_count,
               " partitions; this engine is configured with ", engine.options_.partition_count));
  }
  if (last_time_ms < 0) return BadState(offset, "negative last event time");
  engine.last_time_ms_ = last_time_ms;
  return absl::OkStatus();
}

// Accounts: positive-or-zero balances, a real currency, only the reserve flag.
absl::Status EngineStateCodec::LoadAccounts(Engine& engine, StateReader* in,
                                            uint64_t* with_reserve) {
  uint64_t count = 0;
  absl::Status status = ReadSectionStart(in, kTagAccounts, "accounts", kAccountBytes, &count);
  if (!status.ok()) return status;
  engine.accounts_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t offset = in->offset();
    const AccountId id = in->GetU64();
    Account account;
    account.available = in->GetI64();
    account.currency = in->GetU16();
    account.flags = in->GetU8();
    if (account.available < 0 || account.currency == 0 ||
        account.currency > kMaxPackedCurrency || (account.flags & ~Engine::kHasReserve) != 0) {
      return BadState(offset, StrCat("account ", id, " has an invalid balance, currency or flags"));
    }
    if (!engine.accounts_.emplace(id, account).second) {
      return BadState(offset, StrCat("account ", id, " appears twice"));
    }
    *with_reserve += account.flags & Engine::kHasReserve;
  }
  return absl::OkStatus();
}

// Reserves: exactly one per flagged account, never negative or empty.
absl::Status EngineStateCodec::LoadReserves(Engine& engine, StateReader* in,
                                            uint64_t with_reserve) {
  uint64_t count = 0;
  absl::Status status = ReadSectionStart(in, kTagReserves, "reserves", kReserveBytes, &count);
  if (!status.ok()) return status;
  if (count != with_reserve) {
    return BadState(in->offset(), StrCat(count, " reserves for ", with_reserve,
                                         " accounts flagged as having one"));
  }
  engine.reserves_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t offset = in->offset();
    const AccountId id = in->GetU64();
    Reserve reserve;
    reserve.held = in->GetI64();
    reserve.pending_credit = in->GetI64();
    auto account = engine.accounts_.find(id);
    if (account == engine.accounts_.end() || (account->second.flags & Engine::kHasReserve) == 0) {
      return BadState(offset, StrCat("reserve of account ", id, ", which is not flagged as having one"));
    }
    if (reserve.held < 0 || reserve.pending_credit < 0 ||
        (reserve.held == 0 && reserve.pending_credit == 0)) {
      return BadState(offset, StrCat("reserve of account ", id, " is negative or empty"));
    }
    if (!engine.reserves_.emplace(id, reserve).second) {
      return BadState(offset, StrCat("reserve of account ", id, " appears twice"));
    }
  }
  return absl::OkStatus();
}

// Local records in collection order. All are read and checked first, then indexed
// one index part at a time: a part's table (1/kIndexParts of the index) stays in
// the cache while it fills, where inserting in stream order would miss the cache on
// nearly every record (measured: 2-3x slower load for 1M records).
absl::Status EngineStateCodec::LoadLocals(Engine& engine, StateReader* in) {
  uint64_t count = 0;
  absl::Status status = ReadSectionStart(in, kTagLocals, "local records", kLocalBytes, &count);
  if (!status.ok()) return status;
  if (count > UINT32_MAX) return BadState(in->offset(), "more local records than a shard can hold");
  const uint64_t section_offset = in->offset();
  std::array<uint32_t, Engine::kIndexParts> part_sizes{};
  int64_t previous_ms = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t offset = in->offset();
    LocalRecord record{};
    record.digest.low = in->GetU64();
    record.digest.high = in->GetU64();
    record.type = static_cast<EventType>(in->GetU8());
    record.currency = Currency::FromPacked(in->GetU16());
    record.account = in->GetU64();
    record.peer = in->GetU64();
    record.amount = in->GetI64();
    record.time_ms = in->GetI64();
    const bool type_ok = record.type == EventType::kDeposit ||
                         record.type == EventType::kWithdraw ||
                         record.type == EventType::kTransfer;
    if (!type_ok || !ValidCurrencyOrNone(record.currency) || record.amount <= 0) {
      return BadState(offset, StrCat("local record ", i, " has an invalid type, currency or amount"));
    }
    if (record.time_ms < previous_ms || !ValidEventTime(record.time_ms, engine.last_time_ms_)) {
      return BadState(offset, StrCat("local record ", i, " is out of time order"));
    }
    previous_ms = record.time_ms;
    engine.local_records_.push_back(record);
    ++part_sizes[record.digest.high % Engine::kIndexParts];
  }
  // Record numbers grouped by index part (a counting sort).
  std::array<uint32_t, Engine::kIndexParts> next{};
  for (size_t part = 1; part < Engine::kIndexParts; ++part) {
    next[part] = next[part - 1] + part_sizes[part - 1];
  }
  std::vector<uint32_t> by_part(count);
  for (uint32_t i = 0; i < count; ++i) {
    by_part[next[engine.local_records_[i].digest.high % Engine::kIndexParts]++] = i;
  }
  // Records are visited out of order: fetch the one kPrefetchAhead places on early.
  constexpr size_t kPrefetchAhead = 16;
  size_t done = 0;
  for (size_t part = 0; part < Engine::kIndexParts; ++part) {
    Engine::LocalIndex& index = engine.local_index_[part];
    index.reserve(part_sizes[part]);
    for (const size_t end = done + part_sizes[part]; done < end; ++done) {
      if (done + kPrefetchAhead < count) {
        __builtin_prefetch(&engine.local_records_[by_part[done + kPrefetchAhead]]);
      }
      // Pointers into a std::deque stay valid on push_back and pop_front.
      LocalRecord* record = &engine.local_records_[by_part[done]];
      if (!index.emplace(record->digest, record).second) {
        return BadState(section_offset + uint64_t{by_part[done]} * kLocalBytes,
                        StrCat("local record ", by_part[done], " repeats a transaction id"));
      }
    }
  }
  return absl::OkStatus();
}

// One branch of a distributed record (called by LoadDistributed).
absl::Status EngineStateCodec::ReadBranch(StateReader* in, uint64_t offset, Branch* branch) {
  branch->mode = static_cast<Mode>(in->GetU8());
  branch->direction = static_cast<Direction>(in->GetU8());
  branch->step = in->GetU8();
  branch->state = static_cast<BranchState>(in->GetU8());
  branch->currency = Currency::FromPacked(in->GetU16());
  branch->account = in->GetU64();
  branch->amount = in->GetI64();
  if (in->failed()) return BadState(offset, "truncated in a branch");
  if (!ValidBranch(*branch)) return BadState(offset, "a branch has inconsistent fields");
  return absl::OkStatus();
}

// One phase row (called by LoadDistributed).
absl::Status EngineStateCodec::ReadRow(StateReader* in, uint64_t offset, PhaseRow* row) {
  row->spec.mode = static_cast<Mode>(in->GetU8());
  row->spec.from = in->GetU64();
  row->spec.to = in->GetU64();
  row->spec.amount = in->GetI64();
  row->spec.currency = Currency::FromPacked(in->GetU16());
  row->decision = static_cast<Decision>(in->GetU8());
  row->phase = static_cast<RowPhase>(in->GetU8());
  row->debit_try = static_cast<TryStatus>(in->GetU8());
  row->credit_try = static_cast<TryStatus>(in->GetU8());
  row->debit_answer = static_cast<ResultCode>(in->GetU8());
  row->credit_answer = static_cast<ResultCode>(in->GetU8());
  row->debit_end = static_cast<EndStatus>(in->GetU8());
  row->credit_end = static_cast<EndStatus>(in->GetU8());
  const uint8_t out_of_order = in->GetU8();
  row->out_of_order = out_of_order != 0;
  row->attempts = in->GetU32();
  row->created_ms = in->GetI64();
  row->updated_ms = in->GetI64();
  row->lease_owner.assign(in->GetString8());
  row->lease_until_ms = in->GetI64();
  if (in->failed()) return BadState(offset, "truncated in a phase row");
  if (out_of_order > 1 || !ValidRow(*row)) return BadState(offset, "a phase row has a field out of range");
  return absl::OkStatus();
}

// Distributed records with their branches and rows; counts the open rows.
absl::Status EngineStateCodec::LoadDistributed(Engine& engine, StateReader* in,
                                               uint64_t* open_rows) {
  uint64_t count = 0;
  absl::Status status =
      ReadSectionStart(in, kTagDistributed, "distributed records", kMinRecordBytes, &count);
  if (!status.ok()) return status;
  engine.distributed_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t offset = in->offset();
    const std::string_view txid = in->GetString8();
    DistributedRecord record;
    record.last_change_ms = in->GetI64();
    record.queued_ms = in->GetI64();
    const uint16_t branch_count = in->GetU16();
    if (in->failed()) return BadState(offset, StrCat("truncated in distributed record ", i));
    if (status = CheckStoredTxid(offset, txid, "a distributed record"); !status.ok()) return status;
    if (branch_count > in->remaining_bytes() / kBranchBytes) {
      return BadState(offset, StrCat("record ", txid, " claims more branches than bytes left"));
    }
    for (uint16_t b = 0; b < branch_count; ++b) {
      Branch branch;
      if (status = ReadBranch(in, offset, &branch); !status.ok()) return status;
      record.branches.push_back(branch);
    }
    const uint8_t has_row = in->GetU8();
    if (has_row > 1) return BadState(offset, StrCat("record ", txid, " has a bad row flag"));
    if (has_row == 1) {
      record.row = std::make_unique<PhaseRow>();
      if (status = ReadRow(in, offset, record.row.get()); !status.ok()) return status;
      if (!ValidEventTime(record.row->created_ms, engine.last_time_ms_) ||
          !ValidEventTime(record.row->updated_ms, engine.last_time_ms_)) {
        return BadState(offset, StrCat("row ", txid, " has times after the last event"));
      }
      if (!IsFinished(record.row->phase)) ++*open_rows;
    }
    if (in->failed()) return BadState(offset, StrCat("truncated in distributed record ", i));
    if (record.branches.empty() && record.row == nullptr) {
      return BadState(offset, StrCat("record ", txid, " has neither branches nor a row"));
    }
    if (!ValidEventTime(record.last_change_ms, engine.last_time_ms_) ||
        (record.queued_ms != -1 && !ValidEventTime(record.queued_ms, engine.last_time_ms_))) {
      return BadState(offset, StrCat("record ", txid, " has times after the last event"));
    }
    if (!engine.distributed_.emplace(std::string(txid), std::move(record)).second) {
      return BadState(offset, StrCat("record ", txid, " appears twice"));
    }
  }
  return absl::OkStatus();
}

// Every reserve must be exactly what the open TC/C branches on its account hold and
// announce, so that each later confirm or cancel finds the amount it releases.
absl::Status EngineStateCodec::CheckReservesMatchBranches(const Engine& engine) {
  absl::flat_hash_map<AccountId, Reserve> expected;
  for (const auto& [txid, record] : engine.distributed_) {
    for (const Branch& branch : record.branches) {
      if (branch.mode != Mode::kTcc || branch.state != BranchState::kTried) continue;
      Reserve& reserve = expected[branch.account];
      Amount& total = branch.direction == Direction::kDebit ? reserve.held : reserve.pending_credit;
      if (!CheckedAdd(total, branch.amount, &total)) {
        return absl::DataLossError(StrCat("engine state: open branches on account ",
                                          branch.account, " overflow"));
      }
    }
  }
  bool equal = expected.size() == engine.reserves_.size();
  for (auto it = expected.begin(); equal && it != expected.end(); ++it) {
    auto found = engine.reserves_.find(it->first);
    equal = found != engine.reserves_.end() && found->second.held == it->second.held &&
            found->second.pending_credit == it->second.pending_credit;
  }
  if (!equal) {
    return absl::DataLossError(
        "engine state: the reserves disagree with the open TC/C branches");
  }
  return absl::OkStatus();
}

// The distributed collection queue, in time order. Entries may name records that
// are gone or changed since (stale entries), as in the live engine.
absl::Status EngineStateCodec::LoadQueue(Engine& engine, StateReader* in) {
  uint64_t count = 0;
  absl::Status status =
      ReadSectionStart(in, kTagQueue, "collection queue", kMinEntryBytes, &count);
  if (!status.ok()) return status;
  int64_t previous_ms = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t offset = in->offset();
    const int64_t time_ms = in->GetI64();
    const std::string_view txid = in->GetString8();
    if (in->failed()) return BadState(offset, StrCat("truncated in queue entry ", i));
    if (status = CheckStoredTxid(offset, txid, "a queue entry"); !status.ok()) return status;
    if (time_ms < previous_ms || !ValidEventTime(time_ms, engine.last_time_ms_)) {
      return BadState(offset, StrCat("queue entry ", i, " is out of time order"));
    }
    previous_ms = time_ms;
    engine.distributed_collect_.push_back(CollectEntry{time_ms, std::string(txid)});
  }
  return absl::OkStatus();
}

// The open-row index: exactly the rows that are not finished.
absl::Status EngineStateCodec::LoadOpenRows(Engine& engine, StateReader* in, uint64_t open_rows) {
  uint64_t count = 0;
  absl::Status status = ReadSectionStart(in, kTagOpenRows, "open rows", kMinOpenRowBytes, &count);
  if (!status.ok()) return status;
  if (count != open_rows) {
    return BadState(in->offset(), StrCat(count, " open rows listed, ", open_rows, " rows are open"));
  }
  engine.open_rows_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t offset = in->offset();
    const std::string_view txid = in->GetString8();
    if (in->failed()) return BadState(offset, StrCat("truncated in open row ", i));
    const PhaseRow* row = engine.FindRow(txid);
    if (row == nullptr || IsFinished(row->phase)) {
      return BadState(offset, StrCat("open row ", i, " names no open row"));
    }
    if (!engine.open_rows_.insert(std::string(txid)).second) {
      return BadState(offset, StrCat("open row ", txid, " appears twice"));
    }
  }
  return absl::OkStatus();
}

// The running audit totals (LoadState then checks them against the accounts).
absl::Status EngineStateCodec::LoadAudit(Engine& engine, StateReader* in) {
  if (absl::Status status = ExpectTag(in, kTagAudit, "audit"); !status.ok()) return status;
  const uint64_t offset = in->offset();
  AuditTotals& audit = engine.audit_;
  for (__int128* total : {&audit.available, &audit.held, &audit.pending_credit, &audit.deposited,
                          &audit.withdrawn, &audit.moved_in, &audit.moved_out}) {
    *total = in->GetI128();
  }
  if (in->failed()) return BadState(offset, "truncated in the audit totals");
  // Every total sums non-negative amounts. The bound (far above any real total)
  // keeps CheckInvariants' sums of four totals inside 128 bits.
  constexpr __int128 kMaxTotal = static_cast<__int128>(1) << 124;
  for (__int128 total : {audit.available, audit.held, audit.pending_credit, audit.deposited,
                         audit.withdrawn, audit.moved_in, audit.moved_out}) {
    if (total < 0 || total > kMaxTotal) return BadState(offset, "an audit total is out of range");
  }
  return absl::OkStatus();
}

// Public entry points (engine.h documents them); the work is in EngineStateCodec.
void Engine::SaveState(StateWriter* out) const { EngineStateCodec::Save(*this, out); }

StateDigest Engine::Digest() const { return EngineStateCodec::Digest(*this); }

// Loads, then checks the money invariants; on any error the engine is empty again.
absl::Status Engine::LoadState(StateReader* in) {
  if (!IsFresh()) {
    return absl::FailedPreconditionError(
        StrCat("LoadState needs a freshly constructed engine; this one has applied ",
               events_applied_, " events and holds ", accounts_.size(), " accounts and ",
               record_count(), " records"));
  }
  absl::Status status = EngineStateCodec::Load(*this, in);
  std::string error;
  if (status.ok() && !CheckInvariants(&error)) {
    status = absl::DataLossError(StrCat("engine state breaks an invariant once loaded: ", error));
  }
  if (!status.ok()) ClearState();
  return status;
}

// Hex form for logs, snapshot headers and test messages.
std::string StateDigest::ToString() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    out[15 - i] = kHex[(high >> (4 * i)) & 0xf];
    out[31 - i] = kHex[(low >> (4 * i)) & 0xf];
  }
  return out;
}

}  // namespace wallet::shard
