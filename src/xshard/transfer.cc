#include "xshard/transfer.h"

#include <utility>

#include "common/strings.h"
#include "xshard/shard_caller.h"

namespace wallet::xshard {

using shardlink::ShardReply;

std::string_view TransferModeName(TransferMode mode) { return mode == TransferMode::kSaga ? "saga" : "tcc"; }

bool ParseTransferMode(std::string_view text, TransferMode* out) {
  if (EqualsIgnoreCase(text, "tcc")) {
    *out = TransferMode::kTcc;
    return true;
  }
  if (EqualsIgnoreCase(text, "saga")) {
    *out = TransferMode::kSaga;
    return true;
  }
  return false;
}

TransferOutcome TransferOutcome::Committed() { return TransferOutcome{Kind::kCommitted, ResultCode::kOk, ""}; }

TransferOutcome TransferOutcome::Rejected(ResultCode code, std::string message) {
  return TransferOutcome{Kind::kRejected, code, std::move(message)};
}

TransferOutcome TransferOutcome::InDoubt(std::string message, ResultCode code) {
  return TransferOutcome{Kind::kInDoubt, code, std::move(message)};
}

ShardReply TransferOutcome::ToReply() const {
  ShardReply reply;
  if (kind == Kind::kCommitted) {
    reply.type = ShardReply::Type::kStatus;
    reply.text = "OK";
    return reply;
  }
  reply.type = ShardReply::Type::kError;
  reply.text = StrCat(ResultCodeName(code), " ", message);
  return reply;
}

TransferSpec RowView::Spec(std::string txid) const {
  TransferSpec spec;
  spec.txid = std::move(txid);
  spec.from = from;
  spec.to = to;
  spec.amount = amount;
  spec.currency = currency;
  spec.mode = mode;
  return spec;
}

TransferOutcome RowView::FinalOutcome(std::string_view txid) const {
  if (phase == "committed") return TransferOutcome::Committed();
  ResultCode code;
  if (debit_try == "failed" && debit_answer != "OK" && ParseResultCode(debit_answer, &code)) {
    return TransferOutcome::Rejected(code, StrCat("transfer ", txid, " was refused by the source account's shard"));
  }
  if (credit_try == "failed" && credit_answer != "OK" && ParseResultCode(credit_answer, &code)) {
    return TransferOutcome::Rejected(
        code, StrCat("transfer ", txid, " was refused by the target account's shard (", credit_answer,
                     "); nothing moved"));
  }
  return TransferOutcome::Rejected(
      ResultCode::kAborted,
      StrCat("transfer ", txid, " was cancelled: a shard could not be reached in time; nothing moved, retry with a new "
                                "transaction id"));
}

namespace {

bool ParseInt(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  bool negative = text[0] == '-';
  uint64_t value;
  if (!ParseUint64(std::string_view(text).substr(negative ? 1 : 0), &value) || value > INT64_MAX) return false;
  *out = negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
  return true;
}

}  // namespace

bool ParseRowView(const ShardReply& reply, RowView* out, std::string* error) {
  if (reply.type != ShardReply::Type::kArray) {
    *error = reply.type == ShardReply::Type::kNil ? "no row" : StrCat("not a row: ", reply.ToString());
    return false;
  }
  if (reply.elements.size() % 2 != 0) {
    *error = "a row reply must have field/value pairs";
    return false;
  }
  RowView row;
  int seen = 0;
  for (size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    const std::string& field = reply.elements[i].text;
    const ShardReply& value_reply = reply.elements[i + 1];
    const std::string value =
        value_reply.type == ShardReply::Type::kInteger ? std::to_string(value_reply.integer) : value_reply.text;
    int64_t number = 0;
    bool ok = true;
    if (field == "mode") {
      ok = ParseTransferMode(value, &row.mode);
      ++seen;
    } else if (field == "from" || field == "to") {
      uint64_t account = 0;
      ok = ParseUint64(value, &account);
      (field == "from" ? row.from : row.to) = account;
      ++seen;
    } else if (field == "amount" || field == "attempts" || field == "created_ms" || field == "updated_ms" ||
               field == "lease_until_ms" || field == "out_of_order") {
      ok = ParseInt(value, &number);
      if (field == "amount") row.amount = number, ++seen;
      if (field == "attempts") row.attempts = static_cast<uint32_t>(number);
      if (field == "created_ms") row.created_ms = number;
      if (field == "updated_ms") row.updated_ms = number;
      if (field == "lease_until_ms") row.lease_until_ms = number;
      if (field == "out_of_order") row.out_of_order = number != 0;
    } else if (field == "currency") {
      row.currency = value, ++seen;
    } else if (field == "decision") {
      row.decision = value, ++seen;
    } else if (field == "phase") {
      row.phase = value, ++seen;
    } else if (field == "debit_try") {
      row.debit_try = value;
    } else if (field == "credit_try") {
      row.credit_try = value;
    } else if (field == "debit_answer") {
      row.debit_answer = value;
    } else if (field == "credit_answer") {
      row.credit_answer = value;
    } else if (field == "debit_end") {
      row.debit_end = value;
    } else if (field == "credit_end") {
      row.credit_end = value;
    } else if (field == "lease_owner") {
      row.lease_owner = value;
    }
    if (!ok) {
      *error = StrCat("row field ", field, " has a bad value '", value, "'");
      return false;
    }
  }
  if (seen < 7) {
    *error = "a row reply lacks some of mode, from, to, amount, currency, decision, phase";
    return false;
  }
  *out = std::move(row);
  return true;
}

std::string BranchStateIn(const ShardReply& tx_reply, std::string_view field) {
  if (tx_reply.type != ShardReply::Type::kArray) return "";
  const auto& elements = tx_reply.elements;
  for (size_t i = 0; i + 1 < elements.size(); i += 2) {
    if (elements[i].text != field) continue;
    std::string_view value = elements[i + 1].text;  // "state=tried direction=CREDIT ..."
    constexpr std::string_view kState = "state=";
    if (value.substr(0, kState.size()) != kState) return "";
    value.remove_prefix(kState.size());
    return std::string(value.substr(0, value.find(' ')));
  }
  return "";
}

// --- CallResult -------------------------------------------------------------------

CallResult CallResult::Reply(ShardReply reply) {
  CallResult result;
  result.kind = Kind::kReply;
  result.reply = std::move(reply);
  return result;
}

CallResult CallResult::NotSent(std::string why) {
  CallResult result;
  result.kind = Kind::kNotSent;
  result.why = std::move(why);
  return result;
}

CallResult CallResult::Unknown(std::string why) {
  CallResult result;
  result.kind = Kind::kUnknown;
  result.why = std::move(why);
  return result;
}

bool CallResult::IsStatus(std::string_view word) const {
  return kind == Kind::kReply && reply.type == ShardReply::Type::kStatus && reply.text == word;
}

bool CallResult::Ok() const { return IsStatus("OK") || IsStatus("EMPTY") || IsStatus("REPLAYED"); }

std::optional<ResultCode> CallResult::Code() const {
  if (kind != Kind::kReply || !reply.is_error()) return std::nullopt;
  return reply.error_code();
}

bool CallResult::Transient() const {
  if (kind != Kind::kReply) return true;
  if (!reply.is_error()) return false;
  std::optional<ResultCode> code = reply.error_code();
  // Words that are not ours (a proxy's error, say) are treated as transient: the
  // message is resent, never taken as a business refusal.
  return !code.has_value() || ResultCodeClass(*code) == ResultClass::kRetry;
}

std::string CallResult::ToString() const {
  switch (kind) {
    case Kind::kReply:
      return reply.ToString();
    case Kind::kNotSent:
      return StrCat("not sent: ", why);
    case Kind::kUnknown:
      return StrCat("unknown: ", why);
  }
  return "?";
}

}  // namespace wallet::xshard
