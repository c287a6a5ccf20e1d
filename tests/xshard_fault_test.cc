// xshard_fault_test.cc — deterministic, exhaustive fault tests of the cross-shard
// protocol (docs/shard-protocol.md: TC/C and saga, the phase row), driven by the real
// executors (router::TransactionExecutor over tcc::TccFlow and saga::SagaFlow)
// against two real standalone wallet-shard processes.
//
// The flows reach the shards through a test ShardCaller, FaultyCaller, that numbers
// every message the flow sends (across both shards, in send order) and injects a
// scripted fault at message k:
//   die-before  message k and every later one are swallowed: the router died before
//               sending it (no callback ever runs again);
//   die-after   message k is sent; its reply and everything later are swallowed;
//   lose-reply  message k is sent; the flow is told CallResult::Unknown;
//   duplicate   message k is delivered twice (the copy right after the first reply,
//               its reply ignored); the flow gets the first reply;
//   delay       message k is held back and the flow is told Unknown; the held message
//               reaches its shard only after the transfer has ended;
//   drop        message k is not sent and the flow is told Unknown (only as the
//               second fault of a pair, below).
// For each mode and path (success; credit refused by CURRENCY_MISMATCH or
// UNKNOWN_ACCOUNT; debit refused by INSUFFICIENT_FUNDS) the fault-free flow is run
// first to count its messages; then, for every k, each single fault, and two pairs
// that make a message arrive after what should overtake it: delay k + drop k+1 (the
// living router gives up on the step, e.g. TC/C cancels, then the late credit try
// arrives and must be FENCED) and delay k + die-before k+1 (a resolver finishes,
// then the late message arrives). The cases of one path run side by side on the one
// loop (fresh accounts and txids each), in phases:
//   1. start every transfer and run until each has ended (its client was answered and
//      its executor drives nothing) or its router died;
//   2. drop every router (its caller dies, its flows drain, the executor is
//      destroyed) and wait until its lease on the row has lapsed;
//   3. a fresh executor (owner "resolver", fault-free) resumes each row that exists
//      and is not finished (ResumeIntent::kAuto) and drives it to its end;
//   4. the held (delayed) messages are delivered: nothing may change, except that a
//      late first step of a transfer that had left no row (its router gave up on it
//      and told the client "in doubt") starts it, and a second resolver pass then
//      finishes it;
//   5. the checks, against the shards directly (ACCOUNT, ROW.GET, TX, AUDIT,
//      ROW.INDOUBT): money conserved and all-or-nothing, nothing held or pending, the
//      row finished and agreeing with the balances, the client told at most one
//      outcome and never one the balances contradict, a living router finishing its
//      own rows (and, under one fault, telling its client the path's outcome).
// Every case's messages are logged; a failure shows its case (mode/path/script) and
// the log (WALLET_XSHARD_VERBOSE=1 prints every case's). Plus: two drivers at once
// (a resolver while the original flow is still retrying: the lease stops one of
// them) and repeated requests with the same txid.
//
// The test thread is the loop thread. Timing only bounds waits (and the lease lapse,
// which is the point of phase 2); the assertions never depend on speed.
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/numbers.h"
#include "common/event_loop.h"
#include "common/result_code.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "harness/process.h"
#include "router/transactions.h"
#include "shardlink/shard_pool.h"
#include "shardlink/shard_reply.h"
#include "xshard/flow.h"
#include "xshard/shard_caller.h"
#include "xshard/transfer.h"

namespace wallet::test {
namespace {

using router::TransactionExecutor;
using shardlink::ShardPool;
using shardlink::ShardPoolOptions;
using shardlink::ShardReply;
using xshard::CallDone;
using xshard::CallResult;
using xshard::ExecutorOptions;
using xshard::ExecutorStats;
using xshard::ResumeIntent;
using xshard::TransferMode;
using xshard::TransferOutcome;
using xshard::TransferSpec;
using Command = std::vector<std::string>;
using Fields = std::map<std::string, std::string>;

constexpr char kShardA[] = "shard-a";
constexpr char kShardB[] = "shard-b";
constexpr int64_t kLeaseMs = 200;
constexpr int64_t kRetryMaxMs = 50;
constexpr int64_t kAnswerWithinMs = 300;
constexpr int64_t kEndWaitMs = 5'000;  // bounds a flow that never ends, not a success

ExecutorOptions FastOptions(std::string owner) {
  ExecutorOptions options;
  options.owner = std::move(owner);
  options.answer_within_ms = kAnswerWithinMs;
  options.first_phase_attempts = 2;
  options.retry_initial_ms = 5;
  options.retry_max_ms = kRetryMaxMs;
  options.lease_ms = kLeaseMs;
  options.follow_poll_ms = 10;
  return options;
}

std::string Join(const Command& args) {
  std::string out;
  for (const std::string& arg : args) StrAppend(&out, out.empty() ? "" : " ", arg);
  return out;
}

std::string OutcomeString(const TransferOutcome& outcome) {
  switch (outcome.kind) {
    case TransferOutcome::Kind::kCommitted:
      return "committed";
    case TransferOutcome::Kind::kRejected:
      return StrCat("rejected ", ResultCodeName(outcome.code), " (", outcome.message, ")");
    case TransferOutcome::Kind::kInDoubt:
      return StrCat("in doubt ", ResultCodeName(outcome.code), " (", outcome.message, ")");
  }
  return "?";
}

std::string OutcomeString(const std::optional<TransferOutcome>& outcome) {
  return outcome.has_value() ? OutcomeString(*outcome) : "(none)";
}

bool Definite(const std::optional<TransferOutcome>& outcome) {
  return outcome.has_value() && outcome->kind != TransferOutcome::Kind::kInDoubt;
}

CallResult ToResult(const absl::StatusOr<ShardReply>& reply) {
  if (reply.ok()) return CallResult::Reply(*reply);
  if (reply.status().code() == absl::StatusCode::kUnauthenticated) {
    return CallResult::NotSent(std::string(reply.status().message()));
  }
  return CallResult::Unknown(std::string(reply.status().message()));
}

// A flat field/value array (ACCOUNT, ROW.GET, TX, AUDIT) as a map; empty for nil or
// an error.
Fields FieldsOf(const ShardReply& reply) {
  Fields fields;
  if (reply.type != ShardReply::Type::kArray) return fields;
  for (size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    const ShardReply& value = reply.elements[i + 1];
    fields[reply.elements[i].text] =
        value.type == ShardReply::Type::kInteger ? std::to_string(value.integer) : value.text;
  }
  return fields;
}

int64_t IntField(const Fields& fields, const std::string& name) {
  auto it = fields.find(name);
  int64_t value = 0;
  if (it == fields.end() || !absl::SimpleAtoi(ToAbsl(it->second), &value)) return -1;
  return value;
}

// With WALLET_XSHARD_VERBOSE=1, every case's trace is printed (not only failures').
void MaybePrint(const std::string& trace) {
  const char* verbose = getenv("WALLET_XSHARD_VERBOSE");
  if (verbose != nullptr && verbose[0] == '1') std::cout << trace << "\n";
}

std::string FieldOr(const Fields& fields, const std::string& name, std::string fallback = "") {
  auto it = fields.find(name);
  return it == fields.end() ? fallback : it->second;
}

// ---------------------------------------------------------------------------
// The two shards, the loop and the pool, shared by every test of the binary.

class Shards : public ::testing::Environment {
 public:
  static Shards* Get() {
    static Shards* shards = new Shards;  // owned by GoogleTest once registered
    return shards;
  }

