#include "router/router_core.h"

#include <time.h>

#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "common/check.h"
#include "common/log.h"
#include "common/money.h"
#include "common/partition.h"
#include "common/strings.h"

namespace wallet::router {

namespace {

using shardlink::ShardReply;

// What a call does to state: decides the advice of an -UNAVAILABLE reply.
enum class Effect : uint8_t {
  kRead,        // BALANCE, TX: retry whenever
  kOpen,        // OPEN: idempotent by account
  kMutation,    // DEPOSIT, WITHDRAW, TRANSFER: retry with the same txid
};

// The public API as data: name, arity (> 0 exact, < 0 at least -arity, the name
// included, as in the shard's table), and usage for WRONG_ARITY messages. A
// TRANSFER takes 6 or 8 arguments; its handler refuses 7 and more than 8.
struct CommandSpec {
  std::string_view name;
  RouterCommand command;
  int arity;
  Effect effect;
  std::string_view usage;
};

constexpr CommandSpec kCommands[] = {
    {"OPEN", RouterCommand::kOpen, 3, Effect::kOpen, "account currency"},
    {"DEPOSIT", RouterCommand::kDeposit, 4, Effect::kMutation, "account amount txid"},
    {"WITHDRAW", RouterCommand::kWithdraw, 4, Effect::kMutation, "account amount txid"},
    {"TRANSFER", RouterCommand::kTransfer, -6, Effect::kMutation, "from to amount currency txid [MODE tcc|saga]"},
    {"BALANCE", RouterCommand::kBalance, 2, Effect::kRead, "account"},
    {"TX", RouterCommand::kTx, 2, Effect::kRead, "txid"},
    {"PING", RouterCommand::kPing, -1, Effect::kRead, "[message]"},
    {"INFO", RouterCommand::kInfo, -1, Effect::kRead, "[section]"},
    {"TX.INDOUBT", RouterCommand::kTxInDoubt, -1, Effect::kRead, "[min_age_ms] [COUNT n]"},
    {"TX.RESOLVE", RouterCommand::kTxResolve, 3, Effect::kMutation, "txid confirm|cancel"},
    {"TRANSFER.BATCH", RouterCommand::kTransferBatch, -7, Effect::kMutation,
     "[MODE tcc|saga] n from to amount currency txid [from to amount currency txid ...]"},
};

constexpr size_t kBatchStride = 5;  // TRANSFER.BATCH: from to amount currency txid per transfer

constexpr size_t kMaxInDoubtList = 10'000;  // TX.INDOUBT's COUNT bound (per shard, as ROW.INDOUBT)

const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec& spec : kCommands) {
    if (EqualsIgnoreCase(spec.name, name)) return &spec;
  }
  return nullptr;
}

int64_t MonotonicNowUs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1000;
}

// A checked argument or the MALFORMED message the shard would give for it (the
// same words as src/shard/commands.cc, so a client sees one behaviour).
struct ArgumentError {
  ResultCode code = ResultCode::kOk;
  std::string message;
  bool failed() const { return code != ResultCode::kOk; }
};

ArgumentError Malformed(std::string message) { return ArgumentError{ResultCode::kMalformed, std::move(message)}; }

bool CheckAccount(std::string_view text, AccountId* out, ArgumentError* error) {
  if (ParseAccountId(text, out)) return true;
  *error = Malformed(
      StrCat("account must be an unsigned 64-bit decimal integer, got '", text.substr(0, 32), "'"));
  return false;
}

bool CheckAmount(std::string_view text, ArgumentError* error) {
  Amount amount;
  if (ParseAmount(text, &amount)) return true;
  *error = Malformed(StrCat("amount must be a positive integer of minor units up to ", kMaxAmount, ", got '",
                            text.substr(0, 32), "'"));
  return false;
}

bool CheckCurrency(std::string_view text, ArgumentError* error) {
  Currency currency;
  if (Currency::Parse(text, &currency)) return true;
  *error = Malformed(StrCat("currency must be three letters A-Z, got '", text.substr(0, 32), "'"));
  return false;
}

bool CheckTxid(std::string_view text, ArgumentError* error) {
  if (IsValidTxid(text)) return true;
  *error = Malformed(StrCat("transaction id must be 1-", kMaxTxidBytes, " visible ASCII characters"));
  return false;
}

// The optional "MODE tcc|saga" after TRANSFER's txid (args[6], args[7]).
bool CheckTransferMode(const std::vector<std::string>& args, ArgumentError* error) {
  if (args.size() == 6) return true;
  if (!EqualsIgnoreCase(args[6], "MODE")) {
    *error = Malformed("expected nothing or MODE tcc|saga after the txid");
    return false;
  }
  if (!EqualsIgnoreCase(args[7], "tcc") && !EqualsIgnoreCase(args[7], "saga")) {
    *error = Malformed(StrCat("mode must be tcc or saga, got '", std::string_view(args[7]).substr(0, 32), "'"));
    return false;
  }
  return true;
}

// One TRANSFER.BATCH item (fields[0..4]: from to amount currency txid), checked as a
// TRANSFER without MODE is: the same rules, order and messages.
ArgumentError CheckTransferItem(const std::string* fields, AccountId accounts[2]) {
  ArgumentError error;
  if (!CheckAccount(fields[0], &accounts[0], &error) || !CheckAccount(fields[1], &accounts[1], &error) ||
      !CheckAmount(fields[2], &error) || !CheckCurrency(fields[3], &error) || !CheckTxid(fields[4], &error)) {
    return error;
  }
  if (accounts[0] == accounts[1]) return ArgumentError{ResultCode::kSameAccount, "a transfer needs two different accounts"};
  return error;
}

// TRANSFER.BATCH's index of item 0's `from`: after the name, the optional MODE pair and n.
size_t BatchFirstItem(const std::vector<std::string>& args) { return EqualsIgnoreCase(args[1], "MODE") ? 4 : 2; }

