// engine.h — the shard's balance engine: an event-sourced state machine.
//
// Pure: no sockets, no files, no clock. Every call that may change state is handed
// the current time by its caller. Each mutation goes
//
//     command → validate against state → Event → EventSink::Append → Apply
//
// and only Apply changes state, so replaying the appended events into a fresh
// engine (Engine::Apply) rebuilds the same state. A rejected command returns a
// Result with one code per business rule and changes nothing.
//
// Money rules kept here (see ../../docs/shard-protocol.md for the wire form):
//   - amounts are int64 minor units; available, held and pending credit are never
//     negative, and available + held + pending credit of an account never exceeds
//     INT64_MAX (checked before any increase), so no later confirm can overflow;
//   - every mutation with a transaction id is idempotent: the same id with the same
//     arguments returns the first outcome (Result::replayed) and changes nothing; with
//     other arguments it is kTxidReused. Rejected commands leave no record, so a
//     rejected id may be retried;
//   - records of finished transactions are kept for the idempotency window, then
//     removed by Collect() a bounded number at a time.
//
// Cross-shard second phases (TccConfirm, TccCancel, SagaCompensate):
//   - they may carry a row update (`row_update`, ROW.SET's fields) for the txid's
//     phase row, which must be on this shard (else kNoRow). The update is validated
//     as RowSet validates it and the branch operation against the row as it will be
//     after the update; only when both pass are events committed: a kRowUpdate (only
//     if the update changes the row), then the branch event, in that order and in
//     the same call. So one command may append two events; a crash between them
//     leaves "decision written, branch not yet done", which executors handle;
//   - decision guard: on the shard holding the row, a second phase that would
//     succeed (apply, replay or fence) must agree with the row's decision (after the
//     update): confirm needs `confirm`, cancel and compensation need `cancel`. The
//     opposite decision is kDecisionFixed, no decision yet kBadTransition. The
//     branch's own refusals (kNotTried, kAlreadyCancelled, kAlreadyConfirmed,
//     kInsufficientFunds, ...) come before the guard. Shards without the row (the
//     other side of the transfer) are not guarded;
//   - end fields follow the branches: applying a kTccConfirm/kTccCancel (fences
//     too) on the shard holding the row sets that direction's debit_end/credit_end
//     to done and updated_ms to the event time; a kSagaCompensate does the same by
//     the compensated step's direction (a fence of a step never seen sets nothing).
//     This happens in Apply, finished rows included, so a replay rebuilds it;
//   - a row created by a try/step with `home` starts with debit_try ok and
//     credit_try sent (the executor sends the credit's try right after).
//
// Not thread-safe: one engine per shard event loop.
//
// Example:
//   Engine engine(EngineOptions{}, PartitionSet::All(1024));
//   engine.Open(7, usd, now_ms);
//   engine.Deposit("dep-1", 7, 10'000, now_ms);
//   Result r = engine.Transfer("tx-1", 7, 8, 2'500, usd, now_ms);
//   if (r.code != ResultCode::kOk) ...;
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "common/money.h"
#include "common/partition.h"
#include "common/result_code.h"
#include "common/strings.h"
#include "common/txid_digest.h"
#include "shard/events.h"
#include "shard/state_io.h"

namespace wallet::shard {

struct EngineOptions {
  uint32_t partition_count = kDefaultPartitionCount;
  // How long records of finished transactions (and fences) are kept, so that a
  // retry with the same id is recognised. Retries later than this are new requests.
  int64_t idempotency_window_ms = 10 * 60 * 1000;
  // Bounds on what clients can make the engine hold; past them mutations that need
  // a new record are refused with kBusy (never by forgetting ids early).
  size_t max_accounts = 100'000'000;
  size_t max_txn_records = 50'000'000;
  // Saga steps are numbered 1..max_saga_step.
  uint8_t max_saga_step = 16;
};

// What a command did. code == kOk and replayed == false: applied now.
struct Result {
  enum class Note : uint8_t {
    kNone,
    kReplayed,       // idempotent replay of an earlier success: nothing changed now
    kEmptyRollback,  // cancel/compensation that found no try/step: a fence was recorded
  };
  ResultCode code = ResultCode::kOk;
  Note note = Note::kNone;
  uint32_t partition = 0;  // kWrongPartition: the partition this shard does not own
  std::string message;     // on error: human-readable details (no CR/LF)

