#include "shard/commands.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "common/money.h"
#include "common/partition.h"
#include "common/strings.h"
#include "shard/engine.h"
#include "shard/server.h"
#include "shard/storage.h"

namespace wallet::shard {

namespace {

using Args = std::vector<std::string_view>;
using Handler = void (*)(CommandContext&, const Args&);

enum CommandFlag : uint32_t {
  kWrite = 1 << 0,     // may change state (goes through the engine's events)
  kReadOnly = 1 << 1,  // reads state
  kAdmin = 1 << 2,     // server introspection
  kNoAuth = 1 << 3,    // allowed before AUTH
};

struct CommandSpec {
  std::string_view name;   // upper case
  int arity;               // > 0 exact, < 0 minimum (argument count includes the name)
  uint32_t flags;
  int first_key, last_key, key_step;  // account argument positions (for COMMAND)
  Handler handler;
  std::string_view usage;  // arguments after the name
};

// ---------------------------------------------------------------------------
// Replies and argument parsing. A parse helper that fails has already replied.

void ReplyError(CommandContext& context, ResultCode code, std::string_view message) {
  context.server.RecordError(code);
  context.reply.Error(ResultCodeName(code), message);
}

void ReplyResult(CommandContext& context, const Result& result) {
  if (result.ok()) {
    if (result.note == Result::Note::kEmptyRollback) {
      context.reply.SimpleString("EMPTY");
    } else {
      context.reply.Ok();
    }
    return;
  }
  if (result.code == ResultCode::kWrongPartition) {
    // MOVED <partition> <owner> <details>; the owner is the shard id the partition
    // map names, or "unknown" for a shard outside a cluster (no --zk).
    context.server.RecordError(result.code);
    context.reply.Error("MOVED", StrCat(result.partition, " ", context.server.PartitionOwner(result.partition), " ",
                                        result.message));
    return;
  }
  ReplyError(context, result.code, result.message);
}

// TCC.TRY / SAGA.STEP: a replay of a row-creating try (the branch and the row
// already existed with the same content) is +REPLAYED, so that an executor can tell
// that another executor owns the transaction. Everything else as ReplyResult.
void ReplyFirstPhase(CommandContext& context, bool with_row, const Result& result) {
  if (with_row && result.ok() && result.replayed()) {
    context.reply.SimpleString("REPLAYED");
    return;
  }
  ReplyResult(context, result);
}

bool ParseAccountArg(CommandContext& context, std::string_view text, AccountId* out) {
  if (ParseAccountId(text, out)) return true;
  ReplyError(context, ResultCode::kMalformed,
             StrCat("account must be an unsigned 64-bit decimal integer, got '",
                    text.substr(0, 32), "'"));
  return false;
}

bool ParseAmountArg(CommandContext& context, std::string_view text, Amount* out) {
  if (ParseAmount(text, out)) return true;
  ReplyError(context, ResultCode::kMalformed,
             StrCat("amount must be a positive integer of minor units up to ", kMaxAmount,
                    ", got '", text.substr(0, 32), "'"));
  return false;
}

bool ParseCurrencyArg(CommandContext& context, std::string_view text, Currency* out) {
  if (Currency::Parse(text, out)) return true;
  ReplyError(context, ResultCode::kMalformed,
             StrCat("currency must be three letters A-Z, got '", text.substr(0, 32), "'"));
  return false;
}

bool ParseDirectionArg(CommandContext& context, std::string_view text, Direction* out) {
  if (ParseDirection(text, out)) return true;
  ReplyError(context, ResultCode::kMalformed, "direction must be DEBIT or CREDIT");
  return false;
}

bool ParseIntArg(CommandContext& context, std::string_view what, std::string_view text,
                 int64_t min, int64_t max, int64_t* out) {
  int64_t value;
  if (ParseInt64(text, &value) && value >= min && value <= max) {
    *out = value;
    return true;
  }
  ReplyError(context, ResultCode::kMalformed,
             StrCat(what, " must be an integer from ", min, " to ", max));
  return false;
}

// Optional trailing "ROW <to_account>" of TCC.TRY / SAGA.STEP. Returns false after
// replying when present but malformed.
bool ParseHomeRow(CommandContext& context, const Args& args, size_t index, Mode mode,
                  AccountId account, Amount amount, Currency currency, RowSpec* spec,
                  bool* present) {
  *present = false;
  if (args.size() == index) return true;
  if (args.size() != index + 2 || !EqualsIgnoreCase(args[index], "ROW")) {
    ReplyError(context, ResultCode::kMalformed, "expected nothing or ROW <to_account> at the end");
    return false;
  }
  AccountId to;
  if (!ParseAccountArg(context, args[index + 1], &to)) return false;
  *spec = RowSpec{mode, account, to, amount, currency};
  *present = true;
  return true;
}

void AppendField(resp::ReplyWriter& reply, std::string_view name, std::string_view value) {
  reply.Bulk(name);
  reply.Bulk(value);
}
void AppendField(resp::ReplyWriter& reply, std::string_view name, int64_t value) {
  reply.Bulk(name);
  reply.Integer(value);
}

// Case-insensitive glob with '*' and '?' (CONFIG GET patterns).
bool GlobMatch(std::string_view pattern, std::string_view text) {
  if (pattern.empty()) return text.empty();
  if (pattern[0] == '*') {
    for (size_t skip = 0; skip <= text.size(); ++skip) {
      if (GlobMatch(pattern.substr(1), text.substr(skip))) return true;
    }
    return false;
  }
  if (text.empty()) return false;
  if (pattern[0] != '?' && !EqualsIgnoreCase(pattern.substr(0, 1), text.substr(0, 1))) return false;
  return GlobMatch(pattern.substr(1), text.substr(1));
}

// ---------------------------------------------------------------------------
// Connection and server commands.

void CmdPing(CommandContext& context, const Args& args) {
  if (args.size() == 1) {
    context.reply.SimpleString("PONG");
  } else {
    context.reply.Bulk(args[1]);
  }
}

void CmdEcho(CommandContext& context, const Args& args) { context.reply.Bulk(args[1]); }

void CmdQuit(CommandContext& context, const Args&) {
  context.session.close_after_reply = true;
  context.reply.Ok();
}

void CmdAuth(CommandContext& context, const Args& args) {
  // AUTH <password> or AUTH <username> <password> (the username must be "default").
  if (args.size() > 3) {
    ReplyError(context, ResultCode::kWrongArity, "AUTH takes [username] password");
    return;
  }
  if (args.size() == 3 && args[1] != "default") {
    ReplyError(context, ResultCode::kAuthFailed, "invalid username-password pair");
    return;
  }
  if (context.server.options().password.empty()) {
    ReplyError(context, ResultCode::kAuthFailed, "no password is configured on this shard");
    return;
  }
  if (!context.server.PasswordMatches(args.back())) {
    context.session.authenticated = false;
    ReplyError(context, ResultCode::kAuthFailed, "invalid password");
    return;
  }
  context.session.authenticated = true;
  context.reply.Ok();
}

void CmdInfo(CommandContext& context, const Args& args) {
  std::string text;
  context.server.AppendInfo(args.size() > 1 ? args[1] : std::string_view("default"), &text);
  context.reply.Bulk(text);
}

// SNAPSHOT: starts a background snapshot (like Redis's BGSAVE) at the end of this
// turn, covering every event committed by then.
void CmdSnapshot(CommandContext& context, const Args&) {
  ShardStorage* storage = context.server.storage();
  if (storage == nullptr) {
    ReplyError(context, ResultCode::kMalformed, "this shard runs in memory only (no --data_dir)");
    return;
  }
  absl::Status status = storage->RequestSnapshot();
  if (status.ok()) {
    context.reply.SimpleString("Background snapshot started");
  } else if (absl::IsAlreadyExists(status)) {
    ReplyError(context, ResultCode::kBusy, FromAbsl(status.message()));
  } else {
    ReplyError(context, ResultCode::kLogUnavailable, FromAbsl(status.message()));
  }
}

// DEBUG LOGFAULT <ENOSPC|EIO|OFF>: makes every event log write and sync fail with
// that error, as a full or failing disk would (tests only; needs
// --enable_debug_commands).
void CmdDebug(CommandContext& context, const Args& args) {
  if (!context.server.options().enable_debug_commands) {
    ReplyError(context, ResultCode::kUnknownCommand, "DEBUG is disabled (start with --enable_debug_commands)");
    return;
  }
  if (!EqualsIgnoreCase(args[1], "LOGFAULT") || args.size() != 3) {
    ReplyError(context, ResultCode::kMalformed, "usage: DEBUG LOGFAULT ENOSPC|EIO|OFF");
    return;
  }
  ShardStorage* storage = context.server.storage();
  if (storage == nullptr) {
    ReplyError(context, ResultCode::kMalformed, "this shard runs in memory only (no --data_dir)");
    return;
  }
  int error_number = -1;
  if (EqualsIgnoreCase(args[2], "ENOSPC")) error_number = ENOSPC;
  if (EqualsIgnoreCase(args[2], "EIO")) error_number = EIO;
  if (EqualsIgnoreCase(args[2], "OFF")) error_number = 0;
  if (error_number < 0) {
    ReplyError(context, ResultCode::kMalformed, "usage: DEBUG LOGFAULT ENOSPC|EIO|OFF");
    return;
  }
  storage->log().set_injected_error(error_number);
  context.reply.Ok();
}

void CmdConfig(CommandContext& context, const Args& args) {
  if (!EqualsIgnoreCase(args[1], "GET")) {
    ReplyError(context, ResultCode::kUnknownCommand,
               "only CONFIG GET is supported; settings are command-line flags");
    return;
  }
  if (args.size() != 3) {
    ReplyError(context, ResultCode::kWrongArity, "usage: CONFIG GET <pattern>");
    return;
  }
  const ServerOptions& options = context.server.options();
  const EngineOptions& engine_options = context.engine.options();
  std::vector<std::pair<std::string, std::string>> entries = {
      {"bind", options.bind_address},
      {"port", StrCat(context.server.port())},
      {"save", ""},
      {"appendonly", context.server.storage() != nullptr ? "yes" : "no"},
      {"appendfsync", context.server.storage() != nullptr
                          ? std::string(FsyncPolicyName(context.server.storage()->log().policy()))
                          : std::string("no")},
      {"dir", context.server.storage() != nullptr ? context.server.storage()->options().data_dir : ""},
      {"maxclients", StrCat(options.max_clients)},
      {"client-query-buffer-limit", StrCat(options.max_query_bytes)},
      {"proto-max-bulk-len", StrCat(options.limits.max_arg_bytes)},
      {"partition-count", StrCat(engine_options.partition_count)},
      {"partitions", context.engine.owned_partitions().ToString()},
      {"idempotency-window-ms", StrCat(engine_options.idempotency_window_ms)},
      {"max-accounts", StrCat(engine_options.max_accounts)},
      {"max-txn-records", StrCat(engine_options.max_txn_records)},
  };
  size_t matches = 0;
  for (const auto& entry : entries) matches += GlobMatch(args[2], entry.first) ? 1 : 0;
  context.reply.ArrayHeader(matches * 2);
  for (const auto& entry : entries) {
    if (GlobMatch(args[2], entry.first)) AppendField(context.reply, entry.first, entry.second);
  }
}

void CmdCommand(CommandContext& context, const Args& args);  // needs the table below

void CmdDbsize(CommandContext& context, const Args&) {
  context.reply.Integer(static_cast<int64_t>(context.engine.stats().accounts));
}

// ---------------------------------------------------------------------------
// Accounts and local transactions.

void CmdOpen(CommandContext& context, const Args& args) {
  AccountId account;
  Currency currency;
  if (!ParseAccountArg(context, args[1], &account) ||
      !ParseCurrencyArg(context, args[2], &currency)) {
    return;
  }
  ReplyResult(context, context.engine.Open(account, currency, context.now_ms));
}

void CmdDeposit(CommandContext& context, const Args& args) {
  AccountId account;
  Amount amount;
  if (!ParseAccountArg(context, args[1], &account) || !ParseAmountArg(context, args[2], &amount)) {
    return;
  }
  ReplyResult(context, context.engine.Deposit(args[3], account, amount, context.now_ms));
}

void CmdWithdraw(CommandContext& context, const Args& args) {
  AccountId account;
  Amount amount;
  if (!ParseAccountArg(context, args[1], &account) || !ParseAmountArg(context, args[2], &amount)) {
    return;
  }
  ReplyResult(context, context.engine.Withdraw(args[3], account, amount, context.now_ms));
}

// One transfer from its five arguments (from to amount currency txid, at
// fields[0..4]): TRANSFER's handler, and each item of TRANSFER.BATCH. Appends exactly
// one reply (+OK or the error), whatever the arguments hold.
void RunTransfer(CommandContext& context, const std::string_view* fields) {
  AccountId from, to;
  Amount amount;
  Currency currency;
  if (!ParseAccountArg(context, fields[0], &from) || !ParseAccountArg(context, fields[1], &to) ||
      !ParseAmountArg(context, fields[2], &amount) || !ParseCurrencyArg(context, fields[3], &currency)) {
    return;
  }
  ReplyResult(context,
              context.engine.Transfer(fields[4], from, to, amount, currency, context.now_ms));
}

void CmdTransfer(CommandContext& context, const Args& args) { RunTransfer(context, &args[1]); }

// TRANSFER.BATCH n from to amount currency txid [from to amount currency txid ...]:
// n TRANSFERs in one command, applied in order and independently (each one is what a
// TRANSFER with its arguments would be: idempotent by its txid, refused alone), all
// in this loop turn, so one group commit covers them. The reply is an array of n
// elements, +OK or that item's error. A bad n or argument count refuses the whole
// command (nothing applied); a bad argument of one item is that item's error only.
constexpr int64_t kMaxBatchTransfers = 10'000;
constexpr size_t kBatchStride = 5;

void CmdTransferBatch(CommandContext& context, const Args& args) {
  int64_t count;
  if (!ParseIntArg(context, "n", args[1], 1, kMaxBatchTransfers, &count)) return;
  const size_t items = static_cast<size_t>(count);
  if (args.size() - 2 != items * kBatchStride) {
    ReplyError(context, ResultCode::kWrongArity,
               StrCat("TRANSFER.BATCH ", items, " takes exactly ", items,
                      " groups of from to amount currency txid (", items * kBatchStride,
                      " arguments after n), got ", args.size() - 2));
    return;
  }
  context.reply.ArrayHeader(items);
  for (size_t i = 0; i < items; ++i) RunTransfer(context, &args[2 + i * kBatchStride]);
}

void CmdBalance(CommandContext& context, const Args& args) {
  AccountId account;
  if (!ParseAccountArg(context, args[1], &account)) return;
  AccountView view;
  Result result = context.engine.Balance(account, &view);
  if (!result.ok()) {
    ReplyResult(context, result);
    return;
  }
  context.reply.ArrayHeader(3);
  context.reply.Integer(view.available);
  context.reply.Integer(view.held);
  context.reply.Bulk(view.currency.ToString());
}

void CmdAccount(CommandContext& context, const Args& args) {
  AccountId account;
  if (!ParseAccountArg(context, args[1], &account)) return;
  AccountView view;
  Result result = context.engine.Balance(account, &view);
  if (!result.ok()) {
    ReplyResult(context, result);
    return;
  }
  context.reply.ArrayHeader(10);
  AppendField(context.reply, "available", view.available);
  AppendField(context.reply, "held", view.held);
  AppendField(context.reply, "pending_credit", view.pending_credit);
  AppendField(context.reply, "currency", view.currency.ToString());
  AppendField(context.reply, "partition",
              PartitionOf(account, context.engine.options().partition_count));
}

void CmdPartition(CommandContext& context, const Args& args) {
  AccountId account;
  if (!ParseAccountArg(context, args[1], &account)) return;
  uint32_t partition = PartitionOf(account, context.engine.options().partition_count);
  context.reply.ArrayHeader(2);
  context.reply.Integer(partition);
  context.reply.Integer(context.engine.owned_partitions().Contains(partition) ? 1 : 0);
}

void AppendBranch(resp::ReplyWriter& reply, const Branch& branch) {
  std::string name = branch.mode == Mode::kSaga ? StrCat("step:", branch.step)
                                                : StrCat("branch:", DirectionName(branch.direction));
  std::string value = StrCat("state=", BranchStateName(branch.state));
  if (branch.state != BranchState::kFenced) {
    StrAppend(&value, " direction=", DirectionName(branch.direction), " account=", branch.account,
              " amount=", branch.amount, " currency=", branch.currency.ToString());
  }
  AppendField(reply, name, value);
}

void AppendRowFields(resp::ReplyWriter& reply, const PhaseRow& row, std::string_view prefix) {
  AppendField(reply, StrCat(prefix, "mode"), ModeName(row.spec.mode));
  AppendField(reply, StrCat(prefix, "from"), StrCat(row.spec.from));
  AppendField(reply, StrCat(prefix, "to"), StrCat(row.spec.to));
  AppendField(reply, StrCat(prefix, "amount"), row.spec.amount);
  AppendField(reply, StrCat(prefix, "currency"), row.spec.currency.ToString());
  AppendField(reply, StrCat(prefix, "decision"), DecisionName(row.decision));
  AppendField(reply, StrCat(prefix, "phase"), RowPhaseName(row.phase));
  AppendField(reply, StrCat(prefix, "debit_try"), TryStatusName(row.debit_try));
  AppendField(reply, StrCat(prefix, "debit_answer"), ResultCodeName(row.debit_answer));
  AppendField(reply, StrCat(prefix, "credit_try"), TryStatusName(row.credit_try));
  AppendField(reply, StrCat(prefix, "credit_answer"), ResultCodeName(row.credit_answer));
  AppendField(reply, StrCat(prefix, "debit_end"), EndStatusName(row.debit_end));
  AppendField(reply, StrCat(prefix, "credit_end"), EndStatusName(row.credit_end));
  AppendField(reply, StrCat(prefix, "out_of_order"), row.out_of_order ? 1 : 0);
  AppendField(reply, StrCat(prefix, "attempts"), row.attempts);
  AppendField(reply, StrCat(prefix, "created_ms"), row.created_ms);
  AppendField(reply, StrCat(prefix, "updated_ms"), row.updated_ms);
  AppendField(reply, StrCat(prefix, "lease_owner"), row.lease_owner);
  AppendField(reply, StrCat(prefix, "lease_until_ms"), row.lease_until_ms);
}
constexpr size_t kRowFieldCount = 19;

void CmdTx(CommandContext& context, const Args& args) {
  TxView view = context.engine.FindTx(args[1]);
  resp::ReplyWriter& reply = context.reply;
  switch (view.kind) {
    case TxView::Kind::kUnknown:
      reply.Null();
      return;
    case TxView::Kind::kLocal: {
      bool transfer = view.local_type == EventType::kTransfer;
      reply.ArrayHeader(transfer ? 16 : 12);
      AppendField(reply, "kind", "local");
      AppendField(reply, "type", EventTypeName(view.local_type));
      AppendField(reply, "state", "committed");
      AppendField(reply, transfer ? "from" : "account", StrCat(view.account));
      if (transfer) AppendField(reply, "to", StrCat(view.peer));
      AppendField(reply, "amount", view.amount);
      if (transfer) AppendField(reply, "currency", view.currency.ToString());
      AppendField(reply, "time_ms", view.time_ms);
      return;
    }
    case TxView::Kind::kDistributed: {
      Mode mode = view.row != nullptr ? view.row->spec.mode
                  : view.branches.empty() ? Mode::kNone
                                          : view.branches.front().mode;
      size_t fields = 2 + view.branches.size() + (view.row != nullptr ? kRowFieldCount : 0);
      reply.ArrayHeader(fields * 2);
      AppendField(reply, "kind", ModeName(mode));
      AppendField(reply, "updated_ms", view.time_ms);
      for (const Branch& branch : view.branches) AppendBranch(reply, branch);
      if (view.row != nullptr) AppendRowFields(reply, *view.row, "row.");
      return;
    }
  }
}

void CmdAudit(CommandContext& context, const Args&) {
  const AuditTotals& audit = context.engine.audit();
  bool conserved = audit.available + audit.held ==
                   audit.deposited - audit.withdrawn + audit.moved_in - audit.moved_out;
  resp::ReplyWriter& reply = context.reply;
  reply.ArrayHeader(18);
  AppendField(reply, "accounts", static_cast<int64_t>(context.engine.stats().accounts));
  AppendField(reply, "available", Int128ToString(audit.available));
  AppendField(reply, "held", Int128ToString(audit.held));
  AppendField(reply, "pending_credit", Int128ToString(audit.pending_credit));
  AppendField(reply, "deposited", Int128ToString(audit.deposited));
  AppendField(reply, "withdrawn", Int128ToString(audit.withdrawn));
  AppendField(reply, "moved_in", Int128ToString(audit.moved_in));
  AppendField(reply, "moved_out", Int128ToString(audit.moved_out));
  AppendField(reply, "conserved", conserved ? 1 : 0);
}

// ---------------------------------------------------------------------------
// TC/C and saga primitives.

// Parses ROW.SET's field/value pairs, args[first..], into *update; replies and
// returns false on error. Also parses the ROW suffix of TCC.CONFIRM, TCC.CANCEL and
// SAGA.COMPENSATE (`usage` names the form in the arity error).
bool ParseRowUpdate(CommandContext& context, const Args& args, size_t first,
                    std::string_view usage, RowUpdate* update) {
  if (args.size() <= first || (args.size() - first) % 2 != 0) {
    ReplyError(context, ResultCode::kWrongArity, usage);
    return false;
  }
  for (size_t i = first; i < args.size(); i += 2) {
    std::string_view field = args[i], value = args[i + 1];
    uint16_t bit = 0;
    bool ok = false;
    if (EqualsIgnoreCase(field, "decision")) {
      bit = RowUpdate::kDecision;
      ok = ParseDecision(value, &update->decision) && update->decision != Decision::kNone;
    } else if (EqualsIgnoreCase(field, "phase")) {
      bit = RowUpdate::kPhase;
      ok = ParseRowPhase(value, &update->phase);
    } else if (EqualsIgnoreCase(field, "debit_try")) {
      bit = RowUpdate::kDebitTry;
      ok = ParseTryStatus(value, &update->debit_try);
    } else if (EqualsIgnoreCase(field, "credit_try")) {
      bit = RowUpdate::kCreditTry;
      ok = ParseTryStatus(value, &update->credit_try);
    } else if (EqualsIgnoreCase(field, "debit_end")) {
      bit = RowUpdate::kDebitEnd;
      ok = ParseEndStatus(value, &update->debit_end);
    } else if (EqualsIgnoreCase(field, "credit_end")) {
      bit = RowUpdate::kCreditEnd;
      ok = ParseEndStatus(value, &update->credit_end);
    } else if (EqualsIgnoreCase(field, "debit_answer")) {
      bit = RowUpdate::kDebitAnswer;
      ok = ParseResultCode(value, &update->debit_answer);
    } else if (EqualsIgnoreCase(field, "credit_answer")) {
      bit = RowUpdate::kCreditAnswer;
      ok = ParseResultCode(value, &update->credit_answer);
    } else if (EqualsIgnoreCase(field, "out_of_order")) {
      bit = RowUpdate::kOutOfOrder;
      ok = value == "0" || value == "1";
      update->out_of_order = value == "1" ? 1 : 0;
    } else if (EqualsIgnoreCase(field, "attempts")) {
      bit = RowUpdate::kAttempts;
      int64_t added;
      ok = ParseInt64(value, &added) && added >= 0 && added <= 1'000'000;
      update->attempts_added = ok ? static_cast<uint32_t>(added) : 0;
    } else {
      ReplyError(context, ResultCode::kMalformed,
                 StrCat("unknown row field '", field.substr(0, 32), "'"));
      return false;
    }
    if ((update->mask & bit) != 0) {
      ReplyError(context, ResultCode::kMalformed, StrCat("field ", field, " given twice"));
      return false;
    }
    if (!ok) {
      ReplyError(context, ResultCode::kMalformed,
                 StrCat("bad value for ", field, ": '", value.substr(0, 32), "'"));
      return false;
    }
    update->mask |= bit;
  }
  return true;
}


void CmdTccTry(CommandContext& context, const Args& args) {
  // TCC.TRY txid DEBIT|CREDIT account amount currency [ROW to_account]
  Direction direction;
  AccountId account;
  Amount amount;
  Currency currency;
  if (!ParseDirectionArg(context, args[2], &direction) ||
      !ParseAccountArg(context, args[3], &account) || !ParseAmountArg(context, args[4], &amount) ||
      !ParseCurrencyArg(context, args[5], &currency)) {
    return;
  }
  RowSpec spec;
  bool home;
  if (!ParseHomeRow(context, args, 6, Mode::kTcc, account, amount, currency, &spec, &home)) return;
  ReplyFirstPhase(context, home,
                  context.engine.TccTry(args[1], direction, account, amount, currency,
                                        home ? &spec : nullptr, context.now_ms));
}

// Optional "ROW field value [field value ...]" at args[index..] of the second-phase
// commands: an update of the txid's phase row (ROW.SET's fields), validated and
// committed with the branch operation. Returns false after replying when present but
// malformed.
bool ParseRowSuffix(CommandContext& context, const Args& args, size_t index,
                    std::string_view command, RowUpdate* update, bool* present) {
  *present = false;
  if (args.size() == index) return true;
  if (!EqualsIgnoreCase(args[index], "ROW")) {
    ReplyError(context, ResultCode::kMalformed,
               StrCat("expected nothing or ROW field value [field value ...] at the end, got '",
                      args[index].substr(0, 32), "'"));
    return false;
  }
  if (!ParseRowUpdate(context, args, index + 1,
                      StrCat(command, " ... ROW takes field value pairs after ROW"), update)) {
    return false;
  }
  *present = true;
  return true;
}

void CmdTccConfirm(CommandContext& context, const Args& args) {
  // TCC.CONFIRM txid DEBIT|CREDIT [ROW field value ...]
  Direction direction;
  if (!ParseDirectionArg(context, args[2], &direction)) return;
  RowUpdate update;
  bool with_row;
  if (!ParseRowSuffix(context, args, 3, "TCC.CONFIRM", &update, &with_row)) return;
  ReplyResult(context, context.engine.TccConfirm(args[1], direction, context.now_ms,
                                                 with_row ? &update : nullptr));
}

void CmdTccCancel(CommandContext& context, const Args& args) {
  // TCC.CANCEL txid DEBIT|CREDIT [ROW field value ...]
  Direction direction;
  if (!ParseDirectionArg(context, args[2], &direction)) return;
  RowUpdate update;
  bool with_row;
  if (!ParseRowSuffix(context, args, 3, "TCC.CANCEL", &update, &with_row)) return;
  ReplyResult(context, context.engine.TccCancel(args[1], direction, context.now_ms,
                                                with_row ? &update : nullptr));
}

bool ParseStepArg(CommandContext& context, std::string_view text, uint8_t* out) {
  int64_t step;
  if (!ParseIntArg(context, "step", text, 1, context.engine.options().max_saga_step, &step)) {
    return false;
  }
  *out = static_cast<uint8_t>(step);
  return true;
}

void CmdSagaStep(CommandContext& context, const Args& args) {
  // SAGA.STEP txid step DEBIT|CREDIT account amount currency [ROW to_account]
  uint8_t step;
  Direction direction;
  AccountId account;
  Amount amount;
  Currency currency;
  if (!ParseStepArg(context, args[2], &step) || !ParseDirectionArg(context, args[3], &direction) ||
      !ParseAccountArg(context, args[4], &account) || !ParseAmountArg(context, args[5], &amount) ||
      !ParseCurrencyArg(context, args[6], &currency)) {
    return;
  }
  RowSpec spec;
  bool home;
  if (!ParseHomeRow(context, args, 7, Mode::kSaga, account, amount, currency, &spec, &home)) return;
  ReplyFirstPhase(context, home,
                  context.engine.SagaStep(args[1], step, direction, account, amount, currency,
                                          home ? &spec : nullptr, context.now_ms));
}

void CmdSagaCompensate(CommandContext& context, const Args& args) {
  // SAGA.COMPENSATE txid step [ROW field value ...]
  uint8_t step;
  if (!ParseStepArg(context, args[2], &step)) return;
  RowUpdate update;
  bool with_row;
  if (!ParseRowSuffix(context, args, 3, "SAGA.COMPENSATE", &update, &with_row)) return;
  ReplyResult(context, context.engine.SagaCompensate(args[1], step, context.now_ms,
                                                     with_row ? &update : nullptr));
}

// ---------------------------------------------------------------------------
// Phase state table.

void CmdRowCreate(CommandContext& context, const Args& args) {
  // ROW.CREATE txid tcc|saga from to amount currency
  RowSpec spec;
  if (!ParseMode(args[2], &spec.mode)) {
    ReplyError(context, ResultCode::kMalformed, "mode must be tcc or saga");
    return;
  }
  if (!ParseAccountArg(context, args[3], &spec.from) || !ParseAccountArg(context, args[4], &spec.to) ||
      !ParseAmountArg(context, args[5], &spec.amount) ||
      !ParseCurrencyArg(context, args[6], &spec.currency)) {
    return;
  }
  ReplyResult(context, context.engine.RowCreate(args[1], spec, context.now_ms));
}

void CmdRowSet(CommandContext& context, const Args& args) {
  RowUpdate update;
  if (!ParseRowUpdate(context, args, 2, "ROW.SET takes txid followed by field value pairs",
                      &update)) {
    return;
  }
  ReplyResult(context, context.engine.RowSet(args[1], update, context.now_ms));
}

void CmdRowGet(CommandContext& context, const Args& args) {
  const PhaseRow* row = context.engine.FindRow(args[1]);
  if (row == nullptr) {
    context.reply.Null();
    return;
  }
  context.reply.ArrayHeader(kRowFieldCount * 2);
  AppendRowFields(context.reply, *row, "");
}

void CmdRowClaim(CommandContext& context, const Args& args) {
  int64_t lease_ms;
  if (!ParseIntArg(context, "lease_ms", args[3], 1, Engine::kMaxLeaseMs, &lease_ms)) return;
  ReplyResult(context, context.engine.RowClaim(args[1], args[2], lease_ms, context.now_ms));
}

void CmdRowInDoubt(CommandContext& context, const Args& args) {
  // ROW.INDOUBT min_age_ms [COUNT n]
  constexpr int64_t kMaxCount = 10'000;
  int64_t min_age_ms, count = 100;
  if (!ParseIntArg(context, "min_age_ms", args[1], 0, int64_t{1} << 40, &min_age_ms)) return;
  if (args.size() != 2) {
    if (args.size() != 4 || !EqualsIgnoreCase(args[2], "COUNT")) {
      ReplyError(context, ResultCode::kWrongArity, "usage: ROW.INDOUBT min_age_ms [COUNT n]");
      return;
    }
    if (!ParseIntArg(context, "COUNT", args[3], 1, kMaxCount, &count)) return;
  }
  std::vector<std::string> rows =
      context.engine.RowsInDoubt(min_age_ms, static_cast<size_t>(count), context.now_ms);
  context.reply.ArrayHeader(rows.size());
  for (const std::string& txid : rows) context.reply.Bulk(txid);
}

// ---------------------------------------------------------------------------
// The command table.

constexpr CommandSpec kCommands[] = {
    // name, arity, flags, first/last/step account key, handler, usage
    {"PING", -1, kReadOnly, 0, 0, 0, CmdPing, "[message]"},
    {"ECHO", 2, kReadOnly, 0, 0, 0, CmdEcho, "message"},
    {"QUIT", 1, kNoAuth, 0, 0, 0, CmdQuit, ""},
    {"AUTH", -2, kNoAuth, 0, 0, 0, CmdAuth, "[username] password"},
    {"INFO", -1, kAdmin, 0, 0, 0, CmdInfo, "[section]"},
    {"CONFIG", -2, kAdmin, 0, 0, 0, CmdConfig, "GET pattern"},
    {"COMMAND", -1, kAdmin, 0, 0, 0, CmdCommand, "[COUNT|INFO name...]"},
    {"DBSIZE", 1, kReadOnly, 0, 0, 0, CmdDbsize, ""},
    {"OPEN", 3, kWrite, 1, 1, 1, CmdOpen, "account currency"},
    {"DEPOSIT", 4, kWrite, 1, 1, 1, CmdDeposit, "account amount txid"},
    {"WITHDRAW", 4, kWrite, 1, 1, 1, CmdWithdraw, "account amount txid"},
    {"TRANSFER", 6, kWrite, 1, 2, 1, CmdTransfer, "from to amount currency txid"},
    // Accounts at 2, 3, 7, 8, ...: a pattern COMMAND's key positions cannot express.
    {"TRANSFER.BATCH", -7, kWrite, 0, 0, 0, CmdTransferBatch,
     "n from to amount currency txid [from to amount currency txid ...]"},
    {"BALANCE", 2, kReadOnly, 1, 1, 1, CmdBalance, "account"},
    {"ACCOUNT", 2, kReadOnly, 1, 1, 1, CmdAccount, "account"},
    {"PARTITION", 2, kReadOnly, 1, 1, 1, CmdPartition, "account"},
    {"TX", 2, kReadOnly, 0, 0, 0, CmdTx, "txid"},
    {"AUDIT", 1, kReadOnly, 0, 0, 0, CmdAudit, ""},
    {"TCC.TRY", -6, kWrite, 3, 3, 1, CmdTccTry,
     "txid DEBIT|CREDIT account amount currency [ROW to_account]"},
    {"TCC.CONFIRM", -3, kWrite, 0, 0, 0, CmdTccConfirm, "txid DEBIT|CREDIT [ROW field value ...]"},
    {"TCC.CANCEL", -3, kWrite, 0, 0, 0, CmdTccCancel, "txid DEBIT|CREDIT [ROW field value ...]"},
    {"SAGA.STEP", -7, kWrite, 4, 4, 1, CmdSagaStep,
     "txid step DEBIT|CREDIT account amount currency [ROW to_account]"},
    {"SAGA.COMPENSATE", -3, kWrite, 0, 0, 0, CmdSagaCompensate, "txid step [ROW field value ...]"},
    {"ROW.CREATE", 7, kWrite, 3, 4, 1, CmdRowCreate, "txid tcc|saga from to amount currency"},
    {"ROW.SET", -4, kWrite, 0, 0, 0, CmdRowSet, "txid field value [field value ...]"},
    {"ROW.GET", 2, kReadOnly, 0, 0, 0, CmdRowGet, "txid"},
    {"ROW.CLAIM", 4, kWrite, 0, 0, 0, CmdRowClaim, "txid owner lease_ms"},
    {"ROW.INDOUBT", -2, kReadOnly, 0, 0, 0, CmdRowInDoubt, "min_age_ms [COUNT n]"},
    {"SNAPSHOT", 1, kAdmin, 0, 0, 0, CmdSnapshot, ""},
    {"DEBUG", -2, kAdmin, 0, 0, 0, CmdDebug, "LOGFAULT ENOSPC|EIO|OFF"},
};

const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec& spec : kCommands) {
    if (EqualsIgnoreCase(spec.name, name)) return &spec;
  }
  return nullptr;
}

