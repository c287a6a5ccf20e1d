#include "saga/saga_flow.h"

#include <string>
#include <utility>
#include <vector>

#include "common/strings.h"

namespace wallet::saga {

namespace {

using xshard::CallResult;
using xshard::Flow;
using xshard::FlowEnv;
using xshard::ResumeIntent;
using xshard::RowView;
using xshard::TransferOutcome;
using xshard::BranchStateIn;
using xshard::TransferSpec;

class SagaFlow : public Flow {
 public:
  using Flow::Flow;

  void ResumeUnfinished(const RowView& row, ResumeIntent intent) override {
    if (row.decision == "none") {
      if (intent == ResumeIntent::kAuto) {
        Step2(0);  // transient failures go forward
      } else {
        AskCreditStep(intent);
      }
      return;
    }
    if (row.decision == "confirm") {
      if (intent == ResumeIntent::kCancel) {
        RefuseIntent(ResultCode::kDecisionFixed, StrCat("saga ", spec_.txid, " has already decided to confirm"));
        return;
      }
      FinalizeCommitted(0);
      return;
    }
    if (intent == ResumeIntent::kConfirm) {
      RefuseIntent(ResultCode::kDecisionFixed, StrCat("saga ", spec_.txid, " has already decided to cancel"));
      return;
    }
    RowView aborted = row;
    aborted.phase = "aborted";
    outcome_ = aborted.FinalOutcome(spec_.txid);
    if (row.debit_end != "done") {
      Compensate(0);
    } else {
      Answer(outcome_);
      if (row.credit_end != "done") {
        FenceCredit(0);
      } else {
        FinishRow(false, 0);
      }
    }
  }

 private:
  // 1. Debit A and create the row, one shard step.
  std::vector<std::string> FirstStepArgs() const override {
    return {"SAGA.STEP", spec_.txid, "1", "DEBIT", StrCat(spec_.from), StrCat(spec_.amount), spec_.currency, "ROW",
            StrCat(spec_.to)};
  }
  void AfterFirstStep() override { Step2(0); }

  // 2. Credit C. Transient failures go forward, never back.
  void Step2(int attempt) {
    Other({"SAGA.STEP", spec_.txid, "2", "CREDIT", StrCat(spec_.to), StrCat(spec_.amount), spec_.currency},
          [this, attempt](CallResult result) {
            if (result.Ok()) {
              credit_try_ = "ok";
              FinalizeCommitted(0);
              return;
            }
            if (result.Transient()) {
              if (attempt + 1 < env_.options.first_phase_attempts) {
                ++env_.stats.resends;
                After(attempt, [this, attempt] { Step2(attempt + 1); });
              } else {
                ResendLater(attempt, [this, attempt] { Step2(attempt + 1); });
              }
              return;
            }
            const ResultCode code = result.Code().value_or(ResultCode::kUnavailable);
            if (code == ResultCode::kFenced) {
              // Step 2 was compensated first: another driver decided to cancel.
              out_of_order_ = true;
              ResumeFromRow();
              return;
            }
            credit_try_ = "failed";
            credit_answer_ = std::string(ResultCodeName(code));
            outcome_ = TransferOutcome::Rejected(
                code, StrCat(result.reply.error_message(), "; the debit was refunded, nothing moved"));
            Compensate(0);
          });
  }

  // 3. The forward end: the decision and the end in one row update; then the client hears.
  void FinalizeCommitted(int attempt) {
    Home({"ROW.SET", spec_.txid, "decision", "confirm", "phase", "committed", "credit_try", "ok"},
         [this, attempt](CallResult result) {
           if (result.Ok()) {
             Answer(TransferOutcome::Committed());
             Finished(true);
             return;
           }
           if (result.Code() == ResultCode::kDecisionFixed || result.Code() == ResultCode::kBadTransition) {
             ResumeFromRow();
             return;
           }
           if (result.Transient()) {
             ResendLater(attempt, [this, attempt] { FinalizeCommitted(attempt + 1); });
             return;
           }
           Alarm("the home shard refused to commit the row", result);
         });
  }

  // 3'. Refund A, with the decision, in one shard step.
  void Compensate(int attempt) {
    std::vector<std::string> args = {"SAGA.COMPENSATE", spec_.txid, "1", "ROW", "decision", "cancel", "phase",
                                     "cancelling"};
    if (credit_try_ == "sent" || credit_try_ == "failed") args.insert(args.end(), {"credit_try", credit_try_});
    if (!credit_answer_.empty()) args.insert(args.end(), {"credit_answer", credit_answer_});
    Home(std::move(args), [this, attempt](CallResult result) {
      if (result.Ok()) {
        Answer(outcome_);
        FenceCredit(0);
        return;
      }
      const std::optional<ResultCode> code = result.Code();
      if (code == ResultCode::kDecisionFixed || code == ResultCode::kBadTransition) {
        ResumeFromRow();
        return;
      }
      // OVERFLOW (A cannot take the refund now) is retried like a transient failure.
      if (result.Transient() || code == ResultCode::kOverflow) {
        ResendLater(attempt, [this, attempt] { Compensate(attempt + 1); });
        return;
      }
      Alarm("the home shard refused the refund", result);
    });
  }

  // 4'. Fence step 2 on C's shard (or undo it, if a late copy ran).
  void FenceCredit(int attempt) {
    Other({"SAGA.COMPENSATE", spec_.txid, "2"}, [this, attempt](CallResult result) {
      if (result.Ok()) {
        FinishRow(false, 0);
        return;
      }
      if (result.Transient()) {
        ResendLater(attempt, [this, attempt] { FenceCredit(attempt + 1); });
        return;
      }
      Alarm("the target shard refused to fence step 2", result);
    });
  }

  // An operator's intent on a row without a decision: allowed by step 2's state.
  void AskCreditStep(ResumeIntent intent) {
    AskOther(
        [this, intent](const CallResult& result) {
          const bool done = BranchStateIn(result.reply, "step:2") == "done";
          if (intent == ResumeIntent::kConfirm && done) {
            FinalizeCommitted(0);
          } else if (intent == ResumeIntent::kConfirm) {
            RefuseIntent(ResultCode::kBadTransition,
                         StrCat("confirm refused: step 2 of saga ", spec_.txid, " has not been applied; cancel it"));
          } else if (done) {
            RefuseIntent(ResultCode::kBadTransition,
                         StrCat("cancel refused: step 2 of saga ", spec_.txid, " has been applied; confirm it"));
          } else {
            if (credit_try_ == "none") credit_try_ = "sent";
            outcome_ = TransferOutcome::Rejected(
                ResultCode::kAborted, StrCat("saga ", spec_.txid, " was cancelled by an operator; nothing moved"));
            Compensate(0);
          }
        },
        0);
  }

  TransferOutcome outcome_;
};

}  // namespace

std::shared_ptr<Flow> MakeSagaFlow(std::shared_ptr<FlowEnv> env, TransferSpec spec, xshard::OutcomeCallback done) {
  return std::make_shared<SagaFlow>(env, std::move(spec), std::move(done));
}

}  // namespace wallet::saga