  bool ok() const { return code == ResultCode::kOk; }
  bool replayed() const { return note == Note::kReplayed; }
};

struct AccountView {
  Amount available = 0;
  Amount held = 0;            // reserved by unfinished TC/C try-debits
  Amount pending_credit = 0;  // announced by unfinished TC/C try-credits
  Currency currency;
};

// Creation arguments of a phase state row.
struct RowSpec {
  Mode mode = Mode::kTcc;
  AccountId from = 0;
  AccountId to = 0;
  Amount amount = 0;
  Currency currency;
  friend bool operator==(const RowSpec&, const RowSpec&) = default;
};

// A row of the phase state table, kept on a cross-shard transaction's home shard.
struct PhaseRow {
  RowSpec spec;
  Decision decision = Decision::kNone;
  RowPhase phase = RowPhase::kTrying;
  TryStatus debit_try = TryStatus::kNone;
  TryStatus credit_try = TryStatus::kNone;
  ResultCode debit_answer = ResultCode::kOk;
  ResultCode credit_answer = ResultCode::kOk;
  EndStatus debit_end = EndStatus::kNone;
  EndStatus credit_end = EndStatus::kNone;
  bool out_of_order = false;
  uint32_t attempts = 0;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  std::string lease_owner;
  int64_t lease_until_ms = 0;
};

// One participation of this shard in a cross-shard transaction.
enum class BranchState : uint8_t {
  kTried = 1,        // TC/C: try applied, waiting for confirm/cancel
  kConfirmed = 2,    // TC/C
  kCancelled = 3,    // TC/C: try undone
  kDone = 4,         // saga: step applied
  kCompensated = 5,  // saga: step undone
  kFenced = 6,       // cancel/compensation arrived first: later tries/steps refused
};
std::string_view BranchStateName(BranchState state);

struct Branch {
  Mode mode = Mode::kTcc;
  Direction direction = Direction::kNone;  // kNone for a saga fence (step not seen)
  uint8_t step = 0;                        // saga step number; 0 for TC/C
  BranchState state = BranchState::kTried;
  Currency currency;
  AccountId account = 0;
  Amount amount = 0;
};

// What this shard knows of a transaction id (TX command).
struct TxView {
  enum class Kind : uint8_t { kUnknown, kLocal, kDistributed };
  Kind kind = Kind::kUnknown;
  // kLocal:
  EventType local_type = EventType::kDeposit;
  AccountId account = 0;
  AccountId peer = 0;
  Amount amount = 0;
  Currency currency;
  int64_t time_ms = 0;
  // kDistributed:
  std::vector<Branch> branches;
  const PhaseRow* row = nullptr;  // valid until the next mutation
};

struct EngineStats {
  size_t accounts = 0;
  size_t accounts_with_reserve = 0;
  size_t local_records = 0;
  size_t distributed_records = 0;
  size_t open_rows = 0;
  uint64_t events_applied = 0;
  uint64_t records_collected = 0;
  uint64_t records_created = 0;  // idempotency records ever created (local + distributed)
};

// Money totals for audits (128-bit: sums over many accounts may exceed int64).
struct AuditTotals {
  __int128 available = 0;
  __int128 held = 0;
  __int128 pending_credit = 0;
  __int128 deposited = 0;
  __int128 withdrawn = 0;
  __int128 moved_in = 0;   // cross-shard money that arrived: confirmed credits, saga credits, debit compensations
  __int128 moved_out = 0;  // cross-shard money that left: confirmed debits, saga debits, credit compensations
  // Conservation on one shard: available + held == deposited - withdrawn + moved_in - moved_out.
};

// A 128-bit digest of an engine's whole logical state (Engine::Digest). Equal
// states have equal digests however they were reached (commands, replayed events or
// a loaded snapshot) and whatever the hash tables' iteration order.
struct StateDigest {
  uint64_t low = 0;
  uint64_t high = 0;
  friend bool operator==(const StateDigest&, const StateDigest&) = default;
  // 32 lower-case hex digits, high half first.
  std::string ToString() const;
};

class Engine {
 public:
  Engine(const EngineOptions& options, PartitionSet owned);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The sink sees every event before it is applied. Not owned; may be null.
  void set_event_sink(EventSink* sink) { sink_ = sink; }
  void set_owned_partitions(PartitionSet owned);
  const PartitionSet& owned_partitions() const { return owned_; }
  const EngineOptions& options() const { return options_; }