  void SetUp() override {
    auto dir = TempDir::Create("xshard-fault");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    for (const char* name : {kShardA, kShardB}) {
      auto shard = ServerProcess::Start(*dir_, name, WalletShardBinary(), {"--in_memory"});
      ASSERT_TRUE(shard.ok()) << shard.status();
      processes_.push_back(*std::move(shard));
    }
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
    auto pool = ShardPool::Create(*loop_, ShardPoolOptions{});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    absl::Status set = pool_->SetShards({{kShardA, StrCat("127.0.0.1:", processes_[0]->port())},
                                         {kShardB, StrCat("127.0.0.1:", processes_[1]->port())}});
    ASSERT_TRUE(set.ok()) << set;
    ready_ = true;
  }

  void TearDown() override {
    ready_ = false;
    pool_.reset();
    loop_.reset();
    for (auto& process : processes_) {
      ExitStatus status = process->Stop();
      EXPECT_TRUE(status.success()) << process->process().argv()[0] << ": " << status.ToString();
    }
    processes_.clear();
    dir_.reset();
  }

  bool ready() const { return ready_; }
  EventLoop& loop() { return *loop_; }
  ShardPool& pool() { return *pool_; }

 private:
  bool ready_ = false;
  std::optional<TempDir> dir_;
  std::vector<std::unique_ptr<ServerProcess>> processes_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<ShardPool> pool_;
};

[[maybe_unused]] ::testing::Environment* const kShardsEnvironment =
    ::testing::AddGlobalTestEnvironment(Shards::Get());

// Which shard holds an account (the test decides: both shards own every partition).
struct Routes {
  absl::flat_hash_map<AccountId, std::string> shard_of;
  std::string Of(AccountId account) const {
    auto it = shard_of.find(account);
    if (it != shard_of.end()) return it->second;
    return account % 2 == 0 ? kShardA : kShardB;
  }
};

// ---------------------------------------------------------------------------
// FaultyCaller

enum class Fault : uint8_t { kNone, kDieBefore, kDieAfter, kLoseReply, kDuplicate, kDelay, kDrop };
constexpr Fault kFaults[] = {Fault::kDieBefore, Fault::kDieAfter, Fault::kLoseReply, Fault::kDuplicate,
                             Fault::kDelay};

std::string_view FaultName(Fault fault) {
  switch (fault) {
    case Fault::kNone:
      return "none";
    case Fault::kDieBefore:
      return "die-before";
    case Fault::kDieAfter:
      return "die-after";
    case Fault::kLoseReply:
      return "lose-reply";
    case Fault::kDuplicate:
      return "duplicate";
    case Fault::kDelay:
      return "delay";
    case Fault::kDrop:
      return "drop";
  }
  return "?";
}

bool RouterDies(Fault fault) { return fault == Fault::kDieBefore || fault == Fault::kDieAfter; }

// Faults by message number (the single-fault cases have one entry).
using Script = std::map<int, Fault>;

// For txids: "k3-die-after", "k1-delay-k2-drop".
std::string ScriptTag(const Script& script) {
  if (script.empty()) return "clean";
  std::string out;
  for (const auto& [at, fault] : script) StrAppend(&out, out.empty() ? "" : "-", "k", at, "-", FaultName(fault));
  return out;
}

std::string ScriptName(const Script& script) {
  if (script.empty()) return "fault-free";
  std::string out;
  for (const auto& [at, fault] : script) StrAppend(&out, out.empty() ? "" : " + ", "k=", at, " ", FaultName(fault));
  return out;
}

// A ShardCaller over the shared pool that numbers the flow's messages and injects the
// scripted faults (see the top of the file). Also: shards can be blocked (messages to
// them are not sent and the flow is told Unknown) and replies of a shard delayed.
// Every message of one caller goes over the same pooled connection of its shard
// (one order key), so a shard sees them in send order.
// Everything a pool callback or a timer needs lives in State (shared), so a reply
// that comes back after the caller is gone is harmless.
class FaultyCaller : public xshard::ShardCaller {
 public:
  FaultyCaller(std::string name, const Routes& routes, uint64_t order_key, Script script = {})
      : routes_(routes), state_(std::make_shared<State>()) {
    state_->name = std::move(name);
    state_->order_key = order_key;
    state_->script = std::move(script);
  }
  ~FaultyCaller() override { state_->dead = true; }

  void CallOwnerOf(AccountId account, std::vector<std::string> args, CallDone done) override {
    CallShard(routes_.Of(account), std::move(args), std::move(done));
  }

  void CallShard(const std::string& shard_id, std::vector<std::string> args, CallDone done) override {
    State& s = *state_;
    const int index = s.messages++;
    const size_t line = s.log.size();
    s.log.push_back(StrCat("#", index, " ", shard_id, ": ", Join(args)));
    auto reply_to = std::make_shared<CallDone>(std::move(done));
    if (s.dead) {
      s.log[line] += "   [not sent: the router is dead]";
      Swallow(state_, std::move(reply_to));
      return;
    }
    auto scripted = s.script.find(index);
    const Fault fault = scripted == s.script.end() ? Fault::kNone : scripted->second;
    if (fault == Fault::kDieBefore) {
      s.dead = true;
      s.log[line] += "   [DIE BEFORE: not sent, the router is dead from here on]";
      Swallow(state_, std::move(reply_to));
      return;
    }
    if (fault == Fault::kDelay) {
      s.held.push_back(Held{shard_id, args});
      s.log[line] += "   [DELAY: held back until the transfer has ended; the flow is told unknown]";
      Deliver(state_, std::move(reply_to), CallResult::Unknown("test: message delayed"), 0);
      return;
    }
    if (fault == Fault::kDrop) {
      s.log[line] += "   [DROP: not sent; the flow is told unknown]";
      Deliver(state_, std::move(reply_to), CallResult::Unknown("test: message dropped"), 0);
      return;
    }
    if (s.blocked.contains(shard_id)) {
      s.log[line] += "   [blocked: not sent; the flow is told unknown]";
      Deliver(state_, std::move(reply_to), CallResult::Unknown("test: shard blocked"), 0);
      return;
    }
    if (fault == Fault::kDieAfter) {
      s.dead = true;
      s.log[line] += "   [DIE AFTER: sent, the router is dead from here on]";
    }
    auto latency = s.latency_ms.find(shard_id);
    const int64_t delay = latency == s.latency_ms.end() ? 0 : latency->second;
    std::shared_ptr<State> state = state_;
    Send(state_, shard_id, args,
         [state, line, fault, reply_to, shard_id, args, delay](CallResult result) mutable {
           state->log[line] += StrCat(" -> ", result.ToString());
           if (state->dead) {
             state->log[line] += "   [reply swallowed: the router is dead]";
             Swallow(state, std::move(reply_to));
             return;
           }
           if (fault == Fault::kLoseReply) {
             state->log[line] += "   [REPLY LOST: the flow is told unknown]";
             Deliver(state, std::move(reply_to), CallResult::Unknown("test: reply lost"), 0);
             return;
           }
           if (fault == Fault::kDuplicate) {
             state->log[line] += "   [DUPLICATE sent]";
             Send(state, shard_id, args, [state, line](CallResult copy) {
               state->log[line] += StrCat("   [duplicate -> ", copy.ToString(), "]");
             });
           }
           Deliver(state, std::move(reply_to), std::move(result), delay);
         });
  }

  // The router stops: nothing more is sent, no reply reaches a flow again.
  void Kill() { state_->dead = true; }
  bool dead() const { return state_->dead; }
  // Messages the flows handed to this caller (sent or not).
  int messages() const { return state_->messages; }
  // Pool commands, deliveries and swallowed callbacks still pending.
  int pending() const { return state_->pending; }

