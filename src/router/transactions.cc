#include "router/transactions.h"

#include <time.h>

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "common/strings.h"
#include "saga/saga_flow.h"
#include "tcc/tcc_flow.h"

namespace wallet::router {

using xshard::CallResult;
using xshard::OutcomeCallback;
using xshard::ResumeIntent;
using xshard::RowView;
using xshard::TransferMode;
using xshard::TransferOutcome;
using xshard::TransferSpec;

namespace {

// The shards stamp rows with the wall clock (the loop's clock is monotonic).
int64_t WallNowMs() {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

std::shared_ptr<xshard::Flow> MakeFlow(const std::shared_ptr<xshard::FlowEnv>& env, TransferSpec spec, OutcomeCallback done) {
  return spec.mode == TransferMode::kSaga ? saga::MakeSagaFlow(env, std::move(spec), std::move(done))
                                          : tcc::MakeTccFlow(env, std::move(spec), std::move(done));
}

}  // namespace

TransactionExecutor::TransactionExecutor(EventLoop& loop, xshard::ShardCaller& caller, xshard::ExecutorOptions options)
    : env_(std::make_shared<xshard::FlowEnv>(loop, caller, std::move(options))) {}

TransactionExecutor::~TransactionExecutor() { env_->closed = true; }

void TransactionExecutor::Start(TransferSpec spec, OutcomeCallback done) {
  MakeFlow(env_, std::move(spec), std::move(done))->Start();
}

void TransactionExecutor::Resume(const std::string& shard_id, const std::string& txid, ResumeIntent intent,
                                 OutcomeCallback done) {
  auto finish = std::make_shared<OutcomeCallback>(std::move(done));
  std::shared_ptr<xshard::FlowEnv> env = env_;
  // Claim first, so that no other router drives the row while this one does.
  env->caller.CallShard(
      shard_id, {"ROW.CLAIM", txid, env->options.owner, std::to_string(env->options.lease_ms)},
      [env, shard_id, txid, intent, finish](CallResult claim) {
        if (env->closed) return;
        // BAD_TRANSITION: the row is finished already; its outcome is read below.
        const std::optional<ResultCode> code = claim.Code();
        if (code == ResultCode::kLeased || code == ResultCode::kNoRow) {
          (*finish)(TransferOutcome::Rejected(*code, std::string(claim.reply.error_message())));
          return;
        }
        if (!claim.Ok() && code != ResultCode::kBadTransition) {
          (*finish)(TransferOutcome::InDoubt(StrCat("shard ", shard_id, " did not take the claim: ", claim.ToString())));
          return;
        }
        env->caller.CallShard(shard_id, {"ROW.GET", txid}, [env, shard_id, txid, intent, finish](CallResult got) {
          if (env->closed) return;
          RowView row;
          std::string error;
          if (got.kind != CallResult::Kind::kReply || got.reply.is_error()) {
            (*finish)(TransferOutcome::InDoubt(StrCat("shard ", shard_id, " did not give the row: ", got.ToString())));
            return;
          }
          if (got.reply.type == shardlink::ShardReply::Type::kNil) {
            (*finish)(TransferOutcome::Rejected(ResultCode::kNoRow, StrCat("no row for ", txid, " on ", shard_id)));
            return;
          }
          if (!ParseRowView(got.reply, &row, &error)) {
            (*finish)(TransferOutcome::InDoubt(StrCat("unreadable row for ", txid, " on ", shard_id, ": ", error)));
            return;
          }
          auto flow = MakeFlow(env, row.Spec(txid), [finish](const TransferOutcome& outcome) { (*finish)(outcome); });
          flow->set_home_shard(shard_id);
          flow->Resume(row, intent);
        });
      });
}

// --- Resolver ------------------------------------------------------------------------

struct Resolver::Scan {
  size_t waiting = 0;
  uint64_t in_doubt = 0;
  int64_t oldest_ms = 0;
};

Resolver::Resolver(EventLoop& loop, TransactionExecutor& executor, xshard::ShardCaller& caller,
                   ResolverOptions options, std::function<std::vector<std::string>()> shards)
    : loop_(loop),
      executor_(executor),
      caller_(caller),
      options_(options),
      shards_(std::move(shards)),
      alive_(std::make_shared<bool>(true)) {}

Resolver::~Resolver() {
  *alive_ = false;
  if (timer_ != 0) loop_.CancelTimer(timer_);
}

void Resolver::Start() {
  if (timer_ != 0) return;
  timer_ = loop_.RunEvery(options_.interval_ms, [this] { ScanNow(); });
}

void Resolver::ScanNow() {
  if (scanning_) return;  // the previous scan still waits for a shard
  const std::vector<std::string> shards = shards_();
  if (shards.empty()) return;
  ++stats_.scans;
  scanning_ = true;
  auto scan = std::make_shared<Scan>();
  scan->waiting = shards.size();
  for (const std::string& shard_id : shards) ScanShard(scan, shard_id);
}

void Resolver::ScanShard(const std::shared_ptr<Scan>& scan, const std::string& shard_id) {
  std::weak_ptr<bool> alive = alive_;
  auto shard_done = [this, scan, alive] {
    if (alive.expired()) return;
    if (--scan->waiting > 0) return;
    scanning_ = false;
    stats_.in_doubt_now = scan->in_doubt;
    stats_.oldest_in_doubt_ms_now = scan->oldest_ms;
  };
  caller_.CallShard(
      shard_id, {"ROW.INDOUBT", std::to_string(options_.min_age_ms), "COUNT", std::to_string(options_.max_per_scan)},
      [this, scan, shard_id, alive, shard_done](CallResult result) {
        if (alive.expired()) return;
        if (result.kind != CallResult::Kind::kReply || result.reply.type != shardlink::ShardReply::Type::kArray) {
          ++stats_.scan_errors;
          shard_done();
          return;
        }
        std::vector<std::string> txids;
        for (const auto& element : result.reply.elements) txids.push_back(element.text);
        scan->in_doubt += txids.size();
        for (const std::string& txid : txids) {
          if (executor_.IsActive(txid)) continue;  // this router drives it already
          ++stats_.claimed;
          executor_.Resume(shard_id, txid, ResumeIntent::kAuto, [this, alive, txid](const TransferOutcome& outcome) {
            if (alive.expired()) return;
            if (outcome.kind == TransferOutcome::Kind::kRejected && outcome.code == ResultCode::kLeased) {
              ++stats_.lease_refused;
              return;
            }
            if (outcome.kind != TransferOutcome::Kind::kInDoubt) ++stats_.finished;
          });
        }
        if (txids.empty()) {
          shard_done();
          return;
        }
        // The age of the oldest (ROW.INDOUBT lists oldest first).
        caller_.CallShard(shard_id, {"ROW.GET", txids.front()}, [this, scan, alive, shard_done](CallResult row_reply) {
          if (alive.expired()) return;
          RowView row;
          std::string error;
          if (row_reply.kind == CallResult::Kind::kReply && ParseRowView(row_reply.reply, &row, &error)) {
            scan->oldest_ms = std::max(scan->oldest_ms, WallNowMs() - row.updated_ms);
          }
          shard_done();
        });
      });
}

}  // namespace wallet::router