  // ---- Accounts and local transactions ----
  Result Open(AccountId account, Currency currency, int64_t now_ms);
  Result Deposit(std::string_view txid, AccountId account, Amount amount, int64_t now_ms);
  Result Withdraw(std::string_view txid, AccountId account, Amount amount, int64_t now_ms);
  // Atomic transfer between two accounts both owned by this shard.
  Result Transfer(std::string_view txid, AccountId from, AccountId to, Amount amount,
                  Currency currency, int64_t now_ms);

  // ---- TC/C branch primitives ----
  // Debit try: available -> held. Credit try: records a pending credit. With `home`
  // (debit only), the transaction's phase state row is created in the same step.
  Result TccTry(std::string_view txid, Direction direction, AccountId account, Amount amount,
                Currency currency, const RowSpec* home, int64_t now_ms);
  // The second phases take an optional update of the txid's phase row (see the
  // class comment: validated together, committed as kRowUpdate then the branch event).
  Result TccConfirm(std::string_view txid, Direction direction, int64_t now_ms,
                    const RowUpdate* row_update = nullptr);
  // Without a try, records a fence (Note::kEmptyRollback) that refuses a later try.
  Result TccCancel(std::string_view txid, Direction direction, int64_t now_ms,
                   const RowUpdate* row_update = nullptr);

  // ---- Saga step primitives (local transactions keyed by (txid, step)) ----
  Result SagaStep(std::string_view txid, uint8_t step, Direction direction, AccountId account,
                  Amount amount, Currency currency, const RowSpec* home, int64_t now_ms);
  // Undoes a step; without the step, records a fence (Note::kEmptyRollback).
  Result SagaCompensate(std::string_view txid, uint8_t step, int64_t now_ms,
                        const RowUpdate* row_update = nullptr);

  // ---- Phase state table ----
  Result RowCreate(std::string_view txid, const RowSpec& spec, int64_t now_ms);
  Result RowSet(std::string_view txid, const RowUpdate& update, int64_t now_ms);
  // Takes (or renews) the row's lease for `owner` unless another owner holds an
  // unexpired one (kLeased).
  // Longest lease a claim may take.
  static constexpr int64_t kMaxLeaseMs = 10 * 60 * 1000;
  Result RowClaim(std::string_view txid, std::string_view owner, int64_t lease_ms,
                  int64_t now_ms);

  // ---- Collection ----
  // Removes at most max_records records whose idempotency window ended. Returns how
  // many were removed. Appends a kCollect event only when there is work: records to
  // remove, or stale queue entries (left by records that changed after finishing) to
  // drop — so a collection may log an event and remove nothing.
  size_t Collect(int64_t now_ms, size_t max_records);

  // ---- Replay ----
  // Applies an event produced by an engine (read back from the log). Events are
  // trusted: an event that does not fit the state is a fatal invariant failure.
  void Apply(const Event& event);
  // Replay hint: prefetches the account and idempotency-index slots Apply(event)
  // will touch, so that a caller who knows its next events (log replay) overlaps
  // their cache misses. Changes nothing.
  void Prefetch(const Event& event) const;