  void Block(const std::string& shard_id, bool blocked) {
    if (blocked) {
      state_->blocked.insert(shard_id);
    } else {
      state_->blocked.erase(shard_id);
    }
  }
  void SetLatency(const std::string& shard_id, int64_t ms) { state_->latency_ms[shard_id] = ms; }

  bool has_held() const { return !state_->held.empty(); }
  // Sends the held messages now (straight to their shards: no flow waits for them).
  void DeliverHeld() {
    if (state_->held_sent) return;
    state_->held_sent = true;
    for (const Held& held : state_->held) {
      const size_t line = state_->log.size();
      state_->log.push_back(StrCat("late delivery of the held message to ", held.shard, ": ", Join(held.args)));
      std::shared_ptr<State> state = state_;
      Send(state_, held.shard, held.args, [state, line](CallResult result) {
        state->log[line] += StrCat(" -> ", result.ToString());
        ++state->held_answered;
      });
    }
  }
  bool held_answered() const { return state_->held_answered == state_->held.size(); }

  std::string Log() const {
    std::string out = StrCat("messages of ", state_->name, ":");
    for (const std::string& line : state_->log) StrAppend(&out, "\n    ", line);
    return out;
  }

 private:
  struct Held {
    std::string shard;
    Command args;
  };
  struct State {
    std::string name;
    uint64_t order_key = 0;
    Script script;
    int messages = 0;
    bool dead = false;
    int pending = 0;
    std::vector<std::string> log;
    absl::flat_hash_set<std::string> blocked;
    absl::flat_hash_map<std::string, int64_t> latency_ms;
    std::vector<Held> held;
    bool held_sent = false;
    size_t held_answered = 0;
  };

  // Sends through the pool; `then` gets the result (NotSent when the pool refused).
  static void Send(const std::shared_ptr<State>& state, const std::string& shard_id, const Command& args,
                   std::function<void(CallResult)> then) {
    std::vector<std::string_view> views(args.begin(), args.end());
    auto after = std::make_shared<std::function<void(CallResult)>>(std::move(then));
    ++state->pending;
    absl::Status sent = Shards::Get()->pool().Send(
        shard_id, views,
        [state, after](absl::StatusOr<ShardReply> reply) {
          --state->pending;
          (*after)(ToResult(reply));
        },
        state->order_key);
    if (!sent.ok()) {
      // Not sent (the pool refused): answered from the loop, never inside the call.
      Shards::Get()->loop().RunAfter(0, [state, after, why = std::string(sent.message())] {
        --state->pending;
        (*after)(CallResult::NotSent(why));
      });
    }
  }

  // Runs the flow's callback `delay_ms` from now, unless the router has died by then.
  static void Deliver(const std::shared_ptr<State>& state, std::shared_ptr<CallDone> reply_to, CallResult result,
                      int64_t delay_ms) {
    ++state->pending;
    Shards::Get()->loop().RunAfter(delay_ms, [state, reply_to = std::move(reply_to), result = std::move(result)] {
      --state->pending;
      if (state->dead) return;  // swallowed: the callback is dropped with this timer
      (*reply_to)(result);
    });
  }

  // Drops a callback uncalled, from the loop (never inside the flow's own call).
  static void Swallow(const std::shared_ptr<State>& state, std::shared_ptr<CallDone> reply_to) {
    ++state->pending;
    Shards::Get()->loop().RunAfter(0, [state, reply_to = std::move(reply_to)] { --state->pending; });
  }

  const Routes& routes_;
  std::shared_ptr<State> state_;
};

// ---------------------------------------------------------------------------
// Paths and cases

enum class Path : uint8_t { kSuccess, kCreditCurrency, kCreditUnknown, kDebitRefused };

std::string_view PathName(Path path) {
  switch (path) {
    case Path::kSuccess:
      return "success";
    case Path::kCreditCurrency:
      return "credit_currency_mismatch";
    case Path::kCreditUnknown:
      return "credit_unknown_account";
    case Path::kDebitRefused:
      return "debit_insufficient_funds";
  }
  return "?";
}

// The refusal a path's client is told (kOk: the path commits).
ResultCode PathRefusal(Path path) {
  switch (path) {
    case Path::kSuccess:
      return ResultCode::kOk;
    case Path::kCreditCurrency:
      return ResultCode::kCurrencyMismatch;
    case Path::kCreditUnknown:
      return ResultCode::kUnknownAccount;
    case Path::kDebitRefused:
      return ResultCode::kInsufficientFunds;
  }
  return ResultCode::kOk;
}

// What the shards say about one transfer.
struct Snapshot {
  Fields from, to, row, tx_home, tx_other;
  std::string from_raw, to_raw, row_raw, tx_home_raw, tx_other_raw;
  bool row_exists = false;

  // What must not change once the transfer has ended: balances, the row's state and
  // the branches (not the row's lease or update time).
  std::string Stable() const {
    std::string out;
    for (const auto& [name, fields] : {std::pair<std::string, const Fields*>{"from", &from}, {"to", &to}}) {
      StrAppend(&out, name, "{", FieldOr(*fields, "available"), ",", FieldOr(*fields, "held"), ",",
                FieldOr(*fields, "pending_credit"), "} ");
    }
    StrAppend(&out, "row{");
    for (const auto& [field, value] : row) {
      if (field == "updated_ms" || field == "lease_owner" || field == "lease_until_ms") continue;
      StrAppend(&out, field, "=", value, " ");
    }
    StrAppend(&out, "} branches{");
    for (const Fields* tx : {&tx_home, &tx_other}) {
      for (const auto& [field, value] : *tx) {
        if (field.rfind("branch:", 0) == 0 || field.rfind("step:", 0) == 0) StrAppend(&out, field, "=", value, " ");
      }
      StrAppend(&out, "| ");
    }
    StrAppend(&out, "}");
    return out;
  }

  std::string ToString() const {
    return StrCat("ACCOUNT from: ", from_raw, "\n  ACCOUNT to: ", to_raw, "\n  ROW.GET: ", row_raw,
                  "\n  TX on home: ", tx_home_raw, "\n  TX on other: ", tx_other_raw);
  }
};

// One resolver pass over a case's row.
struct ResolvePass {
  std::unique_ptr<FaultyCaller> caller;
  std::unique_ptr<TransactionExecutor> executor;
  int answers = 0;
  std::optional<TransferOutcome> outcome;
  ExecutorStats stats;
  std::string row;  // ROW.GET when it was resumed
  std::string when;
};

struct Case {
  std::string name;  // tcc/success k=3 die-after
  TransferMode mode = TransferMode::kTcc;
  Path path = Path::kSuccess;
  Script script;
  TransferSpec spec;
  std::string home, other;
  Amount from_start = 1'000;
  Amount to_start = 50;
  bool to_exists = true;
  std::string to_currency = "EUR";

  // The router under test.
  std::unique_ptr<FaultyCaller> caller;
  std::unique_ptr<TransactionExecutor> executor;
  int answers = 0;                      // client callback runs (exactly one expected)
  std::optional<TransferOutcome> told;  // the answer while the router lived
  std::string answer_log;
  ExecutorStats stats;
  bool stuck = false;       // its flow did not end in time
  bool leaked = false;      // its executor still drove something when dropped

  // Resolver passes: after the router ended, and after the late messages.
  std::deque<ResolvePass> passes;  // (a deque: callbacks hold pointers into it)

  bool had_held = false;
  bool row_before_held = false;
  std::string stable_before_held, stable_after_held;

