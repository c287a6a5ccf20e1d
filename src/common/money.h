// money.h — the value types every component shares: account ids, amounts in minor
// units, currency codes and transaction ids, with strict parsers for their wire
// forms and overflow-checked arithmetic.
//
// Rules (from the product brief): amounts are signed 64-bit integers of the
// currency's minor unit; no floating point; every addition is checked before it
// changes state; currency codes are three upper-case ASCII letters; transaction
// ids are 1..64 visible ASCII bytes.
//
// Example:
//   Amount amount;
//   if (!ParseAmount("1250", &amount)) return ResultCode::kMalformed;
//   Amount sum;
//   if (!CheckedAdd(balance, amount, &sum)) return ResultCode::kOverflow;
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace wallet {

using AccountId = uint64_t;
using Amount = int64_t;  // minor units (cents)

inline constexpr Amount kMaxAmount = std::numeric_limits<Amount>::max();
inline constexpr size_t kMaxTxidBytes = 64;

// A currency code packed into 16 bits: ((c0-'A')*26 + (c1-'A'))*26 + (c2-'A') + 1.
// 0 means "no currency". The packing is part of the event log format: never change it.
class Currency {
 public:
  constexpr Currency() = default;
  static constexpr Currency FromPacked(uint16_t packed) { return Currency(packed); }
  // Returns false unless `text` is exactly three upper-case ASCII letters.
  static bool Parse(std::string_view text, Currency* out);

  constexpr uint16_t packed() const { return packed_; }
  constexpr bool valid() const { return packed_ != 0; }
  std::string ToString() const;  // "USD"; "" when invalid
  void AppendTo(char out[3]) const;

  friend constexpr bool operator==(Currency a, Currency b) { return a.packed_ == b.packed_; }
  friend constexpr bool operator!=(Currency a, Currency b) { return a.packed_ != b.packed_; }

 private:
  constexpr explicit Currency(uint16_t packed) : packed_(packed) {}
  uint16_t packed_ = 0;
};

// Overflow-checked arithmetic: return false (and leave *out untouched) on overflow.
inline bool CheckedAdd(int64_t a, int64_t b, int64_t* out) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}
inline bool CheckedSub(int64_t a, int64_t b, int64_t* out) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}

// Strict decimal parsers: no sign for unsigned values, no '+', no spaces, no leading
// zeros (except "0" itself), no overflow. Return false on anything else.
bool ParseUint64(std::string_view text, uint64_t* out);
bool ParseInt64(std::string_view text, int64_t* out);
// A zero-padded unsigned number as used in file names ("00000000000000000042"):
// 1..20 digits, leading zeros allowed, no overflow.
bool ParseZeroPaddedUint64(std::string_view text, uint64_t* out);
// An amount on the wire: a strictly positive int64 ("0" and negatives are refused).
bool ParseAmount(std::string_view text, Amount* out);
inline bool ParseAccountId(std::string_view text, AccountId* out) { return ParseUint64(text, out); }

// 1..64 bytes, each visible ASCII (0x21..0x7e).
bool IsValidTxid(std::string_view txid);

// Decimal text of a signed 128-bit value (audit totals that may exceed int64).
std::string Int128ToString(__int128 value);

}  // namespace wallet
