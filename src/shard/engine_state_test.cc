// Tests for the engine's state streams and digest (Engine::SaveState, LoadState,
// Digest; grammar in engine.cc): a rich state survives a save and load with the same
// digest, statistics and behaviour; the digest is the same however the state was
// reached and changes with every single command; malformed streams are DataLoss,
// never a crash, and leave the engine empty.
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/money.h"
#include "common/partition.h"
#include "common/result_code.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "shard/engine.h"
#include "shard/events.h"
#include "shard/state_io.h"

namespace wallet::shard {
namespace {

constexpr uint32_t kPartitions = 16;
constexpr int64_t kStartMs = 1'000'000;
constexpr int64_t kWindowMs = 60'000;
// Where the counters (events_applied, records_collected, records_created) sit in a
// stream: after "WENG", the version, the partition count and the last event time.
constexpr size_t kCountersOffset = 4 + 4 + 4 + 8;
constexpr size_t kCountersBytes = 3 * 8;

EngineOptions Options() {
  EngineOptions options;
  options.partition_count = kPartitions;
  options.idempotency_window_ms = kWindowMs;
  return options;
}

std::unique_ptr<Engine> NewEngine() {
  return std::make_unique<Engine>(Options(), PartitionSet::All(kPartitions));
}

Currency Cur(std::string_view code) {
  Currency currency;
  EXPECT_TRUE(Currency::Parse(code, &currency)) << code;
  return currency;
}
const Currency kUsd = Cur("USD"), kEur = Cur("EUR"), kGbp = Cur("GBP");

// "CODE/note message": what a command answered, for comparing two engines.
std::string Answer(const Result& result) {
  return StrCat(ResultCodeName(result.code), "/", static_cast<int>(result.note), " ",
                result.message);
}

std::string StatsLine(const EngineStats& s) {
  return StrCat("accounts=", s.accounts, " reserves=", s.accounts_with_reserve,
                " local=", s.local_records, " distributed=", s.distributed_records,
                " open_rows=", s.open_rows, " events=", s.events_applied,
                " collected=", s.records_collected, " created=", s.records_created);
}

std::string SaveToString(const Engine& engine) {
  std::string bytes;
  StringStateWriter writer(&bytes);
  engine.SaveState(&writer);
  writer.Flush();
  EXPECT_EQ(writer.bytes_written(), bytes.size());
  return bytes;
}

// A fresh engine loaded from `bytes`; the load must succeed and use every byte.
std::unique_ptr<Engine> LoadCopy(std::string_view bytes) {
  std::unique_ptr<Engine> engine = NewEngine();
  StateReader reader(bytes);
  absl::Status status = engine->LoadState(&reader);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(reader.at_end()) << reader.remaining_bytes() << " bytes left unread";
  return engine;
}

// Keeps every appended event with its own copies of the borrowed strings (a deque
// of strings never moves them, so the views stay valid).
class EventRecorder : public EventSink {
 public:
  void Append(const Event& event) override {
    Event copy = event;
    copy.txid = strings_.emplace_back(event.txid);
    copy.text = strings_.emplace_back(event.text);
    events_.push_back(copy);
  }
  const std::vector<Event>& events() const { return events_; }

 private:
  std::deque<std::string> strings_;
  std::vector<Event> events_;
};

// An engine taken through every kind of state: accounts in three currencies, local
// records of each type (some collected), TC/C holds and pending credits, a fence from
// an empty cancel and one from an empty compensation, saga steps with a compensation,
// phase rows open, leased, updated and finished, and a stale collection queue entry.
class EngineState : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = NewEngine();
    engine_->set_event_sink(&recorder_);
    Build();
  }

  void Ok(const Result& result, Result::Note note = Result::Note::kNone) {
    ASSERT_EQ(result.code, ResultCode::kOk) << Answer(result);
    ASSERT_EQ(result.note, note) << Answer(result);
  }