// Checks a call's arguments after its arity, in the order the shard checks them
// (the handler's parsers in argument order, then the engine's txid and same-account
// rules). Fills accounts[] with the accounts the call routes by.
ArgumentError CheckArguments(RouterCommand command, const std::vector<std::string>& args, AccountId accounts[2],
                             size_t* account_count) {
  ArgumentError error;
  *account_count = 0;
  switch (command) {
    case RouterCommand::kOpen:
      if (!CheckAccount(args[1], &accounts[0], &error) || !CheckCurrency(args[2], &error)) return error;
      *account_count = 1;
      return error;
    case RouterCommand::kDeposit:
    case RouterCommand::kWithdraw:
      if (!CheckAccount(args[1], &accounts[0], &error) || !CheckAmount(args[2], &error) ||
          !CheckTxid(args[3], &error)) {
        return error;
      }
      *account_count = 1;
      return error;
    case RouterCommand::kTransfer:
      if (args.size() != 6 && args.size() != 8) {
        return ArgumentError{ResultCode::kWrongArity,
                             "wrong number of arguments for 'TRANSFER'; usage: TRANSFER from to amount currency "
                             "txid [MODE tcc|saga]"};
      }
      if (!CheckAccount(args[1], &accounts[0], &error) || !CheckAccount(args[2], &accounts[1], &error) ||
          !CheckAmount(args[3], &error) || !CheckCurrency(args[4], &error) || !CheckTransferMode(args, &error) ||
          !CheckTxid(args[5], &error)) {
        return error;
      }
      if (accounts[0] == accounts[1]) {
        return ArgumentError{ResultCode::kSameAccount, "a transfer needs two different accounts"};
      }
      *account_count = 2;
      return error;
    case RouterCommand::kBalance:
      if (!CheckAccount(args[1], &accounts[0], &error)) return error;
      *account_count = 1;
      return error;
    case RouterCommand::kTx:
      CheckTxid(args[1], &error);
      return error;
    case RouterCommand::kTxInDoubt: {
      // [min_age_ms] [COUNT n]
      size_t at = 1;
      uint64_t value;
      if (at < args.size() && !EqualsIgnoreCase(args[at], "COUNT")) {
        if (!ParseUint64(args[at], &value) || value > (uint64_t{1} << 40)) {
          return Malformed("min_age_ms must be a non-negative integer");
        }
        ++at;
      }
      if (at < args.size()) {
        if (!EqualsIgnoreCase(args[at], "COUNT") || at + 2 != args.size() || !ParseUint64(args[at + 1], &value) ||
            value < 1 || value > kMaxInDoubtList) {
          return Malformed(StrCat("usage: TX.INDOUBT [min_age_ms] [COUNT n] with n 1-", kMaxInDoubtList));
        }
      }
      return error;
    }
    case RouterCommand::kTransferBatch: {
      // [MODE tcc|saga] n, then exactly n groups of five; the items themselves are
      // checked one by one (StartBatch): a bad item is that item's error only.
      if (EqualsIgnoreCase(args[1], "MODE") && !EqualsIgnoreCase(args[2], "tcc") &&
          !EqualsIgnoreCase(args[2], "saga")) {
        return Malformed(StrCat("mode must be tcc or saga, got '", std::string_view(args[2]).substr(0, 32), "'"));
      }
      const size_t at = BatchFirstItem(args) - 1;
      int64_t count;
      if (!ParseInt64(args[at], &count) || count < 1 || count > static_cast<int64_t>(kMaxTransferBatchItems)) {
        return Malformed(StrCat("n must be an integer from 1 to ", kMaxTransferBatchItems));
      }
      const size_t items = static_cast<size_t>(count);
      if (args.size() - at - 1 != items * kBatchStride) {
        return ArgumentError{ResultCode::kWrongArity,
                             StrCat("TRANSFER.BATCH ", items, " takes exactly ", items,
                                    " groups of from to amount currency txid (", items * kBatchStride,
                                    " arguments after n), got ", args.size() - at - 1)};
      }
      return error;
    }
    case RouterCommand::kTxResolve:
      if (!CheckTxid(args[1], &error)) return error;
      if (!EqualsIgnoreCase(args[2], "confirm") && !EqualsIgnoreCase(args[2], "cancel")) {
        return Malformed(StrCat("resolution must be confirm or cancel, got '", std::string_view(args[2]).substr(0, 32),
                                "'"));
      }
      return error;
    default:
      return error;
  }
}

// The partition and owner named by "-MOVED <partition> <owner> ...".
bool ParseMoved(const ShardReply& reply, uint32_t* partition, std::string* owner) {
  std::string_view rest = reply.error_message();
  size_t space = rest.find(' ');
  if (space == std::string_view::npos) return false;
  uint64_t value;
  if (!ParseUint64(rest.substr(0, space), &value) || value >= kMaxPartitionCount) return false;
  rest.remove_prefix(space + 1);
  *owner = std::string(rest.substr(0, rest.find(' ')));
  *partition = static_cast<uint32_t>(value);
  return !owner->empty();
}

bool SameMap(const cluster::VersionedPartitionMap* a, int64_t created_zxid, int32_t version) {
  return a != nullptr && a->created_zxid == created_zxid && a->version == version;
}

}  // namespace

std::string_view RouterCommandName(RouterCommand command) {
  constexpr std::string_view kNames[] = {"OPEN",       "DEPOSIT",    "WITHDRAW",       "TRANSFER",
                                         "BALANCE",    "TX",         "PING",           "INFO",
                                         "TX.INDOUBT", "TX.RESOLVE", "TRANSFER.BATCH", "OTHER"};
  static_assert(std::size(kNames) == static_cast<size_t>(RouterCommand::kCount_));
  auto index = static_cast<size_t>(command);
  return index < std::size(kNames) ? kNames[index] : "OTHER";
}

bool InfoSectionWanted(std::string_view asked, std::string_view name) {
  return asked.empty() || EqualsIgnoreCase(asked, "all") || EqualsIgnoreCase(asked, "everything") ||
         EqualsIgnoreCase(asked, "default") || EqualsIgnoreCase(asked, name);
}

ShardReply RouterError(ResultCode code, std::string_view message) {
  ShardReply reply;
  reply.type = ShardReply::Type::kError;
  reply.text = StrCat(ResultCodeName(code), " ", message);
  return reply;
}

// One checked call on its way to a shard (shared by the callbacks that carry it).
struct RouterCore::Call {
  RouterCommand command = RouterCommand::kOther;
  Effect effect = Effect::kRead;
  std::vector<std::string> args;  // the shard command: args[0] upper case, no MODE
  AccountId accounts[2] = {0, 0};
  size_t account_count = 0;
  RouterCallback done;
  uint64_t order_key = 0;  // see Router::Execute
  int64_t start_us = 0;
  int moved_retries = 0;
  // Owners named by -MOVED replies (partition, shard id), used only while the map
  // is the one they were learnt with (hint_map_*).
  std::vector<std::pair<uint32_t, std::string>> hints;
  int64_t hint_map_zxid = -1;
  int32_t hint_map_version = -1;
  bool finished = false;
  xshard::TransferMode mode = xshard::TransferMode::kTcc;  // TRANSFER: its MODE (or the default)
  // An executor's call (CallOwnerOf / CallShard): answered through internal_done,
  // not counted as a client call. target_shard: sent there, not routed.
  xshard::CallDone internal_done;
  std::string target_shard;
  // A TRANSFER.BATCH item sent alone (RunBatchItem): answered through item_done, not
  // counted as a client call (the batch is).
  bool batch_item = false;
  std::function<void(ShardReply)> item_done;
};

