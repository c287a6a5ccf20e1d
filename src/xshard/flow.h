// flow.h — the machinery both cross-shard executors share: one Flow object drives
// one transaction through its messages (a state machine of callbacks on the loop
// thread), and FlowEnv is what every flow of a router shares.
//
// A Flow owns itself: each message or timer in flight holds a shared_ptr to it, so
// it lives exactly as long as something can still move it on, and a router that
// dies simply drops it; the phase row on the home shard (written before each step
// that matters) is what another router's resolver resumes from. The subclasses
// (tcc::TccFlow, saga::SagaFlow) are the protocols; this class gives them
//   - routing: Home() messages go to the row's shard (the owner of `from`, or the
//     shard a resolver found the row on), Other() messages to the owner of `to`;
//   - the client's answer: exactly once, and at the latest after answer_within_ms
//     (then kInDoubt while the flow goes on in the background);
//   - resends: After() waits an exponential backoff; background resends first renew
//     the flow's lease on the row (ROW.CLAIM), and stop if another owner holds it;
//   - reading the row back (ReadRow) and following a transaction another driver owns
//     (Follow: a repeated request polls the row until it finishes or time runs out).
// Threading: loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "common/event_loop.h"
#include "xshard/shard_caller.h"
#include "xshard/transfer.h"

namespace wallet::xshard {

using OutcomeCallback = std::function<void(const TransferOutcome&)>;

// What all flows of one router share. The loop must outlive every flow; the caller
// must outlive the executor (after `closed` no flow calls it).
struct FlowEnv {
  FlowEnv(EventLoop& loop_in, ShardCaller& caller_in, ExecutorOptions options_in)
      : loop(loop_in), caller(caller_in), options(std::move(options_in)) {}
  EventLoop& loop;
  ShardCaller& caller;
  const ExecutorOptions options;
  ExecutorStats stats;
  // Transactions driven here now (so the resolver does not start a second driver).
  absl::flat_hash_set<std::string> active;
  // Set when the router shuts its executor down: flows still held by pending
  // messages or timers then send nothing, answer nobody and touch no timer.
  bool closed = false;
};

// An operator's or resolver's wish for a row without a decision.
enum class ResumeIntent : uint8_t {
  kAuto,     // the resolver: TC/C confirms when both tries are in place, else cancels;
             // a saga goes forward
  kConfirm,  // an operator: confirm, refused (BAD_TRANSITION) unless every try succeeded
  kCancel,   // an operator: cancel, refused (BAD_TRANSITION) when it is no longer safe
};

class Flow : public std::enable_shared_from_this<Flow> {
 public:
  // The flow shares `env` (kept alive by the flow even after its executor is gone).
  Flow(std::shared_ptr<FlowEnv> env, TransferSpec spec, OutcomeCallback done);
  virtual ~Flow();
  Flow(const Flow&) = delete;
  Flow& operator=(const Flow&) = delete;

  // A new transfer (client request): the mode's first step (FirstStepArgs), sent
  // by FirstStep, then AfterFirstStep.
  void Start();
  // A row found in doubt (resolver) or named by an operator; the caller has claimed
  // the row's lease for env.options.owner and read it. A finished row is answered
  // with its outcome; an unfinished one goes to ResumeUnfinished.
  void Resume(const RowView& row, ResumeIntent intent);

  void set_home_shard(std::string shard_id) { home_shard_ = std::move(shard_id); }
  const TransferSpec& spec() const { return spec_; }

 protected:
  using Next = std::function<void()>;
  using OnResult = std::function<void(CallResult)>;
  using OnRow = std::function<void(const RowView&)>;

  // The mode's command for the home debit that creates the row, and what follows it.
  virtual std::vector<std::string> FirstStepArgs() const = 0;
  virtual void AfterFirstStep() = 0;
  // The mode's own resume of an unfinished row (credit_try_, credit_answer_ and
  // out_of_order_ are loaded from it).
  virtual void ResumeUnfinished(const RowView& row, ResumeIntent intent) = 0;

  void Home(std::vector<std::string> args, OnResult next);
  void Other(std::vector<std::string> args, OnResult next);

  // The client's answer (the first call wins; later ones are ignored) and its timer.
  void Answer(TransferOutcome outcome);
  bool answered() const { return answered_; }
  // Waits the backoff of resend number `attempt` (0 = first resend), then runs next.
  void After(int attempt, Next next);
  // Background resend: renews the lease on the row, then waits, then runs next. If
  // another owner holds the row the flow stops (its driver finishes the job).
  void ResendLater(int attempt, Next next);
  // ROW.GET on the home shard, resent until it answers. A missing row: on_missing.
  void ReadRow(OnRow next, Next on_missing);
  // The first step (the home debit that creates the row), sent up to
  // first_phase_attempts times: +OK -> on_ok; +REPLAYED of a first send -> Follow();
  // a refusal -> the client gets it (nothing was created); no answer -> kInDoubt
  // (any row left is a resolver's). `maybe_applied`: an earlier send may have run.
  void FirstStep(std::vector<std::string> args, int attempt, bool maybe_applied, Next on_ok);
  // Another driver decided or finished first: read the row and go on from it.
  void ResumeFromRow();
  // The row's last update: credit_end done and the final phase; resent until answered.
  void FinishRow(bool committed, int attempt);
  // Asks the other shard about this transaction (TX), resent until it answers.
  void AskOther(std::function<void(const CallResult&)> next, int attempt);
  // An operator's intent that is not safe (or contradicts the decision): refused.
  void RefuseIntent(ResultCode code, std::string message);
  // A repeated request for a transaction another driver owns: polls the row and
  // answers with its final outcome, or kInDoubt when answer_within_ms runs out.
  void Follow();
  // The transaction reached its end here (row finished): counters, active set.
  void Finished(bool committed);
  // The flow stops without finishing (another driver owns the row, or an alarm).
  void Abandon(std::string_view why);
  // A reply that contradicts the protocol: logged loudly, counted, flow abandoned.
  void Alarm(std::string_view what, const CallResult& result);

  std::shared_ptr<FlowEnv> env_holder_;
  FlowEnv& env_;
  TransferSpec spec_;
  // What the row records of the credit side (written with the decision).
  std::string credit_try_ = "sent";
  std::string credit_answer_;  // its refusal code, "" when none
  bool out_of_order_ = false;
  int mode_index() const { return static_cast<int>(spec_.mode); }

 private:
  void FollowPoll(int64_t deadline_ms);
  void ReadRowAttempt(int attempt, OnRow next, Next on_missing);

  OutcomeCallback done_;
  std::string home_shard_;  // "" = the owner of spec_.from
  bool answered_ = false;
  bool ended_ = false;
  bool registered_ = false;
  EventLoop::TimerId answer_timer_ = 0;
};

}  // namespace wallet::xshard