  bool dies() const {
    return std::any_of(script.begin(), script.end(), [](const auto& entry) { return RouterDies(entry.second); });
  }
  bool single() const { return script.size() <= 1; }
  bool ended() const {
    if (caller == nullptr || caller->dead()) return true;
    return answers > 0 && executor != nullptr && executor->active() == 0;
  }

  std::string Trace() const {
    std::string out = StrCat("case ", name, " (txid ", spec.txid, ", ", spec.from, "@", home, " -> ", spec.to, "@",
                             other, ", ", spec.amount, " ", spec.currency, ")\n  client told: ", OutcomeString(told),
                             answer_log);
    if (caller != nullptr) StrAppend(&out, "\n  ", caller->Log());
    for (const ResolvePass& pass : passes) {
      StrAppend(&out, "\n  resumed by a resolver ", pass.when, " (row was: ", pass.row,
                ")\n  resolver's outcome: ", OutcomeString(pass.outcome));
      if (pass.caller != nullptr) StrAppend(&out, "\n  ", pass.caller->Log());
    }
    return out;
  }
};

// ---------------------------------------------------------------------------
// The fixture: shard queries and loop helpers.

class XShardTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Shards::Get()->ready()) << "the shards did not start"; }

  static EventLoop& loop() { return Shards::Get()->loop(); }
  static ShardPool& pool() { return Shards::Get()->pool(); }

  // Sends every command (pipelined) and waits for all replies. A link failure shows
  // as an error reply "LINK ...".
  static std::vector<ShardReply> Query(const std::vector<std::pair<std::string, Command>>& batch) {
    std::vector<ShardReply> replies(batch.size());
    size_t answered = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      std::vector<std::string_view> views(batch[i].second.begin(), batch[i].second.end());
      // One connection per shard (order key 1): each shard runs them in order.
      absl::Status sent = pool().Send(
          batch[i].first, views,
          [&replies, &answered, i](absl::StatusOr<ShardReply> reply) {
            if (reply.ok()) {
              replies[i] = *std::move(reply);
            } else {
              replies[i].type = ShardReply::Type::kError;
              replies[i].text = StrCat("LINK ", reply.status().ToString());
            }
            ++answered;
          },
          /*order_key=*/1);
      if (!sent.ok()) {
        replies[i].type = ShardReply::Type::kError;
        replies[i].text = StrCat("LINK not sent: ", sent.ToString());
        ++answered;
      }
    }
    absl::Status status = loop().RunUntil([&] { return answered == batch.size(); }, 30'000);
    EXPECT_TRUE(status.ok()) << "shard queries: " << status;
    return replies;
  }

  static ShardReply Query1(const std::string& shard, Command command) {
    return Query({{shard, std::move(command)}})[0];
  }

  // Runs the loop until `done` or `timeout_ms`; false on timeout.
  static bool RunUntil(absl::FunctionRef<bool()> done, int64_t timeout_ms) {
    return loop().RunUntil(done, timeout_ms).ok();
  }
  static void RunFor(int64_t ms) {
    const int64_t until = MonotonicNowMs() + ms;
    (void)loop().RunUntil([&] { return MonotonicNowMs() >= until; }, ms + 1'000);
  }

  static uint64_t NextNumber() {
    static uint64_t next = 1'000;
    return next++;
  }

  // Opens and funds the accounts of `cases` (fresh numbers, homes alternating).
  void Prepare(std::vector<Case*> cases) {
    std::vector<std::pair<std::string, Command>> batch;
    for (Case* c : cases) {
      const uint64_t n = NextNumber();
      c->home = n % 2 == 0 ? kShardA : kShardB;
      c->other = n % 2 == 0 ? kShardB : kShardA;
      c->spec.from = n * 2;
      c->spec.to = n * 2 + 1;
      c->spec.currency = "EUR";
      c->spec.mode = c->mode;
      c->spec.amount = c->path == Path::kDebitRefused ? c->from_start + 1 : 300;
      c->spec.txid = StrCat("x", n, "-", xshard::TransferModeName(c->mode), "-", PathName(c->path).substr(0, 15),
                            "-", ScriptTag(c->script));
      c->to_exists = c->path != Path::kCreditUnknown;
      c->to_currency = c->path == Path::kCreditCurrency ? "USD" : "EUR";
      routes_.shard_of[c->spec.from] = c->home;
      routes_.shard_of[c->spec.to] = c->other;
      batch.push_back({c->home, {"OPEN", StrCat(c->spec.from), "EUR"}});
      batch.push_back({c->home, {"DEPOSIT", StrCat(c->spec.from), StrCat(c->from_start), StrCat("dep-", n, "-a")}});
      if (c->to_exists) {
        batch.push_back({c->other, {"OPEN", StrCat(c->spec.to), c->to_currency}});
        batch.push_back({c->other, {"DEPOSIT", StrCat(c->spec.to), StrCat(c->to_start), StrCat("dep-", n, "-b")}});
      }
    }
    std::vector<ShardReply> replies = Query(batch);
    for (size_t i = 0; i < replies.size(); ++i) {
      ASSERT_TRUE(replies[i].is_ok()) << Join(batch[i].second) << " -> " << replies[i].ToString();
    }
  }

  static std::vector<Snapshot> Snapshots(const std::vector<Case*>& cases) {
    std::vector<std::pair<std::string, Command>> batch;
    for (const Case* c : cases) {
      batch.push_back({c->home, {"ACCOUNT", StrCat(c->spec.from)}});
      batch.push_back({c->other, {"ACCOUNT", StrCat(c->spec.to)}});
      batch.push_back({c->home, {"ROW.GET", c->spec.txid}});
      batch.push_back({c->home, {"TX", c->spec.txid}});
      batch.push_back({c->other, {"TX", c->spec.txid}});
    }
    std::vector<ShardReply> replies = Query(batch);
    std::vector<Snapshot> snapshots(cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      Snapshot& s = snapshots[i];
      const ShardReply* r = &replies[i * 5];
      s.from = FieldsOf(r[0]);
      s.from_raw = r[0].ToString();
      s.to = FieldsOf(r[1]);
      s.to_raw = r[1].ToString();
      s.row = FieldsOf(r[2]);
      s.row_raw = r[2].ToString();
      s.row_exists = r[2].type == ShardReply::Type::kArray;
      s.tx_home = FieldsOf(r[3]);
      s.tx_home_raw = r[3].ToString();
      s.tx_other = FieldsOf(r[4]);
      s.tx_other_raw = r[4].ToString();
    }
    return snapshots;
  }

  // Drops routers: their callers die, the loop runs until nothing they drove is
  // left, then they are destroyed. An executor that still drives something after
  // that is kept alive (leaked on purpose) and reported.
  static void DropRouters(std::vector<std::pair<std::unique_ptr<FaultyCaller>*,
                                                std::unique_ptr<TransactionExecutor>*>> routers,
                          int64_t settle_ms, std::vector<bool>* leaked = nullptr) {
    for (auto& [caller, executor] : routers) {
      if (*caller != nullptr) (*caller)->Kill();
    }
    auto quiet = [&] {
      for (auto& [caller, executor] : routers) {
        if (*executor != nullptr && (*executor)->active() != 0) return false;
        if (*caller != nullptr && (*caller)->pending() != 0) return false;
      }
      return true;
    };
    RunFor(settle_ms);
    (void)RunUntil(quiet, 3'000);
    RunFor(20);
    if (leaked != nullptr) leaked->assign(routers.size(), false);
    for (size_t i = 0; i < routers.size(); ++i) {
      auto& [caller, executor] = routers[i];
      if (*executor != nullptr && (*executor)->active() != 0) {
        // Reported by the caller; both are kept alive for good, in case a flow still
        // needs them.
        static std::vector<std::unique_ptr<TransactionExecutor>>* kept =
            new std::vector<std::unique_ptr<TransactionExecutor>>;
        static std::vector<std::unique_ptr<FaultyCaller>>* kept_callers =
            new std::vector<std::unique_ptr<FaultyCaller>>;
        kept->push_back(std::move(*executor));
        kept_callers->push_back(std::move(*caller));
        if (leaked != nullptr) (*leaked)[i] = true;
        continue;
      }
      executor->reset();
    }
  }

  // Global checks: both shards conserve money, nothing is held or pending, and no
  // row is unfinished.
  static void ExpectShardsClean() {
    std::vector<ShardReply> replies = Query({{kShardA, {"AUDIT"}},
                                             {kShardB, {"AUDIT"}},
                                             {kShardA, {"ROW.INDOUBT", "0", "COUNT", "10000"}},
                                             {kShardB, {"ROW.INDOUBT", "0", "COUNT", "10000"}}});
    for (int i = 0; i < 2; ++i) {
      Fields audit = FieldsOf(replies[i]);
      const char* shard = i == 0 ? kShardA : kShardB;
      EXPECT_EQ(FieldOr(audit, "conserved"), "1") << shard << " AUDIT: " << replies[i].ToString();
      EXPECT_EQ(FieldOr(audit, "held"), "0") << shard << " AUDIT: " << replies[i].ToString();
      EXPECT_EQ(FieldOr(audit, "pending_credit"), "0") << shard << " AUDIT: " << replies[i].ToString();
      EXPECT_TRUE(replies[2 + i].type == ShardReply::Type::kArray && replies[2 + i].elements.empty())
          << shard << " has unfinished rows (ROW.INDOUBT 0): " << replies[2 + i].ToString();
    }
  }

  Routes routes_;
};

// ---------------------------------------------------------------------------
// Checks of one finished case.

struct Money {
  bool moved = false;
  bool unmoved = false;
};

// Balances against the case's start: conserved, nothing held or pending, moved or not
// (never half).
Money CheckMoney(const Case& c, const Snapshot& s) {
  Money money;
  const int64_t from_available = IntField(s.from, "available");
  const int64_t to_available = c.to_exists ? IntField(s.to, "available") : 0;
  EXPECT_EQ(IntField(s.from, "held"), 0) << "held money left on the source account";
  EXPECT_EQ(IntField(s.from, "pending_credit"), 0);
  if (c.to_exists) {
    EXPECT_EQ(IntField(s.to, "held"), 0);
    EXPECT_EQ(IntField(s.to, "pending_credit"), 0) << "a pending credit left on the target account";
    EXPECT_EQ(FieldOr(s.to, "currency"), c.to_currency);
  } else {
    EXPECT_NE(s.to_raw.find("UNKNOWN_ACCOUNT"), std::string::npos) << "the target account appeared: " << s.to_raw;
  }
  const int64_t total = from_available + IntField(s.from, "held") +
                        (c.to_exists ? to_available + IntField(s.to, "held") : 0);
  EXPECT_EQ(total, c.from_start + (c.to_exists ? c.to_start : 0)) << "money not conserved over the two accounts";
  money.moved = from_available == c.from_start - c.spec.amount && (!c.to_exists || to_available == c.to_start + c.spec.amount);
  money.unmoved = from_available == c.from_start && (!c.to_exists || to_available == c.to_start);
  EXPECT_TRUE(money.moved || money.unmoved) << "not all-or-nothing: from available " << from_available << " (start "
                                            << c.from_start << "), to available " << to_available << " (start "
                                            << c.to_start << "), amount " << c.spec.amount;
  return money;
}

// Everything about one case once it is over (resolved, held messages delivered).
void CheckCase(const Case& c, const Snapshot& s) {
  const Money money = CheckMoney(c, s);
  const bool moved = money.moved && !money.unmoved;
  const ResultCode refusal = PathRefusal(c.path);

  // A refused transfer never moves money.
  if (refusal != ResultCode::kOk) {
    EXPECT_FALSE(moved) << "a refused path moved money";
  }

  // The row: none (nothing happened) or finished, agreeing with the balances.
  if (s.row_exists) {
    const std::string phase = FieldOr(s.row, "phase");
    EXPECT_TRUE(phase == "committed" || phase == "aborted") << "the row is not finished: phase " << phase;
    if (phase == "committed") {
      EXPECT_TRUE(moved) << "the row says committed but the money did not move";
    }
    if (phase == "aborted") {
      EXPECT_FALSE(moved) << "the row says aborted but the money moved";
    }
    EXPECT_EQ(FieldOr(s.row, "mode"), xshard::TransferModeName(c.mode));
  } else {
    EXPECT_FALSE(moved) << "money moved without a row";
  }

  // The client: at most one answer (exactly one while the router lives), never
  // contradicted by the balances. A dead router's client hears nothing that counts.
  EXPECT_LE(c.answers, 1) << "the client's callback ran " << c.answers << " times";
  if (!c.dies()) {
    EXPECT_EQ(c.answers, 1) << "the client's callback ran " << c.answers << " times";
  }
  if (c.told.has_value()) {
    if (c.told->kind == TransferOutcome::Kind::kCommitted) {
      EXPECT_TRUE(moved) << "the client was told committed but the money did not move";
    } else if (c.told->kind == TransferOutcome::Kind::kRejected) {
      EXPECT_FALSE(moved) << "the client was told rejected but the money moved";
      // The path's refusal; with two faults the router may give up first (ABORTED).
      if (refusal != ResultCode::kOk && !(c.told->code == ResultCode::kAborted && !c.single())) {
        EXPECT_EQ(ResultCodeName(c.told->code), ResultCodeName(refusal)) << "the client was told another refusal";
      }
    }
  }
  // The resolvers' answers agree too, and with the client's.
  for (const ResolvePass& pass : c.passes) {
    SCOPED_TRACE(StrCat("resolver pass ", pass.when));
    EXPECT_EQ(pass.answers, 1) << "the resolver's callback ran " << pass.answers << " times";
    if (pass.outcome.has_value() && pass.outcome->kind == TransferOutcome::Kind::kCommitted) {
      EXPECT_TRUE(moved) << "the resolver reported committed but the money did not move";
    }
    if (pass.outcome.has_value() && pass.outcome->kind == TransferOutcome::Kind::kRejected) {
      EXPECT_FALSE(moved) << "the resolver reported rejected but the money moved";
    }
    EXPECT_TRUE(Definite(pass.outcome)) << "the resolver did not reach an outcome";
    if (Definite(c.told) && Definite(pass.outcome)) {
      EXPECT_EQ(c.told->kind, pass.outcome->kind) << "client and resolver were told different outcomes";
    }
    EXPECT_EQ(pass.stats.invariant_alarms, 0u) << "the resolver raised invariant alarms";
  }

  // A router that lives through one fault finishes the transfer itself and tells its
  // client the outcome (one lost message is covered by first_phase_attempts = 2 and
  // the background resends). With two faults it may give up on a first step (in
  // doubt, or ABORTED), but whatever it started it still finishes.
  if (!c.dies()) {
    EXPECT_FALSE(c.stuck) << "the flow did not end within " << kEndWaitMs << " ms";
    const bool resumed_before_late = !c.passes.empty() && c.passes[0].when == "after the router ended";
    EXPECT_FALSE(resumed_before_late) << "a living router left its row unfinished (a resolver had to finish it)";
    if (c.single()) {
      EXPECT_TRUE(Definite(c.told)) << "a living router did not tell its client the outcome";
      if (refusal == ResultCode::kOk) {
        EXPECT_TRUE(moved) << "the success path did not commit under a single fault of a living router";
      }
    }
  }
  EXPECT_FALSE(c.leaked) << "the dropped router's executor still drove a flow";
  EXPECT_EQ(c.stats.invariant_alarms, 0u) << "the router raised invariant alarms";

  // The late (held) messages changed nothing. Only a late first step, whose
  // transfer had left no row (the router gave up on it), may start the transfer
  // then; a resolver finished that one, checked above.
  if (c.had_held) {
    EXPECT_TRUE(c.caller == nullptr || c.caller->held_answered()) << "a held message got no reply";
    if (c.single() || c.row_before_held) {
      EXPECT_EQ(c.stable_after_held, c.stable_before_held) << "the late delivery of a held message changed something";
    }
  }
}

// ---------------------------------------------------------------------------
// Every message x every fault, per mode and path.

struct PathParam {
  TransferMode mode;
  Path path;
};
// How GoogleTest (and so ctest) shows a parameter.
[[maybe_unused]] void PrintTo(const PathParam& param, std::ostream* out) {
  *out << xshard::TransferModeName(param.mode) << "/" << PathName(param.path);
}

struct ModeParam {
  TransferMode mode;
};
[[maybe_unused]] void PrintTo(const ModeParam& param, std::ostream* out) { *out << xshard::TransferModeName(param.mode); }

class XShardFaultTest : public XShardTest, public ::testing::WithParamInterface<PathParam> {
 protected:
  std::unique_ptr<Case> MakeCase(Script script) {
    auto c = std::make_unique<Case>();
    c->mode = GetParam().mode;
    c->path = GetParam().path;
    c->script = std::move(script);
    c->name = StrCat(xshard::TransferModeName(c->mode), "/", PathName(c->path), " ", ScriptName(c->script));
    return c;
  }

  // A resolver pass: a fresh fault-free executor (owner "resolver") resumes every
  // case whose row exists and is not finished, and runs until each has ended.
  void RunResolverPass(const std::vector<Case*>& cases, const std::string& when) {
    std::vector<Snapshot> state = Snapshots(cases);
    std::vector<std::pair<Case*, ResolvePass*>> resumed;
    for (size_t i = 0; i < cases.size(); ++i) {
      Case* c = cases[i];
      if (!state[i].row_exists) continue;
      const std::string phase = FieldOr(state[i].row, "phase");
      if (phase == "committed" || phase == "aborted") continue;
      c->passes.emplace_back();
      ResolvePass* pass = &c->passes.back();
      pass->when = when;
      pass->row = state[i].row_raw;
      pass->caller = std::make_unique<FaultyCaller>(StrCat("resolver for ", c->name), routes_, NextNumber());
      pass->executor = std::make_unique<TransactionExecutor>(loop(), *pass->caller, FastOptions("resolver"));
      resumed.push_back({c, pass});
    }
    for (auto& [c, pass] : resumed) {
      pass->executor->Resume(c->home, c->spec.txid, ResumeIntent::kAuto, [pass = pass](const TransferOutcome& outcome) {
        ++pass->answers;
        if (!pass->outcome.has_value()) pass->outcome = outcome;
      });
    }
    (void)RunUntil(
        [&] {
          return std::all_of(resumed.begin(), resumed.end(), [](const auto& entry) {
            return entry.second->answers > 0 && entry.second->executor->active() == 0;
          });
        },
        kEndWaitMs);
    std::vector<std::pair<std::unique_ptr<FaultyCaller>*, std::unique_ptr<TransactionExecutor>*>> routers;
    for (auto& [c, pass] : resumed) {
      pass->stats = pass->executor->stats();
      routers.push_back({&pass->caller, &pass->executor});
    }
    DropRouters(routers, 0);
  }

  // Runs the cases through the phases (top of the file), side by side.
  void RunCases(std::vector<Case*> cases) {
    Prepare(cases);
    if (HasFatalFailure()) return;

    // 1. Start, and run until each transfer ended or its router died.
    for (Case* c : cases) {
      const uint64_t key = NextNumber();
      c->caller = std::make_unique<FaultyCaller>(StrCat("router for ", c->name), routes_, key, c->script);
      c->executor = std::make_unique<TransactionExecutor>(loop(), *c->caller, FastOptions(StrCat("router-", key)));
      c->executor->Start(c->spec, [c](const TransferOutcome& outcome) {
        ++c->answers;
        const bool dead = c->caller == nullptr || c->caller->dead();
        StrAppend(&c->answer_log, "\n  client callback #", c->answers, dead ? " (router dead, ignored)" : "", ": ",
                  OutcomeString(outcome));
        if (!dead && !c->told.has_value()) c->told = outcome;
      });
    }
    const bool ended = RunUntil(
        [&] {
          return std::all_of(cases.begin(), cases.end(), [](const Case* c) { return c->ended(); });
        },
        kEndWaitMs);
    if (!ended) {
      for (Case* c : cases) c->stuck = !c->ended();
    }

    // 2. Drop the routers; wait until their leases have lapsed.
    std::vector<std::pair<std::unique_ptr<FaultyCaller>*, std::unique_ptr<TransactionExecutor>*>> routers;
    for (Case* c : cases) {
      if (c->executor != nullptr) c->stats = c->executor->stats();
      routers.push_back({&c->caller, &c->executor});
    }
    const int64_t dropped_at = MonotonicNowMs();
    std::vector<bool> leaked;
    DropRouters(routers, 2 * kRetryMaxMs, &leaked);
    for (size_t i = 0; i < cases.size(); ++i) cases[i]->leaked = leaked[i];
    const int64_t lapse = dropped_at + kLeaseMs + 50 - MonotonicNowMs();
    if (lapse > 0) RunFor(lapse);

    // 3. The resolver resumes every row that exists and is not finished.
    RunResolverPass(cases, "after the router ended");

    // 4. The held messages arrive late: nothing may change (but a late first step of
    //    a transfer the router gave up on may start it; a resolver then finishes it).
    std::vector<Snapshot> before_held = Snapshots(cases);
    for (size_t i = 0; i < cases.size(); ++i) {
      Case* c = cases[i];
      if (c->caller == nullptr || !c->caller->has_held()) continue;
      c->had_held = true;
      c->row_before_held = before_held[i].row_exists;
      c->stable_before_held = before_held[i].Stable();
      c->caller->DeliverHeld();
    }
    (void)RunUntil(
        [&] {
          return std::all_of(cases.begin(), cases.end(),
                             [](const Case* c) { return !c->had_held || c->caller->held_answered(); });
        },
        5'000);
    std::vector<Snapshot> after_held = Snapshots(cases);
    for (size_t i = 0; i < cases.size(); ++i) cases[i]->stable_after_held = after_held[i].Stable();
    // A row a late message created is nobody's: a resolver finishes it.
    RunResolverPass(cases, "after the late messages");

    // 5. The checks.
    std::vector<Snapshot> final_state = Snapshots(cases);
    for (size_t i = 0; i < cases.size(); ++i) {
      const std::string trace = StrCat(cases[i]->Trace(), "\n  final state:\n  ", final_state[i].ToString());
      MaybePrint(trace);
      SCOPED_TRACE(trace);
      CheckCase(*cases[i], final_state[i]);
    }
    ExpectShardsClean();
  }
};

// Every message x every single fault; and, to make messages arrive after what
// should have overtaken them, every message delayed while the next one is dropped
// (a living router gives up on the step: TC/C cancels, then the late try arrives)
// or the router dies at the next one (a resolver finishes, then the late message
// arrives).
TEST_P(XShardFaultTest, EveryMessageEveryFault) {
  // The fault-free run: its outcome, and how many messages it takes.
  std::unique_ptr<Case> clean = MakeCase({});
  RunCases({clean.get()});
  if (HasFatalFailure()) return;
  const int count = clean->caller->messages();
  SCOPED_TRACE(StrCat("the fault-free run: ", clean->Trace()));
  ASSERT_GT(count, 0);
  const ResultCode refusal = PathRefusal(GetParam().path);
  ASSERT_TRUE(clean->told.has_value());
  if (refusal == ResultCode::kOk) {
    EXPECT_EQ(clean->told->kind, TransferOutcome::Kind::kCommitted) << OutcomeString(clean->told);
  } else {
    EXPECT_EQ(clean->told->kind, TransferOutcome::Kind::kRejected) << OutcomeString(clean->told);
    EXPECT_EQ(ResultCodeName(clean->told->code), ResultCodeName(refusal));
  }
  EXPECT_TRUE(clean->passes.empty());

  std::vector<std::unique_ptr<Case>> cases;
  std::vector<Case*> views;
  for (int k = 0; k < count; ++k) {
    for (Fault fault : kFaults) cases.push_back(MakeCase({{k, fault}}));
    cases.push_back(MakeCase({{k, Fault::kDelay}, {k + 1, Fault::kDrop}}));
    cases.push_back(MakeCase({{k, Fault::kDelay}, {k + 1, Fault::kDieBefore}}));
  }
  for (const auto& c : cases) views.push_back(c.get());
  RunCases(views);
  std::cout << "[          ] " << xshard::TransferModeName(GetParam().mode) << "/" << PathName(GetParam().path)
            << ": " << count << " messages, " << cases.size() << " fault cases\n";
}

std::string PathParamName(const ::testing::TestParamInfo<PathParam>& info) {
  return StrCat(xshard::TransferModeName(info.param.mode), "_", PathName(info.param.path));
}

INSTANTIATE_TEST_SUITE_P(
    Paths, XShardFaultTest,
    ::testing::Values(PathParam{TransferMode::kTcc, Path::kSuccess}, PathParam{TransferMode::kTcc, Path::kCreditCurrency},
                      PathParam{TransferMode::kTcc, Path::kCreditUnknown}, PathParam{TransferMode::kTcc, Path::kDebitRefused},
                      PathParam{TransferMode::kSaga, Path::kSuccess}, PathParam{TransferMode::kSaga, Path::kCreditCurrency},
                      PathParam{TransferMode::kSaga, Path::kCreditUnknown},
                      PathParam{TransferMode::kSaga, Path::kDebitRefused}),
    PathParamName);

// ---------------------------------------------------------------------------
// Two drivers at once: a resolver resumes the row while the original flow still
// retries (the target shard is unreachable for the original router). The lease lets
// one of them drive; the transfer still has one outcome.

class XShardTwoDriversTest : public XShardTest, public ::testing::WithParamInterface<ModeParam> {
 protected:
  struct Run {
    Case c;
    std::unique_ptr<FaultyCaller> resolver_caller;
    std::unique_ptr<TransactionExecutor> resolver;
    int resolver_answers = 0;
    std::optional<TransferOutcome> resolved;
    ExecutorStats original_stats, resolver_stats;
  };

  // `original` are the original router's options; the resolver resumes at
  // `resume_at_ms` after the start; the target shard is unblocked for the original
  // router once the resolver has answered.
  void RunTwoDrivers(Run& run, ExecutorOptions original, int64_t resume_at_ms) {
    Case& c = run.c;
    c.mode = GetParam().mode;
    c.path = Path::kSuccess;
    c.name = StrCat(xshard::TransferModeName(c.mode), " two drivers");
    Prepare({&c});
    if (HasFatalFailure()) return;
    c.caller = std::make_unique<FaultyCaller>("original router", routes_, NextNumber());
    c.caller->Block(c.other, true);
    c.executor = std::make_unique<TransactionExecutor>(loop(), *c.caller, std::move(original));
    c.executor->Start(c.spec, [&c](const TransferOutcome& outcome) {
      ++c.answers;
      StrAppend(&c.answer_log, "\n  client callback #", c.answers, ": ", OutcomeString(outcome));
      if (!c.told.has_value()) c.told = outcome;
    });
    RunFor(resume_at_ms);
    run.resolver_caller = std::make_unique<FaultyCaller>("resolver", routes_, NextNumber());
    run.resolver = std::make_unique<TransactionExecutor>(loop(), *run.resolver_caller, FastOptions("resolver"));
    run.resolver->Resume(c.home, c.spec.txid, ResumeIntent::kAuto, [&run](const TransferOutcome& outcome) {
      ++run.resolver_answers;
      if (!run.resolved.has_value()) run.resolved = outcome;
    });
    EXPECT_TRUE(RunUntil([&] { return run.resolver_answers > 0; }, kEndWaitMs)) << "the resolver never answered";
    c.caller->Block(c.other, false);
    EXPECT_TRUE(RunUntil(
        [&] { return c.answers > 0 && c.executor->active() == 0 && run.resolver->active() == 0; }, kEndWaitMs))
        << "the drivers did not end";
    run.original_stats = c.executor->stats();
    run.resolver_stats = run.resolver->stats();
    c.stats = run.original_stats;
    DropRouters({{&c.caller, &c.executor}, {&run.resolver_caller, &run.resolver}},
                c.executor->options().retry_max_ms + 50);
  }

  void CheckTwoDrivers(Run& run) {
    const Case& c = run.c;
    Snapshot s = Snapshots({&run.c})[0];
    const std::string trace = StrCat(c.Trace(), "\n  resolver's outcome: ", OutcomeString(run.resolved), "\n  ",
                        run.resolver_caller != nullptr ? run.resolver_caller->Log() : "",
                        "\n  original: lost_leases=", run.original_stats.lost_leases,
                        " followed=", run.original_stats.followed[static_cast<int>(c.mode)],
                        " finished_committed=", run.original_stats.finished_committed[static_cast<int>(c.mode)],
                        " finished_aborted=", run.original_stats.finished_aborted[static_cast<int>(c.mode)],
                        "; resolver: finished_committed=",
                        run.resolver_stats.finished_committed[static_cast<int>(c.mode)],
                        " finished_aborted=", run.resolver_stats.finished_aborted[static_cast<int>(c.mode)],
                        "\n  final state:\n  ", s.ToString());
    MaybePrint(trace);
    SCOPED_TRACE(trace);
    const Money money = CheckMoney(c, s);
    const bool moved = money.moved && !money.unmoved;
    ASSERT_TRUE(s.row_exists);
    const std::string phase = FieldOr(s.row, "phase");
    EXPECT_TRUE(phase == "committed" || phase == "aborted") << "row not finished";
    EXPECT_EQ(phase == "committed", moved);
    EXPECT_EQ(c.answers, 1);
    EXPECT_EQ(run.resolver_answers, 1);
    for (const std::optional<TransferOutcome>* outcome : {&c.told, &std::as_const(run.resolved)}) {
      if (!outcome->has_value()) continue;
      if ((*outcome)->kind == TransferOutcome::Kind::kCommitted) {
        EXPECT_TRUE(moved) << OutcomeString(*outcome);
      }
      if ((*outcome)->kind == TransferOutcome::Kind::kRejected && (*outcome)->code != ResultCode::kLeased) {
        EXPECT_FALSE(moved) << OutcomeString(*outcome);
      }
    }
    // Some driver finished the row. (Both may count it: a ROW.SET that repeats the
    // finished row's content is a replay, +OK.)
    const int mode = static_cast<int>(c.mode);
    EXPECT_GE(run.original_stats.finished_committed[mode] + run.original_stats.finished_aborted[mode] +
                  run.resolver_stats.finished_committed[mode] + run.resolver_stats.finished_aborted[mode],
              1u)
        << "no driver brought the row to its end";
    // Never both ends.
    EXPECT_FALSE((run.original_stats.finished_committed[mode] + run.resolver_stats.finished_committed[mode]) > 0 &&
                 (run.original_stats.finished_aborted[mode] + run.resolver_stats.finished_aborted[mode]) > 0)
        << "one driver committed the row and the other aborted it";
    EXPECT_EQ(run.original_stats.invariant_alarms, 0u);
    EXPECT_EQ(run.resolver_stats.invariant_alarms, 0u);
    ExpectShardsClean();
  }
};

// The original router keeps renewing its lease while it resends: the resolver is
// refused (LEASED) and the original finishes once the target shard is back.
TEST_P(XShardTwoDriversTest, ResolverRefusedWhileOriginalRetries) {
  Run run;
  RunTwoDrivers(run, FastOptions("router-original"), 150);
  if (HasFatalFailure()) return;
  const bool resolver_stopped = run.resolved.has_value() && run.resolved->kind == TransferOutcome::Kind::kRejected &&
                                run.resolved->code == ResultCode::kLeased;
  EXPECT_TRUE(resolver_stopped || run.original_stats.lost_leases > 0)
      << "neither driver was stopped by the lease; resolver: " << OutcomeString(run.resolved);
  CheckTwoDrivers(run);
}

// The original router waits longer between resends than its lease lasts: the
// resolver takes the row over and finishes it; the original, back, must not
// contradict it (its late try is fenced, its claim refused, or its decision fixed).
TEST_P(XShardTwoDriversTest, ResolverTakesOverWhenOriginalLeaseLapses) {
  ExecutorOptions slow = FastOptions("router-original");
  slow.retry_initial_ms = 400;
  slow.retry_max_ms = 400;
  Run run;
  RunTwoDrivers(run, slow, kLeaseMs + 80);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(Definite(run.resolved)) << "the resolver did not take over: " << OutcomeString(run.resolved);
  CheckTwoDrivers(run);
}

std::string ModeParamName(const ::testing::TestParamInfo<ModeParam>& info) {
  return std::string(xshard::TransferModeName(info.param.mode));
}

INSTANTIATE_TEST_SUITE_P(Modes, XShardTwoDriversTest, ::testing::Values(ModeParam{TransferMode::kTcc}, ModeParam{TransferMode::kSaga}),
                         ModeParamName);

// ---------------------------------------------------------------------------
// A repeated request with the same txid, while the first runs (on the same router
// and on another) and after it finished: the same outcome, money moved at most once.

class XShardRepeatTest : public XShardTest, public ::testing::WithParamInterface<PathParam> {};

TEST_P(XShardRepeatTest, SameTxidSameOutcome) {
  Case c;
  c.mode = GetParam().mode;
  c.path = GetParam().path;
  c.name = StrCat(xshard::TransferModeName(c.mode), "/", PathName(c.path), " repeated");
  Prepare({&c});
  if (HasFatalFailure()) return;
  // Two routers; the target shard answers both slowly, so the first request is
  // still running when the repeats come.
  auto caller_1 = std::make_unique<FaultyCaller>("router 1", routes_, NextNumber());
  auto caller_2 = std::make_unique<FaultyCaller>("router 2", routes_, NextNumber());
  caller_1->SetLatency(c.other, 60);
  caller_2->SetLatency(c.other, 60);
  // (A longer answer budget: the repeats follow the row until it is finished.)
  ExecutorOptions options_1 = FastOptions("router-1");
  ExecutorOptions options_2 = FastOptions("router-2");
  options_1.answer_within_ms = options_2.answer_within_ms = 2'000;
  auto router_1 = std::make_unique<TransactionExecutor>(loop(), *caller_1, options_1);
  auto router_2 = std::make_unique<TransactionExecutor>(loop(), *caller_2, options_2);

  struct Request {
    std::string label;
    int answers = 0;
    std::optional<TransferOutcome> outcome;
  };
  std::vector<std::unique_ptr<Request>> requests;
  auto start = [&](TransactionExecutor& router, std::string label) {
    requests.push_back(std::make_unique<Request>());
    Request* request = requests.back().get();
    request->label = std::move(label);
    router.Start(c.spec, [request](const TransferOutcome& outcome) {
      ++request->answers;
      if (!request->outcome.has_value()) request->outcome = outcome;
    });
  };
  auto all_answered = [&] {
    return std::all_of(requests.begin(), requests.end(), [](const auto& r) { return r->answers > 0; }) &&
           router_1->active() == 0 && router_2->active() == 0;
  };
  start(*router_1, "first request (router 1)");
  RunFor(15);
  start(*router_1, "repeat while running, same router");
  start(*router_2, "repeat while running, other router");
  EXPECT_TRUE(RunUntil(all_answered, kEndWaitMs));
  RunFor(2 * kRetryMaxMs);
  start(*router_1, "repeat after the end, same router");
  start(*router_2, "repeat after the end, other router");
  EXPECT_TRUE(RunUntil(all_answered, kEndWaitMs));

  Snapshot s = Snapshots({&c})[0];
  std::string answers;
  for (const auto& r : requests) StrAppend(&answers, "\n  ", r->label, ": ", OutcomeString(r->outcome));
  const std::string trace = StrCat(c.name, " txid ", c.spec.txid, answers, "\n  ", caller_1->Log(), "\n  ",
                                   caller_2->Log(), "\n  final state:\n  ", s.ToString());
  MaybePrint(trace);
  SCOPED_TRACE(trace);
  const Money money = CheckMoney(c, s);
  const bool moved = money.moved && !money.unmoved;
  const ResultCode refusal = PathRefusal(c.path);
  EXPECT_EQ(moved, refusal == ResultCode::kOk);
  for (const auto& r : requests) {
    SCOPED_TRACE(r->label);
    EXPECT_EQ(r->answers, 1);
    ASSERT_TRUE(r->outcome.has_value());
    if (refusal == ResultCode::kOk) {
      EXPECT_EQ(r->outcome->kind, TransferOutcome::Kind::kCommitted) << OutcomeString(r->outcome);
    } else {
      EXPECT_EQ(r->outcome->kind, TransferOutcome::Kind::kRejected) << OutcomeString(r->outcome);
      EXPECT_EQ(ResultCodeName(r->outcome->code), ResultCodeName(refusal)) << OutcomeString(r->outcome);
    }
  }
  EXPECT_EQ(router_1->stats().invariant_alarms + router_2->stats().invariant_alarms, 0u);
  DropRouters({{&caller_1, &router_1}, {&caller_2, &router_2}}, 2 * kRetryMaxMs);
  ExpectShardsClean();
}

INSTANTIATE_TEST_SUITE_P(
    Paths, XShardRepeatTest,
    ::testing::Values(PathParam{TransferMode::kTcc, Path::kSuccess}, PathParam{TransferMode::kTcc, Path::kCreditCurrency},
                      PathParam{TransferMode::kTcc, Path::kDebitRefused}, PathParam{TransferMode::kSaga, Path::kSuccess},
                      PathParam{TransferMode::kSaga, Path::kCreditCurrency},
                      PathParam{TransferMode::kSaga, Path::kDebitRefused}),
    PathParamName);

}  // namespace
}  // namespace wallet::test