// A TRANSFER.BATCH call on its way: one result slot per item, filled in any order.
struct RouterCore::Batch {
  CallPtr call;
  size_t first = 0;                // call->args index of item 0's `from`
  std::vector<ShardReply> results;  // by item
  size_t waiting = 0;              // items without a result, +1 while StartBatch runs
};

// A TX call asked of every pooled shard.
struct RouterCore::TxFanout {
  CallPtr call;
  size_t waiting = 0;
  std::vector<std::string> failures;  // "shard-1: why", for the -UNAVAILABLE message
};

RouterCore::RouterCore(EventLoop& loop, shardlink::ShardPool& pool, const RouterCoreOptions& options)
    : loop_(loop), pool_(pool), options_(options) {
  xshard::ExecutorOptions executor_options = options_.executor;
  if (!options_.router_id.empty()) executor_options.owner = options_.router_id;
  executor_ = std::make_unique<TransactionExecutor>(loop_, *this, executor_options);
  resolver_ = std::make_unique<Resolver>(loop_, *executor_, *this, options_.resolver, [this] {
    std::vector<std::string> ids;
    for (const auto& [id, address] : pooled_) ids.push_back(id);
    return ids;
  });
  if (options_.run_resolver) resolver_->Start();
}

RouterCore::~RouterCore() {
  destroying_ = true;
  resolver_.reset();
  executor_.reset();  // flows still under way are left to the resolvers
  auto parked = std::move(parked_);
  parked_.clear();
  for (auto& [id, entry] : parked) {
    loop_.CancelTimer(entry.second);
    Finish(entry.first, RouterError(ResultCode::kUnavailable, "the router is stopping; nothing was done, retry"));
  }
}

void RouterCore::SetMapRefresher(std::function<void()> request_refresh) { request_refresh_ = std::move(request_refresh); }

// --- Calls --------------------------------------------------------------------------

void RouterCore::Execute(std::vector<std::string> args, RouterCallback done, uint64_t order_key) {
  const int64_t start_us = MonotonicNowUs();
  ++stats_.calls;
  if (args.empty()) {
    ++stats_.calls_by_command[static_cast<size_t>(RouterCommand::kOther)];
    Refuse(RouterCommand::kOther, start_us, ResultCode::kMalformed, "empty command", done);
    return;
  }
  const CommandSpec* spec = FindCommand(args[0]);
  if (spec == nullptr) {
    ++stats_.calls_by_command[static_cast<size_t>(RouterCommand::kOther)];
    Refuse(RouterCommand::kOther, start_us, ResultCode::kUnknownCommand,
           StrCat("unknown command '", std::string_view(args[0]).substr(0, 64), "'"), done);
    return;
  }
  const RouterCommand command = spec->command;
  ++stats_.calls_by_command[static_cast<size_t>(command)];
  const size_t count = args.size();
  if ((spec->arity > 0 && count != static_cast<size_t>(spec->arity)) ||
      (spec->arity < 0 && count < static_cast<size_t>(-spec->arity))) {
    Refuse(command, start_us, ResultCode::kWrongArity,
           StrCat("wrong number of arguments for '", spec->name, "'; usage: ", spec->name,
                  spec->usage.empty() ? "" : " ", spec->usage),
           done);
    return;
  }
  if (command == RouterCommand::kPing || command == RouterCommand::kInfo) {
    ShardReply reply;
    if (command == RouterCommand::kPing && count == 1) {
      reply.type = ShardReply::Type::kStatus;
      reply.text = "PONG";
    } else if (command == RouterCommand::kPing) {
      reply.type = ShardReply::Type::kBulk;
      reply.text = args[1];
    } else {
      reply.type = ShardReply::Type::kBulk;
      AppendInfo(count > 1 ? std::string_view(args[1]) : std::string_view("default"), &reply.text);
    }
    CountReply(command, start_us, reply);
    done(std::move(reply));
    return;
  }
  auto call = std::make_shared<Call>();
  ArgumentError error = CheckArguments(command, args, call->accounts, &call->account_count);
  if (error.failed()) {
    Refuse(command, start_us, error.code, error.message, done);
    return;
  }
  if (in_flight_ >= options_.max_in_flight) {
    ++stats_.overloads;
    Refuse(command, start_us, ResultCode::kBusy,
           StrCat("router overloaded: ", in_flight_, " calls in flight; nothing was done, retry later"), done);
    return;
  }
  call->command = command;
  call->effect = spec->effect;
  call->args = std::move(args);
  call->args[0] = std::string(spec->name);
  if (command == RouterCommand::kTransfer) {
    call->mode = options_.default_mode;
    if (call->args.size() == 8) xshard::ParseTransferMode(call->args[7], &call->mode);
    call->args.resize(6);  // MODE is the router's, not the shard's
  } else if (command == RouterCommand::kTransferBatch) {
    call->mode = options_.default_mode;
    if (EqualsIgnoreCase(call->args[1], "MODE")) xshard::ParseTransferMode(call->args[2], &call->mode);
  }
  call->done = std::move(done);
  call->order_key = order_key;
  call->start_us = start_us;
  ++in_flight_;
  switch (command) {
    case RouterCommand::kTx:
      FanOutTx(call);
      break;
    case RouterCommand::kTxInDoubt:
      FanOutInDoubt(call);
      break;
    case RouterCommand::kTxResolve:
      ResolveByHand(call);
      break;
    case RouterCommand::kTransferBatch:
      StartBatch(call);
      break;
    default:
      Dispatch(call);
  }
}

