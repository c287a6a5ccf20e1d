#include "shard/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/strings.h"

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

Result Engine::TccConfirm(std::string_view txid, Direction direction, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (!ValidDirection(direction)) return Fail(ResultCode::kMalformed, "direction must be DEBIT or CREDIT");
  if (!CheckNotLocal(txid, &result)) return result;
  auto found = distributed_.find(txid);
  if (found != distributed_.end()) {
    if (!CheckBranchMode(txid, found->second, Mode::kTcc, &result)) return result;
    for (const Branch& branch : found->second.branches) {
      if (branch.direction != direction) continue;
      switch (branch.state) {
        case BranchState::kConfirmed:
          return WithNote(Result::Note::kReplayed);
        case BranchState::kCancelled:
        case BranchState::kFenced:
          return Fail(ResultCode::kAlreadyCancelled,
                      StrCat(DirectionName(direction), " branch of ", txid,
                                   " was cancelled"));
        case BranchState::kTried: {
          Event event;
          event.type = EventType::kTccConfirm;
          event.time_ms = EventTime(now_ms);
          event.txid = txid;
          event.direction = direction;
          Commit(event);
          return result;
        }
        case BranchState::kDone:
        case BranchState::kCompensated:
          break;
      }
    }
  }
  return Fail(ResultCode::kNotTried,
              StrCat(DirectionName(direction), " branch of ", txid, " was never tried here"));
}

