// event_codec.h — the binary form of an Event, as stored in the event log.
//
// The payload of a log record (see log_writer.cc for the record around it). The
// event's type travels in the record header, so the payload holds only the fields
// that type uses (the table in events.h), in this fixed order, little-endian:
//
//   payload   := time_ms:i64 [txid] [account:u64] [peer:u64] [amount:i64]
//                [currency:u16] [direction:u8] [step:u8] [mode:u8] [text] [row_update]
//                [cutoff_ms:i64]
//   txid      := length:u8 (1..64) bytes
//   text      := length:u8 (0..255) bytes
//   row_update:= mask:u16 decision:u8 phase:u8 debit_try:u8 credit_try:u8
//                debit_end:u8 credit_end:u8 debit_answer:u8 credit_answer:u8
//                out_of_order:u8 attempts_added:u32
//
// A transfer is 8 + (1 + txid) + 8 + 8 + 8 + 2 = 35 bytes plus its txid. Decoding
// checks lengths and every enum's range, so a payload that passed its checksum but
// was written by a different build cannot crash the engine's Apply.
//
// Example:
//   std::string payload;
//   EncodeEventPayload(event, &payload);
//   Event back;
//   std::string error;
//   if (!DecodeEventPayload(event.type, payload, &back, &error)) ...;  // back.txid views payload
#pragma once

#include <string>
#include <string_view>

#include "shard/events.h"

namespace wallet::shard {

// Largest payload any event can have (txid 64 and owner 255 bytes included).
inline constexpr size_t kMaxEventPayloadBytes = 8 + 65 + 8 + 8 + 8 + 2 + 3 + 256 + 15 + 8;

// Appends the payload of `event` (all fields its type uses, not the type) to *out.
void EncodeEventPayload(const Event& event, std::string* out);

// Decodes a payload written by EncodeEventPayload for an event of `type` into *event.
// event->txid and event->text point into `payload`, which must outlive their use.
// False (and *error says why) for an unknown type, a wrong length or a value out of
// range.
bool DecodeEventPayload(EventType type, std::string_view payload, Event* event,
                        std::string* error);

// True for the types this build knows (1..kCollect).
bool IsKnownEventType(uint8_t type);

}  // namespace wallet::shard