void RouterCore::Dispatch(const CallPtr& call) {
  if (map_ == nullptr) {
    Finish(call, RouterError(ResultCode::kUnavailable, "no partition map loaded yet; nothing was done, retry later"));
    return;
  }
  if (!call->target_shard.empty()) {
    const std::string shard_id = call->target_shard;
    const absl::InlinedVector<std::string_view, 16> views(call->args.begin(), call->args.end());
    absl::Status sent = pool_.Send(
        shard_id, views,
        [this, call, shard_id](absl::StatusOr<ShardReply> reply) { OnShardReply(call, shard_id, std::move(reply)); },
        0);
    if (!sent.ok()) FinishInternal(call, xshard::CallResult::NotSent(StrCat(shard_id, ": ", FromAbsl(sent.message()))));
    return;
  }
  if (!SameMap(map_.get(), call->hint_map_zxid, call->hint_map_version)) call->hints.clear();
  const uint32_t partition_count = map_->map.partition_count();
  std::string_view owners[2];
  uint32_t partitions[2] = {0, 0};
  for (size_t i = 0; i < call->account_count; ++i) {
    partitions[i] = PartitionOf(call->accounts[i], partition_count);
    owners[i] = map_->map.OwnerOf(partitions[i]);
    for (const auto& [partition, owner] : call->hints) {
      if (partition == partitions[i]) owners[i] = owner;
    }
  }
  if (call->account_count == 2 && owners[0] != owners[1]) {
    StartCrossShard(call);
    return;
  }
  const std::string shard_id(owners[0]);
  const absl::InlinedVector<std::string_view, 16> views(call->args.begin(), call->args.end());
  absl::Status sent = pool_.Send(
      shard_id, views,
      [this, call, shard_id](absl::StatusOr<ShardReply> reply) { OnShardReply(call, shard_id, std::move(reply)); },
      call->order_key);
  if (!sent.ok() && call->internal_done) {
    FinishInternal(call, xshard::CallResult::NotSent(StrCat(shard_id, ": ", FromAbsl(sent.message()))));
    return;
  }
  if (!sent.ok()) {
    if (absl::IsNotFound(sent)) {
      sent = absl::UnavailableError(StrCat("shard ", shard_id, " (owner of partition ", partitions[0],
                                           ") is not live and no address is known; the command was not sent"));
    }
    Finish(call, LinkFailureReply(*call, shard_id, sent));
  }
}

void RouterCore::OnShardReply(const CallPtr& call, const std::string& shard_id, absl::StatusOr<ShardReply> reply) {
  if (!reply.ok() && call->internal_done) {
    const std::string why = StrCat(shard_id, ": ", FromAbsl(reply.status().message()));
    const bool not_sent = absl::IsUnauthenticated(reply.status()) || absl::IsResourceExhausted(reply.status()) ||
                          why.find("was not sent") != std::string::npos;
    FinishInternal(call, not_sent ? xshard::CallResult::NotSent(why) : xshard::CallResult::Unknown(why));
    return;
  }
  if (!reply.ok()) {
    // The callback form of a failure: the command may have run (Unavailable), or
    // never left (Unauthenticated).
    absl::Status status = reply.status();
    Finish(call, LinkFailureReply(*call, shard_id, status));
    return;
  }
  if (reply->is_error() && reply->error_word() == "MOVED" && call->moved_retries < options_.max_moved_retries &&
      !destroying_) {
    RetryAfterMoved(call, *reply);
    return;
  }
  if (reply->is_error() && reply->error_code() == ResultCode::kNotAuthenticated) {
    // The shard wants AUTH the router did not send: the router's setup, not the
    // client's doing (a NOAUTH passed through would send the client to AUTH in vain).
    Finish(call, RouterError(ResultCode::kUnavailable,
                             StrCat(shard_id, " requires AUTH and the router has no password for it (set "
                                              "--shard_password_file); nothing was done")));
    return;
  }
  Finish(call, *std::move(reply));
}

void RouterCore::RetryAfterMoved(const CallPtr& call, const ShardReply& moved) {
  ++call->moved_retries;
  ++stats_.moved_retries;
  uint32_t partition;
  std::string owner;
  if (map_ != nullptr && ParseMoved(moved, &partition, &owner) && owner != "unknown" && pool_.HasShard(owner)) {
    if (!SameMap(map_.get(), call->hint_map_zxid, call->hint_map_version)) call->hints.clear();
    call->hint_map_zxid = map_->created_zxid;
    call->hint_map_version = map_->version;
    auto known = std::find_if(call->hints.begin(), call->hints.end(),
                              [&](const auto& hint) { return hint.first == partition; });
    if (known != call->hints.end()) {
      known->second = owner;
    } else {
      call->hints.emplace_back(partition, owner);
    }
  }
  // One map read per wait period at most, however many calls were moved.
  const int64_t now_ms = loop_.now_ms();
  if (request_refresh_ && (last_refresh_request_ms_ < 0 || now_ms - last_refresh_request_ms_ >= options_.moved_retry_wait_ms)) {
    last_refresh_request_ms_ = now_ms;
    ++stats_.map_refreshes;
    request_refresh_();
  }
  const int64_t wait_ms = options_.moved_retry_wait_ms << std::min(call->moved_retries - 1, 10);
  const uint64_t park_id = next_park_id_++;
  EventLoop::TimerId timer = loop_.RunAfter(wait_ms, [this, park_id] {
    auto it = parked_.find(park_id);
    if (it == parked_.end()) return;
    CallPtr parked = std::move(it->second.first);
    parked_.erase(it);
    Dispatch(parked);
  });
  parked_.emplace(park_id, std::make_pair(call, timer));
}

void RouterCore::FanOut(std::vector<std::string> args,
                        std::function<void(std::vector<std::pair<std::string, xshard::CallResult>>)> done) {
  struct Gather {
    size_t waiting = 0;
    std::vector<std::pair<std::string, xshard::CallResult>> results;
    std::function<void(std::vector<std::pair<std::string, xshard::CallResult>>)> done;
  };
  auto gather = std::make_shared<Gather>();
  gather->done = std::move(done);
  gather->waiting = pooled_.size() + 1;  // +1: released below, after every send
  auto one_done = [gather] {
    if (--gather->waiting == 0) gather->done(std::move(gather->results));
  };
  const std::vector<std::string> ids = [this] {
    std::vector<std::string> list;
    for (const auto& [id, address] : pooled_) list.push_back(id);
    return list;
  }();
  for (const std::string& shard_id : ids) {
    CallShard(shard_id, args, [gather, shard_id, one_done](xshard::CallResult result) {
      gather->results.emplace_back(shard_id, std::move(result));
      one_done();
    });
  }
  one_done();
}

