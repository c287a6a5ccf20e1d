#include "common/result_code.h"

namespace wallet {

namespace {
struct CodeInfo {
  std::string_view name;
  ResultClass result_class;
};

// Indexed by ResultCode; the static_assert below keeps it in step with the enum.
constexpr CodeInfo kCodes[] = {
    {"OK", ResultClass::kOk},
    {"INSUFFICIENT_FUNDS", ResultClass::kRejected},
    {"UNKNOWN_ACCOUNT", ResultClass::kRejected},
    {"ACCOUNT_EXISTS", ResultClass::kRejected},
    {"CURRENCY_MISMATCH", ResultClass::kRejected},
    {"OVERFLOW", ResultClass::kRejected},
    {"TXID_REUSED", ResultClass::kRejected},
    {"SAME_ACCOUNT", ResultClass::kRejected},
    {"MOVED", ResultClass::kRetry},
    {"FENCED", ResultClass::kRejected},
    {"NOT_TRIED", ResultClass::kRejected},
    {"ALREADY_CANCELLED", ResultClass::kRejected},
    {"ALREADY_CONFIRMED", ResultClass::kRejected},
    {"ROW_EXISTS", ResultClass::kRejected},
    {"NO_ROW", ResultClass::kRejected},
    {"DECISION_FIXED", ResultClass::kRejected},
    {"BAD_TRANSITION", ResultClass::kRejected},
    {"LEASED", ResultClass::kRetry},
    {"MALFORMED", ResultClass::kProtocol},
    {"UNKNOWN_COMMAND", ResultClass::kProtocol},
    {"WRONG_ARITY", ResultClass::kProtocol},
    {"NOAUTH", ResultClass::kRejected},
    {"WRONGPASS", ResultClass::kRejected},
    {"PROTOCOL", ResultClass::kProtocol},
    {"LIMIT", ResultClass::kProtocol},
    {"BUSY", ResultClass::kRetry},
    {"LOG_UNAVAILABLE", ResultClass::kRetry},
    {"CROSS_SHARD_UNSUPPORTED", ResultClass::kRejected},
    {"UNAVAILABLE", ResultClass::kRetry},
    {"ABORTED", ResultClass::kRejected},
};
static_assert(sizeof(kCodes) / sizeof(kCodes[0]) == static_cast<size_t>(ResultCode::kCount_),
              "kCodes must list every ResultCode in order");
}  // namespace

std::string_view ResultCodeName(ResultCode code) {
  auto index = static_cast<size_t>(code);
  return index < static_cast<size_t>(ResultCode::kCount_) ? kCodes[index].name : "UNKNOWN";
}

ResultClass ResultCodeClass(ResultCode code) {
  auto index = static_cast<size_t>(code);
  return index < static_cast<size_t>(ResultCode::kCount_) ? kCodes[index].result_class
                                                          : ResultClass::kProtocol;
}

bool ParseResultCode(std::string_view name, ResultCode* out) {
  for (size_t i = 0; i < static_cast<size_t>(ResultCode::kCount_); ++i) {
    if (kCodes[i].name == name) {
      *out = static_cast<ResultCode>(i);
      return true;
    }
  }
  return false;
}

}  // namespace wallet
