// Tests for the event payload codec (event_codec.h): every type round-trips with
// every field it carries at extreme values, the payload sizes follow the grammar,
// and the decoder refuses wrong lengths, out-of-range enum bytes, unknown types and
// missing transaction ids with the exact reason.
#include "shard/event_codec.h"

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/money.h"
#include "common/result_code.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "shard/events.h"

namespace wallet::shard {

// Every field of an event as one line of text, so that two events compare field by
// field and a difference is printed by name. Shared with log_test.cc.
std::string EventToString(const Event& event);

std::string EventToString(const Event& event) {
  const RowUpdate& row = event.row_update;
  return StrCat(EventTypeName(event.type), "(", static_cast<int>(event.type), ") time=", event.time_ms,
                " txid=[", event.txid, "] account=", event.account, " peer=", event.peer,
                " amount=", event.amount, " currency=", event.currency.packed(),
                " direction=", static_cast<int>(event.direction), " step=", static_cast<int>(event.step),
                " mode=", static_cast<int>(event.mode), " text=[", event.text, "] row{mask=", row.mask,
                " decision=", static_cast<int>(row.decision), " phase=", static_cast<int>(row.phase),
                " debit_try=", static_cast<int>(row.debit_try),
                " credit_try=", static_cast<int>(row.credit_try),
                " debit_end=", static_cast<int>(row.debit_end),
                " credit_end=", static_cast<int>(row.credit_end),
                " debit_answer=", static_cast<int>(row.debit_answer),
                " credit_answer=", static_cast<int>(row.credit_answer),
                " out_of_order=", static_cast<int>(row.out_of_order),
                " attempts_added=", row.attempts_added, "} cutoff_ms=", event.cutoff_ms);
}

namespace {

constexpr int64_t kMaxTime = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinTime = std::numeric_limits<int64_t>::min();
constexpr AccountId kMaxAccount = std::numeric_limits<AccountId>::max();
constexpr uint8_t kLastResultCode = static_cast<uint8_t>(ResultCode::kCount_) - 1;
constexpr uint16_t kZzz = 26 * 26 * 26;  // "ZZZ", the largest packed currency

// 64 visible ASCII bytes, all different from their neighbours.
const std::string kLongTxid =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!~";
// 255 bytes covering NUL, 0x7f and 0xfe: the owner text is opaque to the codec.
std::string LongOwner() {
  std::string owner;
  for (int i = 0; i < 255; ++i) owner.push_back(static_cast<char>(i == 254 ? 0xfe : i));
  return owner;
}
const std::string kLongOwner = LongOwner();

// One event of each type with every field that type carries set to a non-zero,
// mostly extreme value (and the fields it does not carry left zero, as the decoder
// leaves them), with the payload size the grammar in event_codec.h gives.
struct FullEvent {
  Event event;
  size_t payload_bytes;
};

Event Base(EventType type, int64_t time_ms, std::string_view txid) {
  Event event;
  event.type = type;
  event.time_ms = time_ms;
  event.txid = txid;
  return event;
}

Event WithMoney(Event event) {
  event.account = kMaxAccount;
  event.peer = kMaxAccount - 1;
  event.amount = kMaxAmount;
  event.currency = Currency::FromPacked(kZzz);
  return event;
}

std::vector<FullEvent> FullEvents() {
  std::vector<FullEvent> all;
  Event open = Base(EventType::kOpen, kMaxTime, "");
  open.account = kMaxAccount;
  open.currency = Currency::FromPacked(kZzz);
  all.push_back({open, 8 + 8 + 2});

  for (EventType type : {EventType::kDeposit, EventType::kWithdraw}) {
    Event event = Base(type, kMinTime, kLongTxid);
    event.account = kMaxAccount;
    event.amount = kMaxAmount;
    all.push_back({event, 8 + 65 + 8 + 8});
  }
  all.push_back({WithMoney(Base(EventType::kTransfer, kMaxTime, kLongTxid)), 35 + 64});

  Event tcc_try = WithMoney(Base(EventType::kTccTry, kMaxTime, kLongTxid));
  tcc_try.direction = Direction::kCredit;
  tcc_try.mode = Mode::kSaga;
  all.push_back({tcc_try, 35 + 64 + 2});

  for (EventType type : {EventType::kTccConfirm, EventType::kTccCancel}) {
    Event event = Base(type, kMaxTime, kLongTxid);
    event.direction = Direction::kCredit;
    all.push_back({event, 8 + 65 + 1});
  }

  Event saga_step = WithMoney(Base(EventType::kSagaStep, kMaxTime, kLongTxid));
  saga_step.direction = Direction::kDebit;
  saga_step.step = 255;
  saga_step.mode = Mode::kSaga;
  all.push_back({saga_step, 35 + 64 + 3});

  Event compensate = Base(EventType::kSagaCompensate, kMaxTime, kLongTxid);
  compensate.step = 255;
  all.push_back({compensate, 8 + 65 + 1});

  Event row_create = WithMoney(Base(EventType::kRowCreate, kMaxTime, kLongTxid));
  row_create.mode = Mode::kTcc;
  all.push_back({row_create, 35 + 64 + 1});

  Event row_update = Base(EventType::kRowUpdate, kMaxTime, kLongTxid);
  RowUpdate& row = row_update.row_update;
  row.mask = (1u << 10) - 1;  // every field
  row.decision = Decision::kCancel;
  row.phase = RowPhase::kAborted;
  row.debit_try = TryStatus::kFailed;
  row.credit_try = TryStatus::kSent;
  row.debit_end = EndStatus::kDone;
  row.credit_end = EndStatus::kSent;
  row.debit_answer = static_cast<ResultCode>(kLastResultCode);
  row.credit_answer = ResultCode::kInsufficientFunds;
  row.out_of_order = 255;
  row.attempts_added = std::numeric_limits<uint32_t>::max();
  all.push_back({row_update, 8 + 65 + 2 + 9 + 4});

  Event claim = Base(EventType::kRowClaim, kMaxTime, kLongTxid);
  claim.amount = kMaxAmount;  // the lease
  claim.text = kLongOwner;
  all.push_back({claim, 8 + 65 + 8 + 256});

  Event collect = Base(EventType::kCollect, kMaxTime, "");
  collect.amount = kMaxAmount;
  collect.cutoff_ms = kMinTime;
  all.push_back({collect, 8 + 8 + 8});
  return all;
}

std::string Encode(const Event& event) {
  std::string payload;
  EncodeEventPayload(event, &payload);
  return payload;
}

// The decoder's error for `payload` of `type` ("" when it decodes).
std::string DecodeError(EventType type, std::string_view payload) {
  Event event;
  std::string error;
  if (DecodeEventPayload(type, payload, &event, &error)) return "";
  EXPECT_FALSE(error.empty());
  return error;
}

TEST(EventCodecTest, EveryTypeRoundTripsWithAllItsFields) {
  const std::vector<FullEvent> all = FullEvents();
  ASSERT_EQ(all.size(), 13u);
  for (size_t i = 0; i < all.size(); ++i) {
    const Event& event = all[i].event;
    SCOPED_TRACE(EventTypeName(event.type));
    EXPECT_EQ(static_cast<size_t>(event.type), i + 1) << "table order";
    EXPECT_TRUE(IsKnownEventType(static_cast<uint8_t>(event.type)));
    std::string payload = "prefix";  // Encode appends
    EncodeEventPayload(event, &payload);
    ASSERT_EQ(payload.substr(0, 6), "prefix");
    payload.erase(0, 6);
    EXPECT_EQ(payload.size(), all[i].payload_bytes);
    EXPECT_LE(payload.size(), kMaxEventPayloadBytes);

    Event back;
    std::string error;
    ASSERT_TRUE(DecodeEventPayload(event.type, payload, &back, &error)) << error;
    EXPECT_EQ(EventToString(back), EventToString(event));
    // The strings are views into the payload, not copies.
    if (!back.txid.empty()) {
      EXPECT_GE(back.txid.data(), payload.data());
      EXPECT_LE(back.txid.data() + back.txid.size(), payload.data() + payload.size());
    }
  }
}

TEST(EventCodecTest, SmallestValuesRoundTrip) {
  // One-byte txid, empty owner, negative time, every enum at its first value.
  Event claim = Base(EventType::kRowClaim, -1, "x");
  claim.amount = 1;
  Event update = Base(EventType::kRowUpdate, 0, "y");
  for (const Event& event : {claim, update}) {
    SCOPED_TRACE(EventTypeName(event.type));
    const std::string payload = Encode(event);
    Event back;
    std::string error;
    ASSERT_TRUE(DecodeEventPayload(event.type, payload, &back, &error)) << error;
    EXPECT_EQ(EventToString(back), EventToString(event));
  }
  EXPECT_EQ(Encode(claim).size(), 8u + 2u + 8u + 1u);
}

TEST(EventCodecTest, FieldsATypeDoesNotCarryAreNotEncoded) {
  // kOpen and kCollect carry no txid (and kOpen no cutoff): one given anyway is
  // neither written nor read.
  for (EventType type : {EventType::kOpen, EventType::kCollect}) {
    SCOPED_TRACE(EventTypeName(type));
    Event event = Base(type, 7, "ignored");
    event.amount = 5;
    event.account = 9;
    event.peer = 11;
    event.text = "ignored";
    event.cutoff_ms = 13;
    const std::string payload = Encode(event);
    EXPECT_EQ(payload.size(), type == EventType::kOpen ? 18u : 24u);
    Event back;
    std::string error;
    ASSERT_TRUE(DecodeEventPayload(type, payload, &back, &error)) << error;
    EXPECT_EQ(back.time_ms, 7);
    EXPECT_TRUE(back.txid.empty());
    EXPECT_TRUE(back.text.empty());
    EXPECT_EQ(back.peer, 0u);
    EXPECT_EQ(back.account, type == EventType::kOpen ? 9u : 0u);
    EXPECT_EQ(back.amount, type == EventType::kCollect ? 5 : 0);
    EXPECT_EQ(back.cutoff_ms, type == EventType::kCollect ? 13 : 0);
  }
}

TEST(EventCodecTest, TxidLessTypesDecodeWithAnEmptyTxid) {
  for (EventType type : {EventType::kOpen, EventType::kCollect}) {
    SCOPED_TRACE(EventTypeName(type));
    EXPECT_EQ(DecodeError(type, Encode(Base(type, 1, ""))), "");
  }
}

TEST(EventCodecTest, PayloadOneByteShortIsRefused) {
  for (const FullEvent& full : FullEvents()) {
    const EventType type = full.event.type;
    SCOPED_TRACE(EventTypeName(type));
    const std::string payload = Encode(full.event);
    const std::string_view short_payload(payload.data(), payload.size() - 1);
    EXPECT_EQ(DecodeError(type, short_payload),
              StrCat(EventTypeName(type), " payload of ", payload.size() - 1, " bytes is too short"));
  }
  EXPECT_EQ(DecodeError(EventType::kCollect, ""), "COLLECT payload of 0 bytes is too short");
}

TEST(EventCodecTest, PayloadOneByteLongIsRefused) {
  for (const FullEvent& full : FullEvents()) {
    const EventType type = full.event.type;
    SCOPED_TRACE(EventTypeName(type));
    const std::string payload = Encode(full.event) + '\0';
    EXPECT_EQ(DecodeError(type, payload), StrCat(EventTypeName(type), " payload has 1 unexpected trailing bytes"));
  }
}

TEST(EventCodecTest, DecodeFailureLeavesTheEventUntouched) {
  Event event = Base(EventType::kDeposit, 123, "keep");
  event.amount = 77;
  const std::string before = EventToString(event);
  std::string error;
  EXPECT_FALSE(DecodeEventPayload(EventType::kDeposit, "short", &event, &error));
  EXPECT_EQ(EventToString(event), before);
}

struct OutOfRangeCase {
  const char* name;
  EventType type;
  void (*spoil)(Event* event);
};

TEST(EventCodecTest, OutOfRangeEnumBytesAreRefused) {
  const OutOfRangeCase cases[] = {
      {"direction 3 on TCC.TRY", EventType::kTccTry,
       [](Event* e) { e->direction = static_cast<Direction>(3); }},
      {"direction 3 on TCC.CONFIRM", EventType::kTccConfirm,
       [](Event* e) { e->direction = static_cast<Direction>(3); }},
      {"direction 255 on SAGA.STEP", EventType::kSagaStep,
       [](Event* e) { e->direction = static_cast<Direction>(255); }},
      {"mode 3 on TCC.TRY", EventType::kTccTry, [](Event* e) { e->mode = static_cast<Mode>(3); }},
      {"mode 3 on ROW.CREATE", EventType::kRowCreate, [](Event* e) { e->mode = static_cast<Mode>(3); }},
      {"mode 3 on SAGA.STEP", EventType::kSagaStep, [](Event* e) { e->mode = static_cast<Mode>(3); }},
      {"currency 17577 on OPEN", EventType::kOpen,
       [](Event* e) { e->currency = Currency::FromPacked(kZzz + 1); }},
      {"currency 65535 on TRANSFER", EventType::kTransfer,
       [](Event* e) { e->currency = Currency::FromPacked(0xffff); }},
      {"phase 5", EventType::kRowUpdate, [](Event* e) { e->row_update.phase = static_cast<RowPhase>(5); }},
      {"decision 3", EventType::kRowUpdate,
       [](Event* e) { e->row_update.decision = static_cast<Decision>(3); }},
      {"debit_try 4", EventType::kRowUpdate,
       [](Event* e) { e->row_update.debit_try = static_cast<TryStatus>(4); }},
      {"credit_try 4", EventType::kRowUpdate,
       [](Event* e) { e->row_update.credit_try = static_cast<TryStatus>(4); }},
      {"debit_end 3", EventType::kRowUpdate,
       [](Event* e) { e->row_update.debit_end = static_cast<EndStatus>(3); }},
      {"credit_end 3", EventType::kRowUpdate,
       [](Event* e) { e->row_update.credit_end = static_cast<EndStatus>(3); }},
      {"debit_answer kCount_", EventType::kRowUpdate,
       [](Event* e) { e->row_update.debit_answer = ResultCode::kCount_; }},
      {"credit_answer kCount_", EventType::kRowUpdate,
       [](Event* e) { e->row_update.credit_answer = ResultCode::kCount_; }},
      {"credit_answer 255", EventType::kRowUpdate,
       [](Event* e) { e->row_update.credit_answer = static_cast<ResultCode>(255); }},
      {"mask bit 10", EventType::kRowUpdate, [](Event* e) { e->row_update.mask = 1u << 10; }},
  };
  const std::vector<FullEvent> all = FullEvents();
  for (const OutOfRangeCase& c : cases) {
    SCOPED_TRACE(c.name);
    Event event = all[static_cast<size_t>(c.type) - 1].event;
    ASSERT_EQ(event.type, c.type);
    c.spoil(&event);
    EXPECT_EQ(DecodeError(c.type, Encode(event)), StrCat(EventTypeName(c.type), " payload holds a value out of range"));
  }
}

TEST(EventCodecTest, UnknownTypesAreRefused) {
  const std::string payload = Encode(FullEvents()[3].event);  // a valid transfer
  for (int type : {0, 14, 255}) {
    SCOPED_TRACE(type);
    EXPECT_FALSE(IsKnownEventType(static_cast<uint8_t>(type)));
    EXPECT_EQ(DecodeError(static_cast<EventType>(type), payload), StrCat("unknown event type ", type));
  }
  for (int type = 1; type <= 13; ++type) EXPECT_TRUE(IsKnownEventType(static_cast<uint8_t>(type))) << type;
}

TEST(EventCodecTest, EmptyTxidIsRefusedOnEveryTxidType) {
  int txid_types = 0;
  for (const FullEvent& full : FullEvents()) {
    const EventType type = full.event.type;
    if (type == EventType::kOpen || type == EventType::kCollect) continue;
    SCOPED_TRACE(EventTypeName(type));
    ++txid_types;
    Event event = full.event;
    event.txid = "";
    const std::string payload = Encode(event);
    EXPECT_EQ(payload.size(), full.payload_bytes - kMaxTxidBytes);
    EXPECT_EQ(DecodeError(type, payload), StrCat(EventTypeName(type), " without a transaction id"));
  }
  EXPECT_EQ(txid_types, 11);
}

}  // namespace
}  // namespace wallet::shard