void RouterCore::FanOutTx(const CallPtr& call) {
  if (pooled_.empty()) {
    Finish(call, RouterError(ResultCode::kUnavailable, "no live shards to ask; retry later"));
    return;
  }
  FanOut({"TX", call->args[1]}, [this, call](std::vector<std::pair<std::string, xshard::CallResult>> results) {
    // The shard with the phase row (or a local record) tells the whole story; a
    // shard with only the other branch is the fallback.
    const ShardReply* best = nullptr;
    std::string best_shard;
    bool best_has_row = false;
    std::vector<std::string> failures;
    for (const auto& [shard_id, result] : results) {
      if (result.kind != xshard::CallResult::Kind::kReply || result.reply.is_error()) {
        failures.push_back(StrCat(shard_id, ": ", result.ToString()));
        continue;
      }
      if (result.reply.type != ShardReply::Type::kArray) continue;
      bool has_row = false;
      for (size_t i = 0; i + 1 < result.reply.elements.size(); i += 2) {
        const std::string& field = result.reply.elements[i].text;
        if (field == "row.phase" || (field == "kind" && result.reply.elements[i + 1].text == "local")) has_row = true;
      }
      if (best == nullptr || (has_row && !best_has_row)) {
        best = &result.reply;
        best_shard = shard_id;
        best_has_row = has_row;
      }
    }
    if (best != nullptr && (best_has_row || failures.empty())) {
      ShardReply known = *best;
      ShardReply name, value;
      name.type = value.type = ShardReply::Type::kBulk;
      name.text = "shard";
      value.text = best_shard;
      known.elements.push_back(std::move(name));
      known.elements.push_back(std::move(value));
      Finish(call, std::move(known));
      return;
    }
    if (failures.empty()) {
      ShardReply nil;
      nil.type = ShardReply::Type::kNil;
      Finish(call, std::move(nil));
      return;
    }
    Finish(call, RouterError(ResultCode::kUnavailable,
                             StrCat("no shard that answered knows transaction ", call->args[1], ", but ",
                                    failures.size(), " did not answer (", failures.front(), "); ask again later")));
  });
}

void RouterCore::FanOutInDoubt(const CallPtr& call) {
  std::vector<std::string> args = {"ROW.INDOUBT", "0"};
  size_t at = 1;
  if (at < call->args.size() && !EqualsIgnoreCase(call->args[at], "COUNT")) args[1] = call->args[at++];
  if (at + 1 < call->args.size()) args.insert(args.end(), {"COUNT", call->args[at + 1]});
  if (pooled_.empty()) {
    Finish(call, RouterError(ResultCode::kUnavailable, "no live shards to ask; retry later"));
    return;
  }
  FanOut(std::move(args), [this, call](std::vector<std::pair<std::string, xshard::CallResult>> results) {
    ShardReply list;
    list.type = ShardReply::Type::kArray;
    std::vector<std::string> failures;
    for (auto& [shard_id, result] : results) {
      if (result.kind != xshard::CallResult::Kind::kReply || result.reply.type != ShardReply::Type::kArray) {
        failures.push_back(StrCat(shard_id, ": ", result.ToString()));
        continue;
      }
      for (ShardReply& txid : result.reply.elements) list.elements.push_back(std::move(txid));
    }
    if (!failures.empty()) {
      Finish(call, RouterError(ResultCode::kUnavailable,
                               StrCat(failures.size(), " shard(s) did not answer (", failures.front(),
                                      "); the list would be incomplete, ask again later")));
      return;
    }
    Finish(call, std::move(list));
  });
}

void RouterCore::ResolveByHand(const CallPtr& call) {
  const std::string txid = call->args[1];
  const xshard::ResumeIntent intent =
      EqualsIgnoreCase(call->args[2], "confirm") ? xshard::ResumeIntent::kConfirm : xshard::ResumeIntent::kCancel;
  FanOut({"ROW.GET", txid}, [this, call, txid, intent](std::vector<std::pair<std::string, xshard::CallResult>> results) {
    std::string home;
    std::vector<std::string> failures;
    for (const auto& [shard_id, result] : results) {
      if (result.kind != xshard::CallResult::Kind::kReply || result.reply.is_error()) {
        failures.push_back(StrCat(shard_id, ": ", result.ToString()));
      } else if (result.reply.type == ShardReply::Type::kArray) {
        home = shard_id;
      }
    }
    if (home.empty()) {
      Finish(call, failures.empty()
                       ? RouterError(ResultCode::kNoRow, StrCat("no shard holds a row for ", txid))
                       : RouterError(ResultCode::kUnavailable,
                                     StrCat("no shard that answered holds a row for ", txid, ", but ", failures.size(),
                                            " did not answer (", failures.front(), "); retry later")));
      return;
    }
    executor_->Resume(home, txid, intent,
                      [this, call](const xshard::TransferOutcome& outcome) { Finish(call, outcome.ToReply()); });
  });
}

void RouterCore::StartCrossShard(const CallPtr& call) {
  xshard::TransferSpec spec;
  spec.txid = call->args[5];
  spec.from = call->accounts[0];
  spec.to = call->accounts[1];
  ParseAmount(call->args[3], &spec.amount);
  spec.currency = call->args[4];
  spec.mode = call->mode;
  executor_->Start(std::move(spec), [this, call](const xshard::TransferOutcome& outcome) {
    if (outcome.kind == xshard::TransferOutcome::Kind::kInDoubt) ++stats_.outcome_unknown;
    Finish(call, outcome.ToReply());
  });
}

void RouterCore::StartBatch(const CallPtr& call) {
  if (map_ == nullptr) {
    Finish(call, RouterError(ResultCode::kUnavailable, "no partition map loaded yet; nothing was done, retry later"));
    return;
  }
  const std::shared_ptr<const cluster::VersionedPartitionMap> map = map_;
  const uint32_t partition_count = map->map.partition_count();
  auto batch = std::make_shared<Batch>();
  batch->call = call;
  batch->first = BatchFirstItem(call->args);
  const size_t count = (call->args.size() - batch->first) / kBatchStride;
  batch->results.resize(count);
  batch->waiting = count + 1;  // +1: released below, after every send
  // Same-shard items by owner, in the request's order; the others go one by one.
  std::map<std::string, std::vector<size_t>, std::less<>> by_owner;
  std::vector<size_t> cross_shard;
  for (size_t i = 0; i < count; ++i) {
    AccountId accounts[2];
    const ArgumentError error = CheckTransferItem(&call->args[batch->first + i * kBatchStride], accounts);
    if (error.failed()) {
      BatchItemDone(batch, i, RouterError(error.code, error.message));
      continue;
    }
    const std::string_view from_owner = map->map.OwnerOf(PartitionOf(accounts[0], partition_count));
    const std::string_view to_owner = map->map.OwnerOf(PartitionOf(accounts[1], partition_count));
    if (from_owner != to_owner) {
      cross_shard.push_back(i);
      continue;
    }
    auto it = by_owner.find(from_owner);
    if (it == by_owner.end()) it = by_owner.emplace(std::string(from_owner), std::vector<size_t>()).first;
    it->second.push_back(i);
  }
  // At most 1638 items: 2 + 5 x 1638 arguments is within the shard links' 8192.
  const size_t chunk = std::clamp<size_t>(options_.max_batch_items_per_shard_command, 1, 1638);
  for (const auto& [shard_id, items] : by_owner) {
    for (size_t begin = 0; begin < items.size(); begin += chunk) {
      const size_t end = std::min(items.size(), begin + chunk);
      SendBatchChunk(batch, shard_id, std::vector<size_t>(items.begin() + begin, items.begin() + end));
    }
  }
  for (size_t index : cross_shard) RunBatchItem(batch, index, nullptr);
  BatchItemDone(batch, count, ShardReply());  // releases the +1
}