  // ---- Reads (no events) ----
  Result Balance(AccountId account, AccountView* out) const;
  const PhaseRow* FindRow(std::string_view txid) const;
  TxView FindTx(std::string_view txid) const;
  // Unfinished rows whose last update is at least min_age_ms old, oldest first.
  std::vector<std::string> RowsInDoubt(int64_t min_age_ms, size_t limit, int64_t now_ms) const;
  EngineStats stats() const;
  const AuditTotals& audit() const { return audit_; }
  // Recomputes totals from every account and checks each invariant (O(accounts)).
  bool CheckInvariants(std::string* error) const;
  int64_t last_event_time_ms() const { return last_time_ms_; }

  // ---- State snapshots (snapshot.h puts these in files) ----
  // Streams the complete state: everything later commands, Apply and Collect depend
  // on, and the counters of stats(). Changes nothing, takes no locks and touches no
  // global state, so a fork child may call it on its copy-on-write image. The caller
  // calls out->Flush() afterwards. The stream's grammar is in engine.cc.
  void SaveState(StateWriter* out) const;
  // Loads a stream written by SaveState into this freshly constructed engine (no
  // events applied yet, else FailedPrecondition). Malformed input is DataLoss with
  // what was wrong and the reader's offset; the engine is then empty again. A stream
  // saved with another partition count is FailedPrecondition. Owned partitions,
  // options and the event sink are this engine's own and stay as they are. Reads up
  // to the stream's end marker; the caller checks that nothing follows if it cares.
  absl::Status LoadState(StateReader* in);
  // The digest of the logical state: O(state), one small scratch buffer, no change.
  // Covers accounts (id, available, currency, flags), reserves (held, pending
  // credit), local records in queue order with every field, distributed records
  // (txid, branches in order, the phase row with every field including the lease,
  // last change and queue times), the collection queue in order (stale entries
  // too), the open-row set, the audit totals, the last event time and the partition
  // count. Hash tables are summed per item (XXH3-128), queues hashed in order, so
  // iteration order and how the state was reached do not matter. Leaves out what is
  // not state: the counters events_applied, records_collected and records_created,
  // the options (window, limits), the owned partitions and the event sink.
  StateDigest Digest() const;

 private:
  friend class EngineStateCodec;  // engine.cc: the state stream and the digest
  bool IsFresh() const;
  void ClearState();

  struct Account {
    Amount available = 0;
    uint16_t currency = 0;
    uint8_t flags = 0;  // kHasReserve
  };
  static constexpr uint8_t kHasReserve = 1;
  struct Reserve {
    Amount held = 0;
    Amount pending_credit = 0;
  };
  // A finished local transaction, kept for the idempotency window. Lives in
  // local_records_ (time order) and is indexed by local_index_ (txid digest ->
  // record). 56 bytes, no allocation: the txid itself is not kept, only its digest.
  struct LocalRecord {
    TxidDigest digest;
    EventType type;
    Currency currency;
    AccountId account;
    AccountId peer;
    Amount amount;
    int64_t time_ms;
  };
  struct DistributedRecord {
    absl::InlinedVector<Branch, 2> branches;
    std::unique_ptr<PhaseRow> row;
    int64_t last_change_ms = 0;
    int64_t queued_ms = -1;  // time of this record's newest collection-queue entry
    bool finished() const;
  };
  bool CheckBranchMode(std::string_view txid, const DistributedRecord& record, Mode mode,
                       Result* result) const;
  struct CollectEntry {
    int64_t time_ms;
    std::string txid;
  };

  int64_t EventTime(int64_t now_ms) const { return now_ms > last_time_ms_ ? now_ms : last_time_ms_; }
  void Commit(const Event& event);
  size_t record_count() const { return local_records_.size() + distributed_.size(); }