  void Build() {
    now_ = kStartMs;
    const Currency currencies[] = {kUsd, kUsd, kUsd, kUsd, kEur, kEur, kGbp, kGbp};
    for (AccountId id = 1; id <= 8; ++id) {
      Ok(engine_->Open(id, currencies[id - 1], now_));
      Ok(engine_->Deposit(StrCat("d-", id), id, 100'000, now_));
    }
    now_ += 1000;
    Ok(engine_->Withdraw("w-1", 1, 500, now_));
    Ok(engine_->Transfer("x-1", 1, 2, 700, kUsd, now_));
    Ok(engine_->Transfer("x-2", 5, 6, 300, kEur, now_));
    now_ += 1000;
    const RowSpec tcc_home{Mode::kTcc, 1, 3, 1000, kUsd};
    Ok(engine_->TccTry("tcc-1", Direction::kDebit, 1, 1000, kUsd, &tcc_home, now_));
    Ok(engine_->TccTry("tcc-1", Direction::kCredit, 3, 1000, kUsd, nullptr, now_));
    // The decision goes with the confirm (ROW suffix): a row update, then the branch.
    RowUpdate decide_confirm;
    decide_confirm.mask = RowUpdate::kDecision;
    decide_confirm.decision = Decision::kConfirm;
    Ok(engine_->TccConfirm("tcc-1", Direction::kDebit, now_, &decide_confirm));  // the credit stays pending
    Ok(engine_->TccTry("tcc-2", Direction::kDebit, 2, 400, kUsd, nullptr, now_));  // a hold
    Ok(engine_->TccCancel("tcc-3", Direction::kDebit, now_), Result::Note::kEmptyRollback);
    Ok(engine_->TccTry("tcc-4", Direction::kDebit, 5, 250, kEur, nullptr, now_));
    Ok(engine_->TccConfirm("tcc-4", Direction::kDebit, now_));  // finished: queued
    now_ += 1000;
    const RowSpec saga_home{Mode::kSaga, 7, 8, 100, kGbp};
    Ok(engine_->SagaStep("saga-1", 1, Direction::kDebit, 7, 100, kGbp, &saga_home, now_));
    Ok(engine_->SagaStep("saga-1", 2, Direction::kCredit, 8, 100, kGbp, nullptr, now_));
    RowUpdate decide_cancel;
    decide_cancel.mask = RowUpdate::kDecision;
    decide_cancel.decision = Decision::kCancel;
    Ok(engine_->RowSet("saga-1", decide_cancel, now_));  // compensations need it on the row shard
    Ok(engine_->SagaCompensate("saga-1", 2, now_));
    Ok(engine_->SagaCompensate("saga-2", 1, now_), Result::Note::kEmptyRollback);
    Ok(engine_->RowCreate("row-1", RowSpec{Mode::kTcc, 4, 99, 50, kUsd}, now_));
    RowUpdate decide;
    decide.mask = RowUpdate::kDecision | RowUpdate::kAttempts | RowUpdate::kCreditTry;
    decide.decision = Decision::kConfirm;
    decide.attempts_added = 2;
    decide.credit_try = TryStatus::kSent;
    Ok(engine_->RowSet("row-1", decide, now_));
    Ok(engine_->RowClaim("row-1", "router-a", 30'000, now_));
    Ok(engine_->RowCreate("row-2", RowSpec{Mode::kSaga, 6, 98, 60, kEur}, now_));
    RowUpdate abort;
    abort.mask = RowUpdate::kDecision | RowUpdate::kPhase | RowUpdate::kDebitAnswer;
    abort.decision = Decision::kCancel;
    abort.phase = RowPhase::kAborted;
    abort.debit_answer = ResultCode::kInsufficientFunds;
    Ok(engine_->RowSet("row-2", abort, now_));
    // tcc-5 finishes, then changes again (a fence on its credit side): its first
    // queue entry is stale.
    Ok(engine_->TccTry("tcc-5", Direction::kDebit, 3, 10, kUsd, nullptr, now_));
    Ok(engine_->TccConfirm("tcc-5", Direction::kDebit, now_));
    now_ += 500;
    Ok(engine_->TccCancel("tcc-5", Direction::kCredit, now_), Result::Note::kEmptyRollback);
    // Past the window of the first deposits: collect some of them.
    now_ = kStartMs + kWindowMs + 2000;
    ASSERT_EQ(engine_->Collect(now_, 5), 5u);
    Ok(engine_->Deposit("d-late", 4, 123, now_));
    Ok(engine_->Transfer("x-late", 2, 1, 10, kUsd, now_));
    std::string error;
    ASSERT_TRUE(engine_->CheckInvariants(&error)) << error;
    const EngineStats stats = engine_->stats();
    ASSERT_EQ(stats.accounts_with_reserve, 2u);  // 2 holds tcc-2, 3 awaits tcc-1's credit
    ASSERT_EQ(stats.open_rows, 3u);              // tcc-1, saga-1, row-1
    ASSERT_EQ(stats.records_collected, 5u);
  }

  std::unique_ptr<Engine> engine_;
  EventRecorder recorder_;
  int64_t now_ = 0;
};

TEST_F(EngineState, RoundTripKeepsDigestInvariantsAndStats) {
  const std::string bytes = SaveToString(*engine_);
  std::unique_ptr<Engine> loaded = LoadCopy(bytes);
  EXPECT_EQ(loaded->Digest(), engine_->Digest());
  EXPECT_EQ(StatsLine(loaded->stats()), StatsLine(engine_->stats()));
  EXPECT_EQ(loaded->last_event_time_ms(), engine_->last_event_time_ms());
  std::string error;
  EXPECT_TRUE(loaded->CheckInvariants(&error)) << error;
  for (AccountId id = 1; id <= 8; ++id) {
    AccountView want, got;
    ASSERT_TRUE(engine_->Balance(id, &want).ok());
    ASSERT_TRUE(loaded->Balance(id, &got).ok());
    EXPECT_EQ(std::make_tuple(got.available, got.held, got.pending_credit, got.currency.packed()),
              std::make_tuple(want.available, want.held, want.pending_credit,
                              want.currency.packed()))
        << "account " << id;
  }
  for (int64_t min_age_ms : {int64_t{0}, int64_t{30'000}}) {
    EXPECT_EQ(loaded->RowsInDoubt(min_age_ms, 10, now_), engine_->RowsInDoubt(min_age_ms, 10, now_));
  }
  // A loaded engine saves the same state again.
  EXPECT_EQ(LoadCopy(SaveToString(*loaded))->Digest(), engine_->Digest());
}

TEST_F(EngineState, LoadedEngineReplaysOldTxidsAndRefusesReuse) {
  std::unique_ptr<Engine> loaded = LoadCopy(SaveToString(*engine_));
  Engine& e = *loaded;
  const RowSpec tcc_home{Mode::kTcc, 1, 3, 1000, kUsd};
  // Same arguments: the first outcome, nothing changes.
  const StateDigest before = e.Digest();
  EXPECT_TRUE(e.Deposit("d-8", 8, 100'000, now_).replayed());
  EXPECT_TRUE(e.Withdraw("w-1", 1, 500, now_).replayed());
  EXPECT_TRUE(e.Transfer("x-late", 2, 1, 10, kUsd, now_).replayed());
  EXPECT_TRUE(e.TccTry("tcc-1", Direction::kDebit, 1, 1000, kUsd, &tcc_home, now_).replayed());
  EXPECT_TRUE(e.TccConfirm("tcc-1", Direction::kDebit, now_).replayed());
  EXPECT_TRUE(e.SagaCompensate("saga-1", 2, now_).replayed());
  EXPECT_TRUE(e.RowCreate("row-1", RowSpec{Mode::kTcc, 4, 99, 50, kUsd}, now_).replayed());
  EXPECT_EQ(e.TccCancel("tcc-3", Direction::kDebit, now_).note, Result::Note::kEmptyRollback);
  EXPECT_EQ(e.Digest(), before);
  // Other arguments, or a fence: refused as the original refuses them.
  EXPECT_EQ(e.Deposit("d-8", 8, 99, now_).code, ResultCode::kTxidReused);
  EXPECT_EQ(e.Transfer("x-late", 2, 1, 11, kUsd, now_).code, ResultCode::kTxidReused);
  EXPECT_EQ(e.Deposit("tcc-2", 1, 5, now_).code, ResultCode::kTxidReused);
  EXPECT_EQ(e.TccTry("tcc-2", Direction::kDebit, 2, 401, kUsd, nullptr, now_).code,
            ResultCode::kTxidReused);
  EXPECT_EQ(e.TccTry("tcc-3", Direction::kDebit, 1, 5, kUsd, nullptr, now_).code,
            ResultCode::kFenced);
  EXPECT_EQ(e.SagaStep("saga-2", 1, Direction::kDebit, 7, 5, kGbp, nullptr, now_).code,
            ResultCode::kFenced);
  EXPECT_EQ(e.RowCreate("row-2", RowSpec{Mode::kSaga, 6, 98, 61, kEur}, now_).code,
            ResultCode::kRowExists);
  EXPECT_EQ(e.Digest(), before);
  // Collected ids are new again, in both engines alike.
  EXPECT_EQ(Answer(e.Deposit("d-1", 1, 7, now_)), Answer(engine_->Deposit("d-1", 1, 7, now_)));
  EXPECT_EQ(e.Digest(), engine_->Digest());
}

TEST_F(EngineState, LoadedEngineGoesOnExactlyLikeTheOriginal) {
  std::unique_ptr<Engine> loaded = LoadCopy(SaveToString(*engine_));
  const int64_t t = now_;
  using Command = std::function<Result(Engine&)>;
  RowUpdate confirming;
  confirming.mask = RowUpdate::kPhase;
  confirming.phase = RowPhase::kConfirming;
  RowUpdate committed = confirming;
  committed.phase = RowPhase::kCommitted;
  const std::vector<Command> commands = {
      [&](Engine& e) { return e.RowClaim("row-1", "router-b", 10'000, t + 10); },
      [&](Engine& e) { return e.RowClaim("row-1", "router-b", 10'000, t + 40'000); },
      [&](Engine& e) { return e.TccConfirm("tcc-1", Direction::kCredit, t + 40'001); },
      [&](Engine& e) { return e.TccCancel("tcc-2", Direction::kDebit, t + 40'002); },
      [&](Engine& e) { return e.TccTry("tcc-2", Direction::kCredit, 4, 9, kUsd, nullptr, t + 40'003); },
      [&](Engine& e) { return e.SagaCompensate("saga-1", 1, t + 40'004); },
      [&](Engine& e) { return e.RowSet("row-1", confirming, t + 40'005); },
      [&](Engine& e) { return e.RowSet("row-1", committed, t + 40'006); },
      [&](Engine& e) { return e.Deposit("d-new", 3, 1, t + 40'007); },
      [&](Engine& e) { return e.Withdraw("w-new", 3, 1'000'000, t + 40'008); },
  };
  for (size_t i = 0; i < commands.size(); ++i) {
    ASSERT_EQ(Answer(commands[i](*loaded)), Answer(commands[i](*engine_))) << "command " << i;
    ASSERT_EQ(loaded->Digest(), engine_->Digest()) << "after command " << i;
  }
  // Collection a little at a time, far beyond every window: the same records go in
  // the same order until none is left.
  size_t removed_in_all = 0;
  for (int64_t at = t + 40'010; at < t + 40'010 + 5 * kWindowMs; at += 3000) {
    const size_t removed = engine_->Collect(at, 2);
    ASSERT_EQ(loaded->Collect(at, 2), removed) << "at " << at;
    ASSERT_EQ(loaded->Digest(), engine_->Digest()) << "after collecting at " << at;
    removed_in_all += removed;
  }
  EXPECT_GT(removed_in_all, 10u);
  // Left: tcc-1 and saga-1 (their rows never finished) and tcc-2 (a credit still tried).
  EXPECT_EQ(engine_->stats().distributed_records, 3u);
  EXPECT_EQ(engine_->stats().local_records, 0u);
  EXPECT_EQ(StatsLine(loaded->stats()), StatsLine(engine_->stats()));
}

TEST_F(EngineState, ReplayedEventsGiveTheSameDigestAsTheLiveEngine) {
  std::unique_ptr<Engine> replayed = NewEngine();
  ASSERT_EQ(recorder_.events().size(), engine_->stats().events_applied);
  for (const Event& event : recorder_.events()) replayed->Apply(event);
  EXPECT_EQ(replayed->Digest(), engine_->Digest());
  EXPECT_EQ(LoadCopy(SaveToString(*replayed))->Digest(), engine_->Digest());
  EXPECT_EQ(StatsLine(replayed->stats()), StatsLine(engine_->stats()));
}

// Second phases with a row update (two events per command), the decision guard and
// the end fields set in Apply: live, replayed and reloaded engines agree, and refused
// commands leave the digest as it was.
TEST_F(EngineState, SecondPhasesWithARowUpdateReplayAndReloadToTheSameDigest) {
  const int64_t t = engine_->last_event_time_ms() + 10;
  RowUpdate attempts;
  attempts.mask = RowUpdate::kAttempts;
  attempts.attempts_added = 1;
  RowUpdate decide_confirm;
  decide_confirm.mask = RowUpdate::kDecision;
  decide_confirm.decision = Decision::kConfirm;
  RowUpdate aborted;
  aborted.mask = RowUpdate::kPhase;
  aborted.phase = RowPhase::kAborted;
  // Refused: the update (decision fixed), the guard (decided to confirm), no row here.
  const StateDigest before = engine_->Digest();
  const size_t events_before = recorder_.events().size();
  EXPECT_EQ(engine_->SagaCompensate("saga-1", 1, t, &decide_confirm).code, ResultCode::kDecisionFixed);
  EXPECT_EQ(engine_->TccCancel("tcc-1", Direction::kCredit, t, &attempts).code,
            ResultCode::kDecisionFixed);
  EXPECT_EQ(engine_->TccCancel("tcc-2", Direction::kDebit, t, &attempts).code, ResultCode::kNoRow);
  EXPECT_EQ(engine_->TccConfirm("row-1", Direction::kDebit, t, &attempts).code,
            ResultCode::kNotTried);
  EXPECT_EQ(engine_->TccCancel("row-1", Direction::kCredit, t).code, ResultCode::kDecisionFixed);
  EXPECT_EQ(engine_->Digest(), before);
  EXPECT_EQ(recorder_.events().size(), events_before);
  // Applied.
  Ok(engine_->TccConfirm("tcc-1", Direction::kCredit, t, &attempts));  // update + branch
  Ok(engine_->SagaCompensate("saga-1", 1, t + 1, &aborted));          // finishes, then undoes
  Ok(engine_->TccCancel("tcc-2", Direction::kDebit, t + 2));          // no row: unguarded
  Ok(engine_->SagaCompensate("saga-1", 3, t + 3), Result::Note::kEmptyRollback);  // a fence
  ASSERT_EQ(recorder_.events().size(), events_before + 6);  // 2 + 2 + 1 + 1
  const PhaseRow* tcc = engine_->FindRow("tcc-1");
  EXPECT_EQ(tcc->debit_end, EndStatus::kDone);
  EXPECT_EQ(tcc->credit_end, EndStatus::kDone);
  EXPECT_EQ(tcc->attempts, 1u);
  const PhaseRow* saga = engine_->FindRow("saga-1");
  EXPECT_EQ(saga->phase, RowPhase::kAborted);
  EXPECT_EQ(saga->debit_end, EndStatus::kDone);
  EXPECT_EQ(saga->credit_end, EndStatus::kDone);
  EXPECT_EQ(saga->updated_ms, t + 1);

  std::unique_ptr<Engine> replayed = NewEngine();
  for (const Event& event : recorder_.events()) replayed->Apply(event);
  EXPECT_EQ(replayed->Digest(), engine_->Digest());
  EXPECT_EQ(LoadCopy(SaveToString(*engine_))->Digest(), engine_->Digest());
  EXPECT_EQ(LoadCopy(SaveToString(*replayed))->Digest(), engine_->Digest());
  EXPECT_EQ(StatsLine(replayed->stats()), StatsLine(engine_->stats()));
}

TEST_F(EngineState, DigestIgnoresTheOrderTablesWereFilledIn) {
  std::unique_ptr<Engine> up = NewEngine();
  std::unique_ptr<Engine> down = NewEngine();
  for (AccountId id = 1; id <= 2000; ++id) {
    ASSERT_TRUE(up->Open(id, id % 3 == 0 ? kEur : kUsd, kStartMs).ok());
    const AccountId other = 2001 - id;
    ASSERT_TRUE(down->Open(other, other % 3 == 0 ? kEur : kUsd, kStartMs).ok());
  }
  EXPECT_EQ(up->Digest(), down->Digest());
  ASSERT_TRUE(down->Open(2001, kUsd, kStartMs).ok());
  EXPECT_NE(up->Digest(), down->Digest());
}

TEST_F(EngineState, DigestLeavesOutTheCounters) {
  std::string bytes = SaveToString(*engine_);
  uint64_t events_applied;
  std::memcpy(&events_applied, bytes.data() + kCountersOffset, 8);
  ASSERT_EQ(events_applied, engine_->stats().events_applied) << "grammar changed?";
  events_applied += 1000;
  std::memcpy(bytes.data() + kCountersOffset, &events_applied, 8);
  std::unique_ptr<Engine> loaded = LoadCopy(bytes);
  EXPECT_EQ(loaded->stats().events_applied, engine_->stats().events_applied + 1000);
  EXPECT_EQ(loaded->Digest(), engine_->Digest());
}

TEST_F(EngineState, DigestChangesWithEverySingleCommand) {
  const std::string bytes = SaveToString(*engine_);
  const StateDigest base = engine_->Digest();
  // Each command runs at the last event time, so only what it changes can change the
  // digest (the time stays the same).
  const int64_t t = engine_->last_event_time_ms();
  RowUpdate attempt;
  attempt.mask = RowUpdate::kAttempts;
  attempt.attempts_added = 1;
  const RowSpec home{Mode::kTcc, 4, 1, 5, kUsd};
  RowUpdate cancelling;
  cancelling.mask = RowUpdate::kPhase;
  cancelling.phase = RowPhase::kCancelling;
  struct Change {
    std::string name;
    std::function<Result(Engine&)> run;
  };
  const std::vector<Change> changes = {
      {"open", [&](Engine& e) { return e.Open(9, kEur, t); }},
      {"deposit", [&](Engine& e) { return e.Deposit("c-dep", 1, 1, t); }},
      {"withdraw", [&](Engine& e) { return e.Withdraw("c-wd", 1, 1, t); }},
      {"transfer", [&](Engine& e) { return e.Transfer("c-x", 1, 2, 1, kUsd, t); }},
      {"try debit", [&](Engine& e) { return e.TccTry("c-try", Direction::kDebit, 4, 5, kUsd, nullptr, t); }},
      {"try with row", [&](Engine& e) { return e.TccTry("c-row", Direction::kDebit, 4, 5, kUsd, &home, t); }},
      {"try credit", [&](Engine& e) { return e.TccTry("c-cr", Direction::kCredit, 4, 5, kUsd, nullptr, t); }},
      {"confirm", [&](Engine& e) { return e.TccConfirm("tcc-1", Direction::kCredit, t); }},
      {"cancel", [&](Engine& e) { return e.TccCancel("tcc-2", Direction::kDebit, t); }},
      {"fence", [&](Engine& e) { return e.TccCancel("c-fence", Direction::kCredit, t); }},
      {"saga step", [&](Engine& e) { return e.SagaStep("c-saga", 1, Direction::kCredit, 8, 3, kGbp, nullptr, t); }},
      {"compensate", [&](Engine& e) { return e.SagaCompensate("saga-1", 1, t); }},
      {"confirm with row", [&](Engine& e) { return e.TccConfirm("tcc-1", Direction::kCredit, t, &attempt); }},
      {"compensate with row", [&](Engine& e) { return e.SagaCompensate("saga-1", 1, t, &cancelling); }},
      {"replayed compensate with row", [&](Engine& e) { return e.SagaCompensate("saga-1", 2, t, &cancelling); }},
      {"row create", [&](Engine& e) { return e.RowCreate("c-rc", RowSpec{Mode::kSaga, 4, 1, 5, kUsd}, t); }},
      {"row set", [&](Engine& e) { return e.RowSet("row-1", attempt, t); }},
      {"row claim", [&](Engine& e) { return e.RowClaim("row-1", "router-a", 30'001, t); }},
      {"collect", [&](Engine& e) {
         Result result;
         if (e.Collect(t, 1) != 1) result.code = ResultCode::kBusy;
         return result;
       }},
  };
  std::set<std::string> seen = {base.ToString()};
  for (const Change& change : changes) {
    std::unique_ptr<Engine> copy = LoadCopy(bytes);
    const Result result = change.run(*copy);
    // (A replayed branch with a row update that changes the row changes the digest too.)
    ASSERT_TRUE(result.ok() && (!result.replayed() || change.name.rfind("replayed", 0) == 0))
        << change.name << ": " << Answer(result);
    EXPECT_EQ(copy->last_event_time_ms(), t) << change.name;
    EXPECT_NE(copy->Digest(), base) << change.name;
    EXPECT_TRUE(seen.insert(copy->Digest().ToString()).second) << change.name << " collides";
  }
  // Reads and replays change nothing.
  std::unique_ptr<Engine> copy = LoadCopy(bytes);
  AccountView view;
  ASSERT_TRUE(copy->Balance(1, &view).ok());
  ASSERT_TRUE(copy->Deposit("d-8", 8, 100'000, t).replayed());
  EXPECT_EQ(copy->Digest(), base);
}

TEST_F(EngineState, LoadIntoAnEngineWithStateIsRefused) {
  const std::string bytes = SaveToString(*engine_);
  const StateDigest before = engine_->Digest();
  StateReader reader(bytes);
  absl::Status status = engine_->LoadState(&reader);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(engine_->Digest(), before);

  // One opened account is enough to refuse.
  std::unique_ptr<Engine> used = NewEngine();
  ASSERT_TRUE(used->Open(1, kUsd, kStartMs).ok());
  StateReader again(bytes);
  EXPECT_EQ(used->LoadState(&again).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineState, LoadWithAnotherPartitionCountIsRefused) {
  const std::string bytes = SaveToString(*engine_);
  EngineOptions options = Options();
  options.partition_count = kPartitions * 2;
  Engine other(options, PartitionSet::All(options.partition_count));
  StateReader reader(bytes);
  absl::Status status = other.LoadState(&reader);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(other.stats().accounts, 0u);
}

TEST_F(EngineState, EveryTruncationIsDataLossAndLeavesTheEngineEmpty) {
  const std::string bytes = SaveToString(*engine_);
  const StateDigest empty = NewEngine()->Digest();
  std::unique_ptr<Engine> target = NewEngine();
  for (size_t size = 0; size < bytes.size(); ++size) {
    StateReader reader(std::string_view(bytes).substr(0, size));
    absl::Status status = target->LoadState(&reader);
    ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << "prefix of " << size << ": " << status;
    ASSERT_EQ(target->Digest(), empty) << "prefix of " << size;
    ASSERT_EQ(target->stats().events_applied, 0u);
  }
  // The same engine still takes a whole stream afterwards.
  StateReader reader(bytes);
  ASSERT_TRUE(target->LoadState(&reader).ok());
  EXPECT_EQ(target->Digest(), engine_->Digest());
}

TEST_F(EngineState, GarbledBytesAreDataLossOrAVisiblyDifferentState) {
  const std::string bytes = SaveToString(*engine_);
  const StateDigest original = engine_->Digest();
  size_t refused = 0, accepted = 0;
  for (size_t pos = 0; pos < bytes.size(); ++pos) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::string garbled = bytes;
      garbled[pos] = static_cast<char>(garbled[pos] ^ mask);
      std::unique_ptr<Engine> target = NewEngine();
      StateReader reader(garbled);
      absl::Status status = target->LoadState(&reader);
      SCOPED_TRACE(StrCat("byte ", pos, " ^ ", mask, ": ", status.ToString()));
      if (!status.ok()) {
        // FailedPrecondition only for the version and partition count fields.
        ASSERT_TRUE(status.code() == absl::StatusCode::kDataLoss ||
                    (status.code() == absl::StatusCode::kFailedPrecondition && pos >= 4 && pos < 12));
        ASSERT_EQ(target->stats().accounts, 0u);
        ++refused;
        continue;
      }
      // Accepted: a consistent state, which the digest tells apart from the original
      // (unless only a counter changed: the digest leaves those out).
      std::string error;
      ASSERT_TRUE(target->CheckInvariants(&error)) << error;
      const bool in_counters = pos >= kCountersOffset && pos < kCountersOffset + kCountersBytes;
      ASSERT_EQ(target->Digest() == original, in_counters);
      ++accepted;
    }
  }
  // Most damage is caught by the stream's own checks; the rest needs the snapshot's
  // checksum and digest (snapshot_test.cc).
  EXPECT_GT(refused, accepted);
}

TEST_F(EngineState, HugeCountsAreRefusedBeforeAllocating) {
  const std::string bytes = SaveToString(*engine_);
  // The accounts count follows the preamble and the "ACCT" tag.
  const size_t count_offset = kCountersOffset + kCountersBytes + 4;
  ASSERT_EQ(bytes.substr(count_offset - 4, 4), "ACCT");
  for (uint64_t count : {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{bytes.size()}}) {
    std::string garbled = bytes;
    std::memcpy(garbled.data() + count_offset, &count, 8);
    std::unique_ptr<Engine> target = NewEngine();
    StateReader reader(garbled);
    absl::Status status = target->LoadState(&reader);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_NE(status.message().find("cannot fit"), absl::string_view::npos) << status;
  }
}

TEST(StateReaderTest, ReadsPastTheEndFailStickilyWithZeros) {
  const std::string bytes("\x01\x02\x03", 3);
  StateReader reader(bytes, /*base_offset_bytes=*/100);
  EXPECT_EQ(reader.GetU16(), 0x0201);
  EXPECT_EQ(reader.offset(), 102u);
  EXPECT_EQ(reader.GetU32(), 0u);
  EXPECT_TRUE(reader.failed());
  EXPECT_TRUE(reader.at_end());
  EXPECT_EQ(reader.GetU8(), 0u);  // sticky, even though a byte was left
  EXPECT_TRUE(reader.failed());
}

TEST(StateWriterTest, ValuesCrossBufferBoundariesIntact) {
  std::string bytes;
  StringStateWriter writer(&bytes, /*buffer_bytes=*/64);
  for (uint64_t i = 0; i < 1000; ++i) {
    writer.PutU8(static_cast<uint8_t>(i));
    writer.PutU64(i * 0x0101010101010101ULL);
    writer.PutString8(StrCat("s", i));
  }
  writer.Flush();
  ASSERT_EQ(writer.bytes_written(), bytes.size());
  StateReader reader(bytes);
  for (uint64_t i = 0; i < 1000; ++i) {
    ASSERT_EQ(reader.GetU8(), static_cast<uint8_t>(i));
    ASSERT_EQ(reader.GetU64(), i * 0x0101010101010101ULL);
    ASSERT_EQ(reader.GetString8(), StrCat("s", i));
  }
  EXPECT_TRUE(reader.at_end());
  EXPECT_FALSE(reader.failed());
}

}  // namespace
}  // namespace wallet::shard