void RouterCore::SendBatchChunk(const BatchPtr& batch, const std::string& shard_id, std::vector<size_t> items) {
  const std::vector<std::string>& args = batch->call->args;
  const std::string count = StrCat(items.size());
  std::vector<std::string_view> views;
  views.reserve(2 + items.size() * kBatchStride);
  views.push_back("TRANSFER.BATCH");
  views.push_back(count);
  for (size_t index : items) {
    const size_t at = batch->first + index * kBatchStride;
    views.insert(views.end(), args.begin() + at, args.begin() + at + kBatchStride);
  }
  // The pool formats the command before Send returns, so `items` can move into the callback.
  std::vector<size_t> sent_items = items;
  absl::Status sent = pool_.Send(
      shard_id, views,
      [this, batch, shard_id, sent_items = std::move(sent_items)](absl::StatusOr<ShardReply> reply) {
        OnBatchChunkReply(batch, shard_id, sent_items, std::move(reply));
      },
      batch->call->order_key);
  if (sent.ok()) return;
  if (absl::IsNotFound(sent)) {
    sent = absl::UnavailableError(
        StrCat("shard ", shard_id, " is not live and no address is known; the command was not sent"));
  }
  for (size_t index : items) BatchItemDone(batch, index, LinkFailureReply(*batch->call, shard_id, sent));
}

void RouterCore::OnBatchChunkReply(const BatchPtr& batch, const std::string& shard_id,
                                   const std::vector<size_t>& items, absl::StatusOr<ShardReply> reply) {
  if (!reply.ok()) {
    // As each item's TRANSFER would be answered: not sent, or outcome unknown.
    for (size_t index : items) BatchItemDone(batch, index, LinkFailureReply(*batch->call, shard_id, reply.status()));
    return;
  }
  if (reply->is_error()) {
    // Refused as a whole (LOG_UNAVAILABLE, BUSY, ...): nothing of it ran.
    const std::optional<ResultCode> code = reply->error_code();
    if (code == ResultCode::kUnknownCommand) {
      // A shard from before TRANSFER.BATCH (a rolling upgrade): one TRANSFER per item.
      for (size_t index : items) RunBatchItem(batch, index, nullptr);
      return;
    }
    ShardReply answer = *reply;
    if (code == ResultCode::kNotAuthenticated) {
      answer = RouterError(ResultCode::kUnavailable,
                           StrCat(shard_id, " requires AUTH and the router has no password for it (set "
                                            "--shard_password_file); nothing was done"));
    }
    for (size_t index : items) BatchItemDone(batch, index, answer);
    return;
  }
  if (reply->type != ShardReply::Type::kArray || reply->elements.size() != items.size()) {
    // Not the shape the protocol promises: what ran is not known.
    LogError("shard %s answered a TRANSFER.BATCH of %zu with %s", shard_id.c_str(), items.size(),
             reply->ToString().substr(0, 200).c_str());
    stats_.outcome_unknown += items.size();
    const ShardReply answer = RouterError(
        ResultCode::kUnavailable, StrCat(shard_id, ": unexpected reply to TRANSFER.BATCH; outcome unknown, retry "
                                                   "with the same txid"));
    for (size_t index : items) BatchItemDone(batch, index, answer);
    return;
  }
  for (size_t k = 0; k < items.size(); ++k) {
    ShardReply& element = reply->elements[k];
    if (element.is_error() && element.error_word() == "MOVED" && options_.max_moved_retries > 0 && !destroying_) {
      RunBatchItem(batch, items[k], &element);  // alone, with the MOVED retries of a TRANSFER
    } else {
      BatchItemDone(batch, items[k], std::move(element));
    }
  }
}

void RouterCore::RunBatchItem(const BatchPtr& batch, size_t index, const ShardReply* moved) {
  const std::string* fields = &batch->call->args[batch->first + index * kBatchStride];
  auto item = std::make_shared<Call>();
  item->command = RouterCommand::kTransfer;
  item->effect = Effect::kMutation;
  item->args = {"TRANSFER", fields[0], fields[1], fields[2], fields[3], fields[4]};
  ParseAccountId(fields[0], &item->accounts[0]);
  ParseAccountId(fields[1], &item->accounts[1]);
  item->account_count = 2;
  item->mode = batch->call->mode;
  item->order_key = batch->call->order_key;
  item->start_us = MonotonicNowUs();
  item->batch_item = true;
  item->item_done = [this, batch, index](ShardReply reply) { BatchItemDone(batch, index, std::move(reply)); };
  if (moved != nullptr) {
    RetryAfterMoved(item, *moved);  // as OnShardReply does for a TRANSFER
  } else {
    Dispatch(item);  // routes it: the executor when its owners differ
  }
}

void RouterCore::BatchItemDone(const BatchPtr& batch, size_t index, ShardReply reply) {
  if (index < batch->results.size()) batch->results[index] = std::move(reply);
  WALLET_CHECK(batch->waiting > 0, "a TRANSFER.BATCH item answered twice");
  if (--batch->waiting > 0) return;
  ShardReply answer;
  answer.type = ShardReply::Type::kArray;
  answer.elements = std::move(batch->results);
  // Each item's error counts as an error reply (errorstats), as a TRANSFER's would.
  for (const ShardReply& result : answer.elements) {
    if (!result.is_error()) continue;
    const std::optional<ResultCode> code = result.error_code();
    ++stats_.errors_by_code[code.has_value() ? static_cast<size_t>(*code) : kErrorSlots - 1];
  }
  Finish(batch->call, std::move(answer));
}

void RouterCore::CallOwnerOf(AccountId account, std::vector<std::string> args, xshard::CallDone done) {
  auto call = std::make_shared<Call>();
  call->command = RouterCommand::kOther;
  call->effect = Effect::kMutation;
  call->args = std::move(args);
  call->accounts[0] = account;
  call->account_count = 1;
  call->internal_done = std::move(done);
  call->start_us = MonotonicNowUs();
  Dispatch(call);
}