void AppendCommandInfo(resp::ReplyWriter& reply, const CommandSpec& spec) {
  std::string lower(spec.name);
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  reply.ArrayHeader(6);
  reply.Bulk(lower);
  reply.Integer(spec.arity);
  size_t flag_count = ((spec.flags & kWrite) ? 1 : 0) + ((spec.flags & kReadOnly) ? 1 : 0) +
                      ((spec.flags & kAdmin) ? 1 : 0) + ((spec.flags & kNoAuth) ? 1 : 0);
  reply.ArrayHeader(flag_count);
  if (spec.flags & kWrite) reply.SimpleString("write");
  if (spec.flags & kReadOnly) reply.SimpleString("readonly");
  if (spec.flags & kAdmin) reply.SimpleString("admin");
  if (spec.flags & kNoAuth) reply.SimpleString("no_auth");
  reply.Integer(spec.first_key);
  reply.Integer(spec.last_key);
  reply.Integer(spec.key_step);
}

void CmdCommand(CommandContext& context, const Args& args) {
  constexpr size_t kCount = sizeof(kCommands) / sizeof(kCommands[0]);
  if (args.size() == 1) {
    context.reply.ArrayHeader(kCount);
    for (const CommandSpec& spec : kCommands) AppendCommandInfo(context.reply, spec);
    return;
  }
  if (EqualsIgnoreCase(args[1], "COUNT")) {
    context.reply.Integer(static_cast<int64_t>(kCount));
    return;
  }
  if (EqualsIgnoreCase(args[1], "INFO")) {
    context.reply.ArrayHeader(args.size() - 2);
    for (size_t i = 2; i < args.size(); ++i) {
      const CommandSpec* spec = FindCommand(args[i]);
      if (spec == nullptr) {
        context.reply.NullArray();
      } else {
        AppendCommandInfo(context.reply, *spec);
      }
    }
    return;
  }
  // COMMAND DOCS and others: refused, so redis-cli falls back to its built-in help.
  ReplyError(context, ResultCode::kUnknownCommand,
             StrCat("COMMAND ", args[1].substr(0, 32), " is not supported"));
}

}  // namespace

void ExecuteCommand(CommandContext& context, const std::vector<std::string_view>& args) {
  const CommandSpec* spec = FindCommand(args[0]);
  if (spec == nullptr) {
    ReplyError(context, ResultCode::kUnknownCommand,
               StrCat("unknown command '", args[0].substr(0, 64), "'"));
    return;
  }
  if (!context.session.authenticated && (spec->flags & kNoAuth) == 0) {
    ReplyError(context, ResultCode::kNotAuthenticated, "authentication required");
    return;
  }
  size_t count = args.size();
  if ((spec->arity > 0 && count != static_cast<size_t>(spec->arity)) ||
      (spec->arity < 0 && count < static_cast<size_t>(-spec->arity))) {
    ReplyError(context, ResultCode::kWrongArity,
               StrCat("wrong number of arguments for '", spec->name, "'; usage: ", spec->name,
                      spec->usage.empty() ? "" : " ", spec->usage));
    return;
  }
  if ((spec->flags & kWrite) && context.server.log_unavailable()) {
    ReplyError(context, ResultCode::kLogUnavailable, context.server.log_failure_message());
    return;
  }
  spec->handler(context, args);
}

}  // namespace wallet::shard
