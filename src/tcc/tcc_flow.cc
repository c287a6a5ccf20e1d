#include "tcc/tcc_flow.h"

#include <string>
#include <utility>
#include <vector>

#include "common/strings.h"

namespace wallet::tcc {

namespace {

using xshard::CallResult;
using xshard::Flow;
using xshard::FlowEnv;
using xshard::ResumeIntent;
using xshard::RowView;
using xshard::TransferOutcome;
using xshard::BranchStateIn;
using xshard::TransferSpec;

class TccFlow : public Flow {
 public:
  using Flow::Flow;

  void ResumeUnfinished(const RowView& row, ResumeIntent intent) override {
    if (row.decision == "none") {
      if (intent == ResumeIntent::kCancel) {
        CancelAsResumed();
        return;
      }
      // Confirm only when both tries are in place: ask the credit branch's shard.
      AskCreditBranch(intent);
      return;
    }
    confirm_ = row.decision == "confirm";
    if ((intent == ResumeIntent::kConfirm && !confirm_) || (intent == ResumeIntent::kCancel && confirm_)) {
      RefuseIntent(ResultCode::kDecisionFixed, StrCat("transaction ", spec_.txid, " has already decided to ", row.decision));
      return;
    }
    if (!confirm_) {
      RowView aborted = row;
      aborted.phase = "aborted";
      outcome_ = aborted.FinalOutcome(spec_.txid);
    }
    if (row.debit_end != "done") {
      Decide(0);
    } else {
      Answer(confirm_ ? TransferOutcome::Committed() : outcome_);
      if (row.credit_end != "done") {
        SecondPhaseCredit(0);
      } else {
        FinishRow(confirm_, 0);
      }
    }
  }

 private:
  // 1. The home try: available -> held, and the row, in one shard step.
  std::vector<std::string> FirstStepArgs() const override {
    return {"TCC.TRY", spec_.txid, "DEBIT", StrCat(spec_.from), StrCat(spec_.amount), spec_.currency, "ROW",
            StrCat(spec_.to)};
  }
  void AfterFirstStep() override { TryCredit(0); }

  // 2. The credit try on the other shard.
  void TryCredit(int attempt) {
    Other({"TCC.TRY", spec_.txid, "CREDIT", StrCat(spec_.to), StrCat(spec_.amount), spec_.currency},
          [this, attempt](CallResult result) {
            if (result.Ok()) {
              confirm_ = true;
              credit_try_ = "ok";
              Decide(0);
              return;
            }
            if (result.Transient()) {
              if (attempt + 1 < env_.options.first_phase_attempts) {
                ++env_.stats.resends;
                After(attempt, [this, attempt] { TryCredit(attempt + 1); });
                return;
              }
              confirm_ = false;
              credit_try_ = "sent";
              outcome_ = TransferOutcome::Rejected(
                  ResultCode::kAborted, StrCat("transfer ", spec_.txid, " was cancelled: the target account's shard "
                                               "did not answer (", result.ToString(),
                                               "); nothing moved, retry with a new transaction id"));
              Decide(0);
              return;
            }
            const ResultCode code = result.Code().value_or(ResultCode::kUnavailable);
            confirm_ = false;
            credit_try_ = "failed";
            credit_answer_ = std::string(ResultCodeName(code));
            if (code == ResultCode::kFenced) out_of_order_ = true;
            outcome_ = TransferOutcome::Rejected(code, StrCat(result.reply.error_message(), "; nothing moved"));
            Decide(0);
          });
  }

  // 3. The decision, written with the home branch's second phase in one shard step.
  void Decide(int attempt) {
    std::vector<std::string> args;
    if (confirm_) {
      args = {"TCC.CONFIRM", spec_.txid, "DEBIT",      "ROW", "decision", "confirm", "phase", "confirming",
              "credit_try",  "ok",       "credit_answer", "OK"};
    } else {
      args = {"TCC.CANCEL", spec_.txid, "DEBIT", "ROW", "decision", "cancel", "phase", "cancelling"};
      if (credit_try_ == "sent" || credit_try_ == "failed") {
        args.insert(args.end(), {"credit_try", credit_try_});
      }
      if (!credit_answer_.empty()) args.insert(args.end(), {"credit_answer", credit_answer_});
      if (out_of_order_) args.insert(args.end(), {"out_of_order", "1"});
    }
    Home(std::move(args), [this, attempt](CallResult result) {
      if (result.Ok()) {
        Answer(confirm_ ? TransferOutcome::Committed() : outcome_);
        SecondPhaseCredit(0);
        return;
      }
      const std::optional<ResultCode> code = result.Code();
      if (code == ResultCode::kDecisionFixed || code == ResultCode::kBadTransition) {
        ResumeFromRow();  // another driver decided (or finished) first
        return;
      }
      if (result.Transient()) {
        ResendLater(attempt, [this, attempt] { Decide(attempt + 1); });
        return;
      }
      Alarm(confirm_ ? "the home shard refused the confirm" : "the home shard refused the cancel", result);
    });
  }

  // 4. The credit branch's second phase.
  void SecondPhaseCredit(int attempt) {
    Other({confirm_ ? "TCC.CONFIRM" : "TCC.CANCEL", spec_.txid, "CREDIT"}, [this, attempt](CallResult result) {
      if (result.Ok()) {
        if (result.Empty()) out_of_order_ = true;  // the cancel overtook (or replaced) the try: fenced
        FinishRow(confirm_, 0);
        return;
      }
      if (result.Transient()) {
        ResendLater(attempt, [this, attempt] { SecondPhaseCredit(attempt + 1); });
        return;
      }
      Alarm(confirm_ ? "the credit branch refused its confirm" : "the credit branch refused its cancel", result);
    });
  }

  // Resume of a row without a decision: confirm when the credit branch was tried.
  void AskCreditBranch(ResumeIntent intent) {
    AskOther(
        [this, intent](const CallResult& result) {
          const std::string state = BranchStateIn(result.reply, "branch:CREDIT");
          if (state == "tried" || state == "confirmed") {
            confirm_ = true;
            credit_try_ = "ok";
            Decide(0);
          } else if (intent == ResumeIntent::kConfirm) {
            RefuseIntent(ResultCode::kBadTransition, StrCat("confirm refused: the credit branch of ", spec_.txid,
                                                            " was never tried on its shard; cancel it"));
          } else {
            CancelAsResumed();
          }
        },
        0);
  }

  void CancelAsResumed() {
    confirm_ = false;
    if (credit_try_ == "none") credit_try_ = "sent";
    RowView aborted;
    aborted.phase = "aborted";
    aborted.credit_try = credit_try_;
    aborted.credit_answer = credit_answer_.empty() ? "OK" : credit_answer_;
    outcome_ = aborted.FinalOutcome(spec_.txid);
    Decide(0);
  }

  bool confirm_ = false;
  TransferOutcome outcome_;  // a cancel's outcome for the client
};

}  // namespace

std::shared_ptr<Flow> MakeTccFlow(std::shared_ptr<FlowEnv> env, TransferSpec spec, xshard::OutcomeCallback done) {
  return std::make_shared<TccFlow>(env, std::move(spec), std::move(done));
}

}  // namespace wallet::tcc