void RouterCore::CallShard(const std::string& shard_id, std::vector<std::string> args, xshard::CallDone done) {
  auto call = std::make_shared<Call>();
  call->command = RouterCommand::kOther;
  call->effect = Effect::kMutation;
  call->args = std::move(args);
  call->target_shard = shard_id;
  call->internal_done = std::move(done);
  call->start_us = MonotonicNowUs();
  Dispatch(call);
}

void RouterCore::FinishInternal(const CallPtr& call, xshard::CallResult result) {
  if (call->finished) return;
  call->finished = true;
  xshard::CallDone done = std::move(call->internal_done);
  done(std::move(result));
}

ShardReply RouterCore::LinkFailureReply(const Call& call, std::string_view shard_id, const absl::Status& status) {
  const std::string_view why = FromAbsl(status.message());
  if (absl::IsResourceExhausted(status)) {
    ++stats_.overloads;
    return RouterError(ResultCode::kBusy, StrCat("router overloaded: ", why, "; nothing was done, retry later"));
  }
  if (absl::IsUnauthenticated(status)) {
    return RouterError(ResultCode::kUnavailable,
                       StrCat(shard_id, ": the shard refused the router's AUTH (check --shard_password): ", why,
                              "; nothing was done"));
  }
  // Unavailable: either refused before sending (the message says "was not sent") or
  // lost after (outcome unknown).
  const bool not_sent = why.find("was not sent") != std::string_view::npos;
  std::string_view advice = "retry later";
  if (call.effect == Effect::kMutation && !not_sent) {
    ++stats_.outcome_unknown;
    advice = "outcome unknown, retry with the same txid";
  } else if (call.effect == Effect::kOpen && !not_sent) {
    advice = "outcome unknown, retry (OPEN is idempotent)";
  } else if (not_sent) {
    advice = "nothing was done, retry later";
  }
  return RouterError(ResultCode::kUnavailable, StrCat(shard_id, ": ", why, "; ", advice));
}

void RouterCore::Finish(const CallPtr& call, ShardReply reply) {
  if (call->batch_item) {
    WALLET_CHECK(!call->finished, "a TRANSFER.BATCH item answered twice");
    call->finished = true;
    std::function<void(ShardReply)> done = std::move(call->item_done);
    done(std::move(reply));
    return;
  }
  if (call->internal_done) {
    FinishInternal(call, xshard::CallResult::Reply(std::move(reply)));
    return;
  }
  WALLET_CHECK(!call->finished, "a router call answered twice");
  call->finished = true;
  WALLET_CHECK(in_flight_ > 0, "router in-flight count underflow");
  --in_flight_;
  CountReply(call->command, call->start_us, reply);
  RouterCallback done = std::move(call->done);
  done(std::move(reply));
}

void RouterCore::Refuse(RouterCommand command, int64_t start_us, ResultCode code, std::string_view message,
                        const RouterCallback& done) {
  ShardReply reply = RouterError(code, message);
  CountReply(command, start_us, reply);
  done(std::move(reply));
}

void RouterCore::CountReply(RouterCommand command, int64_t start_us, const ShardReply& reply) {
  const auto index = static_cast<size_t>(command);
  if (reply.is_error()) {
    std::optional<ResultCode> code = reply.error_code();
    ++stats_.errors_by_code[code.has_value() ? static_cast<size_t>(*code) : kErrorSlots - 1];
  }
  const int64_t latency_us = std::max<int64_t>(0, MonotonicNowUs() - start_us);
  size_t bucket = 0;
  while (bucket < std::size(kCallLatencyBoundsUs) && latency_us > kCallLatencyBoundsUs[bucket]) ++bucket;
  ++stats_.call_latency_buckets_by_command[index][bucket];
  stats_.call_latency_sum_us_by_command[index] += static_cast<uint64_t>(latency_us);
}

RouterStats RouterCore::stats() const {
  RouterStats stats = stats_;
  stats.in_flight_now = in_flight_;
  stats.map_version_now = map_ != nullptr ? map_->version : -1;
  stats.live_shards_now = live_.size();
  if (executor_ != nullptr) stats.transactions = executor_->stats();
  if (resolver_ != nullptr) stats.resolver = resolver_->stats();
  return stats;
}

// --- Cluster state ------------------------------------------------------------------

void RouterCore::SetPartitionMap(std::shared_ptr<const cluster::VersionedPartitionMap> map) {
  if (map == nullptr) return;
  if (map_ != nullptr) {
    const bool newer = map->created_zxid > map_->created_zxid ||
                       (map->created_zxid == map_->created_zxid && map->version > map_->version);
    if (!newer) return;
    if (map->map.partition_count() != map_->map.partition_count()) {
      LogError("partition map version %d has %u partitions instead of %u; ignored", map->version,
               map->map.partition_count(), map_->map.partition_count());
      return;
    }
  }
  map_ = std::move(map);
  LogInfo("routing by partition map version %d (%zu shards own partitions)", map_->version,
          map_->map.ShardIds().size());
  UpdatePool();
  // Calls that wait after a -MOVED go again now, by the new map.
  auto parked = std::move(parked_);
  parked_.clear();
  for (auto& [id, entry] : parked) {
    loop_.CancelTimer(entry.second);
    Dispatch(entry.first);
  }
}

void RouterCore::SetLiveShards(const std::map<std::string, std::string>& live) {
  std::map<std::string, std::string> previous = std::move(live_);
  live_.clear();
  for (const auto& [id, address] : live) {
    if (!shardlink::ParseShardAddress(address).ok()) {
      LogWarning("live shard %s has an unusable address '%s'; ignored", id.c_str(), address.c_str());
      continue;
    }
    live_.emplace(id, address);
    known_[id] = address;
  }
  const std::vector<std::string> owners = map_ != nullptr ? map_->map.ShardIds() : std::vector<std::string>();
  for (const auto& [id, address] : previous) {
    if (!live_.contains(id) && std::find(owners.begin(), owners.end(), id) != owners.end()) {
      LogWarning("shard %s left ZooKeeper's live shards but owns partitions; still routing to its last address %s",
                 id.c_str(), address.c_str());
    }
  }
  UpdatePool();
}

