#include "xshard/flow.h"

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "common/strings.h"

namespace wallet::xshard {

Flow::Flow(std::shared_ptr<FlowEnv> env, TransferSpec spec, OutcomeCallback done)
    : env_holder_(std::move(env)), env_(*env_holder_), spec_(std::move(spec)), done_(std::move(done)) {
  // A second driver of the same txid in this router (a repeated request while the
  // first runs) is not registered: the first one's entry stays until it ends.
  registered_ = env_.active.insert(spec_.txid).second;
  env_.stats.active_now = env_.active.size();
  answer_timer_ = env_.loop.RunAfter(env_.options.answer_within_ms, [this] {
    answer_timer_ = 0;
    // The timer does not hold the flow: a flow that died (nothing in flight) has
    // cancelled it in its destructor.
    Answer(TransferOutcome::InDoubt(StrCat("transfer ", spec_.txid,
                                           " is still in progress (a shard is slow or unreachable); retry with "
                                           "the same transaction id or ask TX for its outcome")));
  });
}

Flow::~Flow() {
  // The loop outlives every executor and flow (FlowEnv's contract).
  if (answer_timer_ != 0) env_.loop.CancelTimer(answer_timer_);
  if (env_.closed) return;  // the executor and its clients are gone
  if (!answered_ && done_) {
    // Dropped with nothing left to move it on (the router is stopping).
    answered_ = true;
    done_(TransferOutcome::InDoubt(
        StrCat("transfer ", spec_.txid, " was left unfinished here; a resolver will finish it; ask TX or retry with "
                                        "the same transaction id")));
  }
  if (registered_) {
    env_.active.erase(spec_.txid);
    env_.stats.active_now = env_.active.size();
  }
}

void Flow::Home(std::vector<std::string> args, OnResult next) {
  if (env_.closed) return;
  auto self = shared_from_this();
  CallDone done = [self, next = std::move(next)](CallResult result) {
    if (!self->env_.closed) next(std::move(result));
  };
  if (home_shard_.empty()) {
    env_.caller.CallOwnerOf(spec_.from, std::move(args), std::move(done));
  } else {
    env_.caller.CallShard(home_shard_, std::move(args), std::move(done));
  }
}

void Flow::Other(std::vector<std::string> args, OnResult next) {
  if (env_.closed) return;
  auto self = shared_from_this();
  env_.caller.CallOwnerOf(spec_.to, std::move(args),
                          [self, next = std::move(next)](CallResult result) {
                            if (!self->env_.closed) next(std::move(result));
                          });
}

void Flow::Answer(TransferOutcome outcome) {
  if (answered_ || env_.closed) return;
  answered_ = true;
  if (answer_timer_ != 0) {
    env_.loop.CancelTimer(answer_timer_);
    answer_timer_ = 0;
  }
  const int mode = mode_index();
  switch (outcome.kind) {
    case TransferOutcome::Kind::kCommitted:
      ++env_.stats.committed[mode];
      break;
    case TransferOutcome::Kind::kRejected:
      ++(outcome.code == ResultCode::kAborted ? env_.stats.aborted : env_.stats.rejected)[mode];
      break;
    case TransferOutcome::Kind::kInDoubt:
      ++env_.stats.answered_in_doubt[mode];
      break;
  }
  OutcomeCallback done = std::move(done_);
  done_ = nullptr;
  if (done) done(outcome);
}

void Flow::After(int attempt, Next next) {
  if (env_.closed) return;
  const int shift = std::min(attempt, 20);
  const int64_t delay =
      std::min(env_.options.retry_max_ms, env_.options.retry_initial_ms << shift);
  auto self = shared_from_this();
  env_.loop.RunAfter(delay, [self, next = std::move(next)] {
    if (!self->env_.closed) next();
  });
}

void Flow::ResendLater(int attempt, Next next) {
  ++env_.stats.resends;
  After(attempt, [this, attempt, next = std::move(next)] {
    Home({"ROW.CLAIM", spec_.txid, env_.options.owner, std::to_string(env_.options.lease_ms)},
         [this, attempt, next](CallResult result) {
           if (result.Ok()) {
             next();
           } else if (result.Code() == ResultCode::kLeased) {
             ++env_.stats.lost_leases;
             Abandon("another router holds the row's lease and drives it");
           } else if (result.Code() == ResultCode::kBadTransition || result.Code() == ResultCode::kNoRow) {
             // Finished by another driver meanwhile (or collected): read what became of it.
             Follow();
           } else {
             // The home shard is unreachable too: keep waiting, the claim comes first.
             ResendLater(attempt + 1, next);
           }
         });
  });
}

void Flow::ReadRow(OnRow next, Next on_missing) { ReadRowAttempt(0, std::move(next), std::move(on_missing)); }

void Flow::ReadRowAttempt(int attempt, OnRow next, Next on_missing) {
  Home({"ROW.GET", spec_.txid}, [this, attempt, next, on_missing](CallResult result) {
    if (result.kind == CallResult::Kind::kReply && result.reply.type == shardlink::ShardReply::Type::kNil) {
      on_missing();
      return;
    }
    RowView row;
    std::string error;
    if (result.kind == CallResult::Kind::kReply && !result.reply.is_error()) {
      if (ParseRowView(result.reply, &row, &error)) {
        next(row);
      } else {
        Alarm(StrCat("ROW.GET gave an unreadable row (", error, ")"), result);
      }
      return;
    }
    if (!result.Transient()) {
      Alarm("ROW.GET was refused", result);
      return;
    }
    ++env_.stats.resends;
    After(attempt, [this, attempt, next, on_missing] { ReadRowAttempt(attempt + 1, next, on_missing); });
  });
}

void Flow::Start() {
  ++env_.stats.started[mode_index()];
  FirstStep(FirstStepArgs(), 0, false, [this] { AfterFirstStep(); });
}

void Flow::FirstStep(std::vector<std::string> args, int attempt, bool maybe_applied, Next on_ok) {
  std::vector<std::string> copy = args;
  Home(std::move(copy), [this, args = std::move(args), attempt, maybe_applied, on_ok](CallResult result) {
    if (result.Replayed() && !maybe_applied) {
      Follow();  // another request with this txid owns the transaction
      return;
    }
    if (result.Ok()) {
      on_ok();
      return;
    }
    const bool applied_maybe = maybe_applied || result.kind == CallResult::Kind::kUnknown;
    if (result.Transient()) {
      if (attempt + 1 < env_.options.first_phase_attempts) {
        ++env_.stats.resends;
        After(attempt, [this, args, attempt, applied_maybe, on_ok] { FirstStep(args, attempt + 1, applied_maybe, on_ok); });
        return;
      }
      // No row, or a row nobody drives now: a resolver finishes it after its threshold.
      Answer(TransferOutcome::InDoubt(
          applied_maybe ? StrCat("the source account's shard did not answer (", result.ToString(),
                                 "); outcome unknown, retry with the same transaction id")
                        : StrCat("the source account's shard could not be reached (", result.ToString(),
                                 "); nothing was done, retry"),
          result.Code() == ResultCode::kBusy ? ResultCode::kBusy : ResultCode::kUnavailable));
      Abandon("");
      return;
    }
    // A refusal: nothing was created. ROW_EXISTS means the txid names another
    // transaction (its row has other content): to the client, "same id, other arguments".
    ResultCode code = result.Code().value_or(ResultCode::kUnavailable);
    if (code == ResultCode::kRowExists) code = ResultCode::kTxidReused;
    Answer(TransferOutcome::Rejected(code, std::string(result.reply.error_message())));
    Abandon("");
  });
}

void Flow::ResumeFromRow() {
  ReadRow([this](const RowView& row) { Resume(row, ResumeIntent::kAuto); },
          [this] { Alarm("the row vanished after another driver moved it on", CallResult{}); });
}

void Flow::Resume(const RowView& row, ResumeIntent intent) {
  ++env_.stats.resumed;
  if (row.finished()) {
    const bool committed = row.phase == "committed";
    if ((intent == ResumeIntent::kCancel && committed) || (intent == ResumeIntent::kConfirm && !committed)) {
      // An operator asking for the other direction must not read "+OK" as done.
      RefuseIntent(ResultCode::kDecisionFixed, StrCat("transaction ", spec_.txid, " has already ",
                                                      committed ? "committed" : "aborted", "; nothing changed"));
      return;
    }
    Answer(row.FinalOutcome(spec_.txid));
    Abandon("");
    return;
  }
  credit_try_ = row.credit_try;
  credit_answer_ = row.credit_answer == "OK" ? "" : row.credit_answer;
  out_of_order_ = row.out_of_order;
  ResumeUnfinished(row, intent);
}

void Flow::FinishRow(bool committed, int attempt) {
  std::vector<std::string> args = {"ROW.SET", spec_.txid, "credit_end", "done", "phase",
                                   committed ? "committed" : "aborted"};
  if (out_of_order_) args.insert(args.end(), {"out_of_order", "1"});
  Home(std::move(args), [this, committed, attempt](CallResult result) {
    if (result.Ok()) {
      Finished(committed);
      return;
    }
    if (result.Code() == ResultCode::kBadTransition) {
      Abandon("");  // finished by another driver
      return;
    }
    if (result.Transient()) {
      ResendLater(attempt, [this, committed, attempt] { FinishRow(committed, attempt + 1); });
      return;
    }
    Alarm("the home shard refused to finish the row", result);
  });
}

void Flow::AskOther(std::function<void(const CallResult&)> next, int attempt) {
  Other({"TX", spec_.txid}, [this, next, attempt](CallResult result) {
    if (result.kind != CallResult::Kind::kReply || result.reply.is_error()) {
      ResendLater(attempt, [this, next, attempt] { AskOther(next, attempt + 1); });
      return;
    }
    next(result);
  });
}

void Flow::RefuseIntent(ResultCode code, std::string message) {
  Answer(TransferOutcome::Rejected(code, std::move(message)));
  Abandon("");
}

void Flow::Follow() {
  ++env_.stats.followed[mode_index()];
  FollowPoll(env_.loop.now_ms() + env_.options.answer_within_ms);
}

void Flow::FollowPoll(int64_t deadline_ms) {
  ReadRow(
      [this, deadline_ms](const RowView& row) {
        if (row.finished()) {
          Answer(row.FinalOutcome(spec_.txid));
          Abandon("");
          return;
        }
        if (env_.loop.now_ms() >= deadline_ms) {
          Answer(TransferOutcome::InDoubt(StrCat("transfer ", spec_.txid, " is in progress (phase ", row.phase,
                                                 ", decision ", row.decision,
                                                 "); retry with the same transaction id or ask TX")));
          Abandon("");
          return;
        }
        auto self = shared_from_this();
        env_.loop.RunAfter(env_.options.follow_poll_ms, [self, this, deadline_ms] {
          if (!env_.closed) FollowPoll(deadline_ms);
        });
      },
      [this] {
        // No row: the transaction was refused at its first step (nothing moved), or its
        // row was collected after the idempotency window.
        Answer(TransferOutcome::Rejected(ResultCode::kNoRow,
                                         StrCat("no transaction ", spec_.txid, " is recorded on its home shard")));
        Abandon("");
      });
}

void Flow::Finished(bool committed) {
  if (ended_) return;
  ended_ = true;
  ++(committed ? env_.stats.finished_committed : env_.stats.finished_aborted)[mode_index()];
}

void Flow::Abandon(std::string_view why) {
  if (ended_) return;
  ended_ = true;
  if (!why.empty()) LogInfo("transaction %s: %.*s", spec_.txid.c_str(), static_cast<int>(why.size()), why.data());
}

void Flow::Alarm(std::string_view what, const CallResult& result) {
  ++env_.stats.invariant_alarms;
  LogError("transaction %s (%s %llu -> %llu, %lld %s): %.*s: %s; left for an operator (TX.RESOLVE)",
           spec_.txid.c_str(), std::string(TransferModeName(spec_.mode)).c_str(),
           static_cast<unsigned long long>(spec_.from), static_cast<unsigned long long>(spec_.to),
           static_cast<long long>(spec_.amount), spec_.currency.c_str(), static_cast<int>(what.size()), what.data(),
           result.ToString().c_str());
  Answer(TransferOutcome::InDoubt(StrCat("transfer ", spec_.txid, " needs an operator: ", what)));
  Abandon("");
}

}  // namespace wallet::xshard