Result Engine::TccCancel(std::string_view txid, Direction direction, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (!ValidDirection(direction)) return Fail(ResultCode::kMalformed, "direction must be DEBIT or CREDIT");
  if (!CheckNotLocal(txid, &result)) return result;
  auto found = distributed_.find(txid);
  if (found != distributed_.end()) {
    if (!CheckBranchMode(txid, found->second, Mode::kTcc, &result)) return result;
    for (const Branch& branch : found->second.branches) {
      if (branch.direction != direction) continue;
      switch (branch.state) {
        case BranchState::kCancelled:
          return WithNote(Result::Note::kReplayed);
        case BranchState::kFenced:
          return WithNote(Result::Note::kEmptyRollback);
        case BranchState::kConfirmed:
          return Fail(ResultCode::kAlreadyConfirmed,
                      StrCat(DirectionName(direction), " branch of ", txid,
                                   " was confirmed"));
        case BranchState::kTried:
        case BranchState::kDone:
        case BranchState::kCompensated:
          break;
      }
      Event event;
      event.type = EventType::kTccCancel;
      event.time_ms = EventTime(now_ms);
      event.txid = txid;
      event.direction = direction;
      Commit(event);
      return result;
    }
  } else if (!CheckRoomForRecord(&result)) {
    return result;
  }
  // No try seen: record a fence so that a late try is refused.
  Event event;
  event.type = EventType::kTccCancel;
  event.time_ms = EventTime(now_ms);
  event.txid = txid;
  event.direction = direction;
  Commit(event);
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

Result Engine::SagaCompensate(std::string_view txid, uint8_t step, int64_t now_ms) {
  Result result;
  if (!CheckTxid(txid, &result)) return result;
  if (step < 1 || step > options_.max_saga_step) {
    return Fail(ResultCode::kMalformed,
                StrCat("saga step must be 1-", options_.max_saga_step));
  }
  if (!CheckNotLocal(txid, &result)) return result;
  Event event;
  event.type = EventType::kSagaCompensate;
  event.time_ms = EventTime(now_ms);
  event.txid = txid;
  event.step = step;
  auto found = distributed_.find(txid);
  if (found != distributed_.end()) {
    if (!CheckBranchMode(txid, found->second, Mode::kSaga, &result)) return result;
    for (const Branch& branch : found->second.branches) {
      if (branch.step != step) continue;
      switch (branch.state) {
        case BranchState::kCompensated:
          return WithNote(Result::Note::kReplayed);
        case BranchState::kFenced:
          return WithNote(Result::Note::kEmptyRollback);
        case BranchState::kDone: {
          // Undo: a debit is credited back, a credit is debited back.
          const Account* record = FindAccount(branch.account, &result);
          if (record == nullptr) return result;
          bool ok = branch.direction == Direction::kDebit
                        ? CheckHeadroom(branch.account, *record, branch.amount, &result)
                        : CheckFunds(branch.account, *record, branch.amount, &result);
          if (!ok) return result;
          Commit(event);
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
  Commit(event);  // no step seen: a fence
  return WithNote(Result::Note::kEmptyRollback);
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
  if (!CheckTxid(txid, &result)) return result;
  if (update.mask == 0) return Fail(ResultCode::kMalformed, "nothing to set");
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
    return Fail(ResultCode::kMalformed, "row field value out of range");
  }
  const PhaseRow* row = FindRow(txid);
  if (row == nullptr) return Fail(ResultCode::kNoRow, StrCat("no row for ", txid));
  if (!UpdateChangesRow(*row, update)) return WithNote(Result::Note::kReplayed);
  if (IsFinished(row->phase)) {
    return Fail(ResultCode::kBadTransition, StrCat("row ", txid, " is finished"));
  }
  Decision decision = row->decision;
  if (update.has(RowUpdate::kDecision)) {
    if (row->decision != Decision::kNone && row->decision != update.decision) {
      return Fail(ResultCode::kDecisionFixed,
                  StrCat("row ", txid, " has already decided to ",
                               row->decision == Decision::kConfirm ? "confirm" : "cancel"));
    }
    decision = update.decision;
  }
  if (update.has(RowUpdate::kPhase)) {
    if (!PhaseTransitionAllowed(row->phase, update.phase)) {
      return Fail(ResultCode::kBadTransition,
                  StrCat("row ", txid, " cannot move to that phase from its current one"));
    }
    Decision required = DecisionRequiredBy(update.phase);
    if (required != Decision::kNone && decision != required) {
      return Fail(ResultCode::kBadTransition,
                  StrCat("that phase needs the decision ",
                               required == Decision::kConfirm ? "confirm" : "cancel",
                               " written first or with it"));
    }
  }
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

// What a collection at time_ms may do: pop `local` local records and the first
// `distributed_entries` entries of the distributed queue, removing `removed` records
// in all. Stale queue entries (their record changed again after it was queued) are
// popped without counting, at most kMaxStaleEntriesPerCollect of them per call. Both
// Collect() and ApplyCollect() use this plan, so what Collect() reports is exactly
// what the event does, live and on replay.
Engine::CollectPlan Engine::PlanCollect(int64_t time_ms, size_t max_records) const {
  constexpr size_t kMaxStaleEntriesPerCollect = 1024;
  const int64_t cutoff = time_ms - options_.idempotency_window_ms;
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
  CollectPlan plan = PlanCollect(time_ms, max_records);
  // Stale queue entries alone are still work: logging their removal keeps the queue
  // moving when many of them lead it.
  if (plan.local == 0 && plan.distributed_entries == 0) return 0;
  Event event;
  event.type = EventType::kCollect;
  event.time_ms = time_ms;
  event.amount = static_cast<Amount>(max_records);
  Commit(event);
  return plan.removed;
}

void Engine::ApplyCollect(int64_t time_ms, size_t max_records) {
  const CollectPlan plan = PlanCollect(time_ms, max_records);
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
      if (event.mode != Mode::kNone) {
        CreateRow(event.txid, record,
                  RowSpec{event.mode, event.account, event.peer, event.amount, event.currency},
                  event.time_ms);
        record.row->debit_try = TryStatus::kOk;
      }
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
      if (event.mode != Mode::kNone) {
        CreateRow(event.txid, record,
                  RowSpec{event.mode, event.account, event.peer, event.amount, event.currency},
                  event.time_ms);
        record.row->debit_try = TryStatus::kOk;
      }
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
      ApplyCollect(event.time_ms, static_cast<size_t>(event.amount));
      return;
  }
  WALLET_CHECK(false, "unknown event type");
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

}  // namespace wallet::shard
