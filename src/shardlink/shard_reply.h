// shard_reply.h — one RESP2 reply from a shard, copied out of hiredis into a small
// value the caller owns (hiredis frees its redisReply as soon as the callback
// returns), with a shard error's first word parsed as a wallet::ResultCode.
//
// Shard errors read "-CODE message", e.g.
//   -INSUFFICIENT_FUNDS account 7 has 100 available, needs 250
//   -MOVED 17 unknown partition 17 is not owned by this shard
// so `error_code()` is kInsufficientFunds / kWrongPartition there, and nullopt for a
// first word that is not one of ours (a peer that is not a wallet shard).
//
// Example:
//   ShardReply reply = ShardReply::FromHiredis(*static_cast<redisReply*>(raw));
//   if (reply.is_error() && reply.error_code() == ResultCode::kWrongPartition) {
//     RefreshMapAndRetry(reply.error_message());
//   } else if (reply.type == ShardReply::Type::kArray) {
//     int64_t available = reply.elements[0].integer;
//   }
#pragma once

#include <hiredis/hiredis.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result_code.h"

namespace wallet::shardlink {

struct ShardReply {
  enum class Type : uint8_t { kStatus, kError, kInteger, kBulk, kArray, kNil };

  Type type = Type::kNil;
  std::string text;                  // kStatus, kError (whole line, no '-'), kBulk
  int64_t integer = 0;               // kInteger
  std::vector<ShardReply> elements;  // kArray

  // Deep copy of a hiredis reply (arrays recursively; hiredis caps their nesting).
  static ShardReply FromHiredis(const redisReply& reply);

  bool is_error() const { return type == Type::kError; }
  // kStatus with exactly "OK".
  bool is_ok() const { return type == Type::kStatus && text == "OK"; }
  // kError: the first word ("MOVED"); "" otherwise.
  std::string_view error_word() const;
  // kError: what follows the first word and one space ("" when nothing does).
  std::string_view error_message() const;
  // kError whose first word names a ResultCode; nullopt otherwise.
  std::optional<ResultCode> error_code() const;

  // For logs and test failures: +OK, -MOVED 17 ..., :42, "bytes", (nil), [a, b].
  std::string ToString() const;
};

}  // namespace wallet::shardlink
