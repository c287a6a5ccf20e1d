#include "shard/event_codec.h"

#include <cstdint>
#include <cstring>

#include "common/strings.h"

namespace wallet::shard {
namespace {

// Which optional fields each type carries (the table in events.h).
enum Field : uint16_t {
  kTxid = 1 << 0,
  kAccount = 1 << 1,
  kPeer = 1 << 2,
  kAmount = 1 << 3,
  kCurrency = 1 << 4,
  kDirection = 1 << 5,
  kStep = 1 << 6,
  kMode = 1 << 7,
  kText = 1 << 8,
  kRowUpdate = 1 << 9,
  kCutoff = 1 << 10,
};

constexpr uint16_t kMoney = kAccount | kPeer | kAmount | kCurrency;

// Indexed by EventType (0 unused).
constexpr uint16_t kFieldsByType[] = {
    0,
    /*kOpen*/ kAccount | kCurrency,
    /*kDeposit*/ kTxid | kAccount | kAmount,
    /*kWithdraw*/ kTxid | kAccount | kAmount,
    /*kTransfer*/ kTxid | kMoney,
    /*kTccTry*/ kTxid | kMoney | kDirection | kMode,
    /*kTccConfirm*/ kTxid | kDirection,
    /*kTccCancel*/ kTxid | kDirection,
    /*kSagaStep*/ kTxid | kMoney | kDirection | kStep | kMode,
    /*kSagaCompensate*/ kTxid | kStep,
    /*kRowCreate*/ kTxid | kMoney | kMode,
    /*kRowUpdate*/ kTxid | kRowUpdate,
    /*kRowClaim*/ kTxid | kAmount | kText,
    /*kCollect*/ kAmount | kCutoff,
};
constexpr uint8_t kLastType = static_cast<uint8_t>(EventType::kCollect);
static_assert(sizeof(kFieldsByType) / sizeof(kFieldsByType[0]) == kLastType + 1u,
              "kFieldsByType must list every EventType");

constexpr uint16_t kLastCurrencyPacked = 26 * 26 * 26;

template <typename T>
void Put(T value, std::string* out) {
  static_assert(std::is_trivially_copyable_v<T>);
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts only (x86-64, arm64)
  out->append(bytes, sizeof(T));
}

void PutShortString(std::string_view text, std::string* out) {
  Put(static_cast<uint8_t>(text.size()), out);
  out->append(text.data(), text.size());
}

// Reads fixed-width values and short strings from a payload, remembering the first
// failure so that a decoder can read everything and check once.
class Cursor {
 public:
  explicit Cursor(std::string_view data) : data_(data) {}

  template <typename T>
  T Get() {
    T value{};
    if (!ok_ || data_.size() < sizeof(T)) {
      ok_ = false;
      return value;
    }
    std::memcpy(&value, data_.data(), sizeof(T));
    data_.remove_prefix(sizeof(T));
    return value;
  }
  std::string_view GetShortString() {
    const uint8_t length = Get<uint8_t>();
    if (!ok_ || data_.size() < length) {
      ok_ = false;
      return {};
    }
    std::string_view text = data_.substr(0, length);
    data_.remove_prefix(length);
    return text;
  }
  bool ok() const { return ok_; }
  size_t remaining() const { return data_.size(); }