  // Validation helpers: fill *result and return false when the rule fails.
  bool CheckOwned(AccountId account, Result* result) const;
  bool CheckTxid(std::string_view txid, Result* result) const;
  bool CheckRoomForRecord(Result* result) const;
  const Account* FindAccount(AccountId account, Result* result) const;
  bool CheckCurrency(AccountId account, const Account& record, Currency currency,
                     Result* result) const;
  bool CheckHeadroom(AccountId account, const Account& record, Amount amount,
                     Result* result) const;
  bool CheckFunds(AccountId account, const Account& record, Amount amount, Result* result) const;
  bool CheckRowSpec(const RowSpec& spec, Result* result) const;
  bool CheckNotLocal(std::string_view txid, Result* result) const;
  Result SingleAccountOp(EventType type, std::string_view txid, AccountId account, Amount amount,
                         int64_t now_ms);
  Result FirstPhase(Mode mode, std::string_view txid, uint8_t step, Direction direction,
                    AccountId account, Amount amount, Currency currency, const RowSpec* home,
                    int64_t now_ms);
  // The second phases: argument checks, the optional row update, the branch's own
  // rules (PlanTccEnd / PlanCompensate fill *event and set *commit when an event is
  // due), the decision guard, then the commits.
  Result SecondPhase(EventType type, std::string_view txid, Direction direction, uint8_t step,
                     const RowUpdate* row_update, int64_t now_ms);
  Result PlanTccEnd(EventType type, std::string_view txid, Direction direction,
                    const DistributedRecord* record, Event* event, bool* commit) const;
  Result PlanCompensate(uint8_t step, const DistributedRecord* record, Event* event,
                        bool* commit) const;
  Result ReplayLocal(std::string_view txid, const LocalRecord& record, EventType type,
                     AccountId account, AccountId peer, Amount amount, Currency currency) const;
  Reserve ReserveOf(AccountId account, const Account& record) const;

  // Apply helpers.
  Account& MutableAccount(AccountId account);
  Reserve& MutableReserve(AccountId account, Account& record);
  void DropReserveIfEmpty(AccountId account, Account& record);
  void RecordLocal(const Event& event);
  DistributedRecord& MutableDistributed(std::string_view txid);
  void CreateRow(std::string_view txid, DistributedRecord& record, const RowSpec& spec,
                 int64_t time_ms);
  void CreateRowWithDebit(const Event& event, DistributedRecord& record);
  void MarkEndDone(DistributedRecord& record, Direction direction, int64_t time_ms);
  void AfterDistributedChange(std::string_view txid, DistributedRecord& record, int64_t time_ms);
  struct CollectPlan {
    size_t local = 0;                // local records to pop
    size_t distributed_entries = 0;  // distributed queue entries to pop
    size_t removed = 0;              // records removed in all
  };
  CollectPlan PlanCollect(int64_t cutoff_ms, size_t max_records) const;
  bool IsCollectable(const CollectEntry& entry) const;
  void ApplyCollect(int64_t cutoff_ms, size_t max_records);

  EngineOptions options_;
  PartitionSet owned_;
  EventSink* sink_ = nullptr;
  int64_t last_time_ms_ = 0;

  absl::flat_hash_map<AccountId, Account> accounts_;
  absl::flat_hash_map<AccountId, Reserve> reserves_;
  std::deque<LocalRecord> local_records_;  // time order: the collection queue
  // The local-record index, split by digest into kIndexParts tables so that a table
  // doubling rehashes 1/kIndexParts of the records: the pause of one growth step is
  // that much shorter (absl tables grow by rehashing everything at once).
  static constexpr size_t kIndexParts = 64;
  using LocalIndex = absl::flat_hash_map<TxidDigest, LocalRecord*, TxidDigestHash>;
  LocalIndex& IndexPart(const TxidDigest& digest) { return local_index_[digest.high % kIndexParts]; }
  const LocalIndex& IndexPart(const TxidDigest& digest) const {
    return local_index_[digest.high % kIndexParts];
  }
  const LocalRecord* FindLocal(std::string_view txid) const;
  std::array<LocalIndex, kIndexParts> local_index_;  // into local_records_
  absl::flat_hash_map<std::string, DistributedRecord, StringHash, StringEq> distributed_;
  std::deque<CollectEntry> distributed_collect_;  // finished distributed records, time order
  absl::flat_hash_set<std::string, StringHash, StringEq> open_rows_;

  AuditTotals audit_;
  uint64_t events_applied_ = 0;
  uint64_t records_collected_ = 0;
  uint64_t records_created_ = 0;
};

}  // namespace wallet::shard