void RouterCore::UpdatePool() {
  std::map<std::string, std::string> pooled = live_;
  std::vector<std::string> owners;
  if (map_ != nullptr) owners = map_->map.ShardIds();
  for (const std::string& owner : owners) {
    auto known = known_.find(owner);
    if (known != known_.end()) pooled.emplace(owner, known->second);  // no-op when live
  }
  // Forget addresses of shards that are neither live nor owners: known_ stays as
  // small as the cluster.
  for (auto it = known_.begin(); it != known_.end();) {
    bool owner = std::find(owners.begin(), owners.end(), it->first) != owners.end();
    it = (owner || live_.contains(it->first)) ? std::next(it) : known_.erase(it);
  }
  if (pooled == pooled_) return;
  absl::Status status = pool_.SetShards(pooled);
  if (!status.ok()) {
    LogError("shard pool refused the shard list: %s", std::string(status.message()).c_str());
    return;
  }
  pooled_ = std::move(pooled);
}

// --- INFO ---------------------------------------------------------------------------

void RouterCore::AppendInfo(std::string_view section, std::string* out) const {
  auto wants = [&](std::string_view name) { return InfoSectionWanted(section, name); };
  auto join = [](const std::map<std::string, std::string>& shards) {
    std::string text;
    for (const auto& [id, address] : shards) StrAppend(&text, text.empty() ? "" : ",", id, "=", address);
    return text;
  };
  if (wants("router")) {
    StrAppend(out, "# Router\r\n", "router_id:", options_.router_id, "\r\n",
              "map_version:", map_ != nullptr ? map_->version : -1, "\r\n",
              "partition_count:", map_ != nullptr ? map_->map.partition_count() : 0, "\r\n",
              "live_shards:", live_.size(), "\r\n", "live_shard_addresses:", join(live_), "\r\n",
              "pooled_shards:", pooled_.size(), "\r\n", "pooled_shard_addresses:", join(pooled_), "\r\n",
              "in_flight:", in_flight_, "\r\n", "max_in_flight:", options_.max_in_flight, "\r\n",
              "waiting_after_moved:", parked_.size(), "\r\n",
              "max_moved_retries:", options_.max_moved_retries, "\r\n", "\r\n");
  }
  if (wants("stats")) {
    uint64_t errors = 0;
    for (uint64_t count : stats_.errors_by_code) errors += count;
    StrAppend(out, "# Stats\r\n", "total_calls:", stats_.calls, "\r\n");
    for (size_t i = 0; i < static_cast<size_t>(RouterCommand::kCount_); ++i) {
      std::string name(RouterCommandName(static_cast<RouterCommand>(i)));
      for (char& c : name) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      StrAppend(out, "calls_", name, ":", stats_.calls_by_command[i], "\r\n");
    }
    StrAppend(out, "total_error_replies:", errors, "\r\n", "moved_retries:", stats_.moved_retries, "\r\n",
              "map_refreshes:", stats_.map_refreshes, "\r\n", "overloads:", stats_.overloads, "\r\n",
              "outcome_unknown:", stats_.outcome_unknown, "\r\n",
              "cross_shard_refused:", stats_.cross_shard_refused, "\r\n", "\r\n");
  }
  if (wants("transactions") && executor_ != nullptr && resolver_ != nullptr) {
    const xshard::ExecutorStats& tx = executor_->stats();
    const ResolverStats& resolver = resolver_->stats();
    StrAppend(out, "# Transactions\r\n", "default_mode:", xshard::TransferModeName(options_.default_mode), "\r\n");
    for (int mode = 0; mode < xshard::kModeCount; ++mode) {
      const std::string_view name = xshard::TransferModeName(static_cast<xshard::TransferMode>(mode));
      StrAppend(out, name, "_started:", tx.started[mode], "\r\n", name, "_committed:", tx.committed[mode], "\r\n",
                name, "_rejected:", tx.rejected[mode], "\r\n", name, "_aborted:", tx.aborted[mode], "\r\n", name,
                "_answered_in_doubt:", tx.answered_in_doubt[mode], "\r\n", name, "_followed:", tx.followed[mode],
                "\r\n", name, "_finished_committed:", tx.finished_committed[mode], "\r\n", name,
                "_finished_aborted:", tx.finished_aborted[mode], "\r\n");
    }
    StrAppend(out, "active_transactions:", tx.active_now, "\r\n", "resends:", tx.resends, "\r\n",
              "resumed:", tx.resumed, "\r\n", "lost_leases:", tx.lost_leases, "\r\n",
              "invariant_alarms:", tx.invariant_alarms, "\r\n", "resolver_scans:", resolver.scans, "\r\n",
              "resolver_claimed:", resolver.claimed, "\r\n", "resolver_lease_refused:", resolver.lease_refused, "\r\n",
              "resolver_finished:", resolver.finished, "\r\n", "resolver_scan_errors:", resolver.scan_errors, "\r\n",
              "in_doubt:", resolver.in_doubt_now, "\r\n", "oldest_in_doubt_ms:", resolver.oldest_in_doubt_ms_now,
              "\r\n", "resolver_min_age_ms:", options_.resolver.min_age_ms, "\r\n", "\r\n");
  }
  if (wants("errorstats")) {
    StrAppend(out, "# Errorstats\r\n");
    for (size_t i = 0; i < kErrorSlots; ++i) {
      if (stats_.errors_by_code[i] == 0) continue;
      std::string_view name = i < static_cast<size_t>(ResultCode::kCount_) ? ResultCodeName(static_cast<ResultCode>(i))
                                                                           : std::string_view("OTHER");
      StrAppend(out, "errorstat_", name, ":count=", stats_.errors_by_code[i], "\r\n");
    }
    StrAppend(out, "\r\n");
  }
  if (wants("shards")) {
    const shardlink::ShardLinkStats links = pool_.stats();
    StrAppend(out, "# Shards\r\n", "shard_commands_sent:", links.sent, "\r\n",
              "shard_replies:", links.replied, "\r\n", "shard_error_replies:", links.error_replies, "\r\n",
              "shard_overloads:", links.overloads, "\r\n", "shard_refused_unavailable:", links.refused_unavailable,
              "\r\n", "shard_failed_unavailable:", links.failed_unavailable, "\r\n",
              "shard_command_timeouts:", links.command_timeouts, "\r\n",
              "shard_reconnects:", links.reconnects, "\r\n", "shard_auth_failures:", links.auth_failures, "\r\n",
              "shard_links_connected:", links.connected, "\r\n");
    size_t index = 0;
    for (const shardlink::ShardLinkInfo& link : pool_.Links()) {
      StrAppend(out, "link", index++, ":shard=", link.shard_id, ",address=", link.address,
                ",state=", shardlink::LinkStateName(link.state), ",in_flight=", link.in_flight,
                ",last_error=", link.last_error, "\r\n");
    }
    StrAppend(out, "\r\n");
  }
}

}  // namespace wallet::router