 private:
  std::string_view data_;
  bool ok_ = true;
};

// Range checks for enum bytes read back from disk.
template <typename Enum>
bool InRange(Enum value, Enum last) {
  return static_cast<uint8_t>(value) <= static_cast<uint8_t>(last);
}

bool RowUpdateInRange(const RowUpdate& update) {
  return InRange(update.decision, Decision::kCancel) && InRange(update.phase, RowPhase::kAborted) &&
         InRange(update.debit_try, TryStatus::kFailed) &&
         InRange(update.credit_try, TryStatus::kFailed) &&
         InRange(update.debit_end, EndStatus::kDone) && InRange(update.credit_end, EndStatus::kDone) &&
         static_cast<uint8_t>(update.debit_answer) < static_cast<uint8_t>(ResultCode::kCount_) &&
         static_cast<uint8_t>(update.credit_answer) < static_cast<uint8_t>(ResultCode::kCount_) &&
         update.mask < (1u << 10);
}

}  // namespace

bool IsKnownEventType(uint8_t type) { return type >= 1 && type <= kLastType; }

void EncodeEventPayload(const Event& event, std::string* out) {
  const uint16_t fields = kFieldsByType[static_cast<uint8_t>(event.type)];
  Put(event.time_ms, out);
  if (fields & kTxid) PutShortString(event.txid, out);
  if (fields & kAccount) Put(event.account, out);
  if (fields & kPeer) Put(event.peer, out);
  if (fields & kAmount) Put(event.amount, out);
  if (fields & kCurrency) Put(event.currency.packed(), out);
  if (fields & kDirection) Put(static_cast<uint8_t>(event.direction), out);
  if (fields & kStep) Put(event.step, out);
  if (fields & kMode) Put(static_cast<uint8_t>(event.mode), out);
  if (fields & kText) PutShortString(event.text, out);
  if (fields & kRowUpdate) {
    const RowUpdate& update = event.row_update;
    Put(update.mask, out);
    for (uint8_t byte : {static_cast<uint8_t>(update.decision), static_cast<uint8_t>(update.phase),
                         static_cast<uint8_t>(update.debit_try), static_cast<uint8_t>(update.credit_try),
                         static_cast<uint8_t>(update.debit_end), static_cast<uint8_t>(update.credit_end),
                         static_cast<uint8_t>(update.debit_answer),
                         static_cast<uint8_t>(update.credit_answer), update.out_of_order}) {
      Put(byte, out);
    }
    Put(update.attempts_added, out);
  }
  if (fields & kCutoff) Put(event.cutoff_ms, out);
}

bool DecodeEventPayload(EventType type, std::string_view payload, Event* event,
                        std::string* error) {
  if (!IsKnownEventType(static_cast<uint8_t>(type))) {
    *error = StrCat("unknown event type ", static_cast<int>(type));
    return false;
  }
  const uint16_t fields = kFieldsByType[static_cast<uint8_t>(type)];
  Cursor in(payload);
  Event decoded;
  decoded.type = type;
  decoded.time_ms = in.Get<int64_t>();
  if (fields & kTxid) decoded.txid = in.GetShortString();
  if (fields & kAccount) decoded.account = in.Get<uint64_t>();
  if (fields & kPeer) decoded.peer = in.Get<uint64_t>();
  if (fields & kAmount) decoded.amount = in.Get<int64_t>();
  uint16_t currency = 0;
  if (fields & kCurrency) currency = in.Get<uint16_t>();
  decoded.currency = Currency::FromPacked(currency);
  if (fields & kDirection) decoded.direction = static_cast<Direction>(in.Get<uint8_t>());
  if (fields & kStep) decoded.step = in.Get<uint8_t>();
  if (fields & kMode) decoded.mode = static_cast<Mode>(in.Get<uint8_t>());
  if (fields & kText) decoded.text = in.GetShortString();
  if (fields & kRowUpdate) {
    RowUpdate& update = decoded.row_update;
    update.mask = in.Get<uint16_t>();
    update.decision = static_cast<Decision>(in.Get<uint8_t>());
    update.phase = static_cast<RowPhase>(in.Get<uint8_t>());
    update.debit_try = static_cast<TryStatus>(in.Get<uint8_t>());
    update.credit_try = static_cast<TryStatus>(in.Get<uint8_t>());
    update.debit_end = static_cast<EndStatus>(in.Get<uint8_t>());
    update.credit_end = static_cast<EndStatus>(in.Get<uint8_t>());
    update.debit_answer = static_cast<ResultCode>(in.Get<uint8_t>());
    update.credit_answer = static_cast<ResultCode>(in.Get<uint8_t>());
    update.out_of_order = in.Get<uint8_t>();
    update.attempts_added = in.Get<uint32_t>();
  }
  if (fields & kCutoff) decoded.cutoff_ms = in.Get<int64_t>();
  if (!in.ok()) {
    *error = StrCat(EventTypeName(type), " payload of ", payload.size(), " bytes is too short");
    return false;
  }
  if (in.remaining() != 0) {
    *error = StrCat(EventTypeName(type), " payload has ", in.remaining(), " unexpected trailing bytes");
    return false;
  }
  if ((fields & kTxid) && decoded.txid.empty()) {
    *error = StrCat(EventTypeName(type), " without a transaction id");
    return false;
  }
  if (currency > kLastCurrencyPacked || !InRange(decoded.direction, Direction::kCredit) ||
      !InRange(decoded.mode, Mode::kSaga) || ((fields & kRowUpdate) && !RowUpdateInRange(decoded.row_update))) {
    *error = StrCat(EventTypeName(type), " payload holds a value out of range");
    return false;
  }
  *event = decoded;
  return true;
}

}  // namespace wallet::shard
