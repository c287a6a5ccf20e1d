// currency_units.h — ISO 4217 minor-unit exponents, and the conversion between
// decimal amount text ("1.00") and integer minor units (100) that the HTTP API uses.
//
// The wallet stores every amount as a signed 64-bit count of the currency's minor
// unit (DESIGN.md, money rules). Callers of the HTTP API write amounts as decimal
// strings in the major unit; the exponent of the currency (USD 2: 1.00 USD = 100
// cents; JPY 0; BHD 3) says how many fraction digits the amount may have.
//
// The table is ISO 4217 list one (active codes with a minor unit, as published in
// 2023), including fund codes such as CLF (4) and UYW (4). Codes without a minor
// unit (precious metals XAU/XAG/XPT/XPD, XDR, XSU, XUA, testing XTS, none XXX) and
// withdrawn codes (HRK, ...) are not in it: an HTTP request in such a currency is
// refused with UNKNOWN_CURRENCY. Accounts in such a currency stay usable through
// the RESP API, which speaks minor units only.
//
// Decimal amount grammar (ParseDecimalAmount), exactly:
//   amount   = integer [ "." fraction ]
//   integer  = "0" / ( %x31-39 *DIGIT )        ; no leading zeros
//   fraction = 1*DIGIT                          ; at most the currency's exponent
// No sign, no '+', no whitespace, no exponent form ("1e2"), no "1." or ".5", at most
// kMaxDecimalAmountChars characters, and the value must be > 0 and fit an int64 of
// minor units. Fewer fraction digits than the exponent are fine ("1.5" USD = 150);
// more are refused even when they are zeros ("1.000" USD), so that no amount is ever
// rounded or silently reinterpreted.
//
// Example:
//   std::optional<int> exponent = MinorUnitExponent("USD");       // 2
//   Amount minor;
//   if (ParseDecimalAmount("12.34", *exponent, &minor) == DecimalAmountError::kOk) {
//     // minor == 1234
//   }
//   std::string text = FormatMinorUnits(1234, 2);                  // "12.34"
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/money.h"

namespace wallet::router {

// The largest exponent in the table (CLF, UYW: 4).
inline constexpr int kMaxMinorUnitExponent = 4;
// Longer amount text is refused before it is looked at digit by digit: the longest
// valid text is 19 digits of int64 plus a '.' (exponent > 0).
inline constexpr size_t kMaxDecimalAmountChars = 32;

// The number of fraction digits of `currency` (an exact, upper-case ISO 4217 code,
// e.g. "USD" -> 2, "JPY" -> 0, "KWD" -> 3); nullopt for a code not in the table
// (including lower-case "usd"). Used by the HTTP server for every amount it reads
// or writes.
std::optional<int> MinorUnitExponent(std::string_view currency);

// The number of currencies in the table (for tests).
size_t MinorUnitTableSize();

// Why ParseDecimalAmount refused a text.
enum class DecimalAmountError : uint8_t {
  kOk = 0,
  kMalformed,              // not the grammar above (sign, spaces, "1e2", "", "01", "1.")
  kNotPositive,            // the value is zero ("0", "0.00")
  kTooManyFractionDigits,  // more fraction digits than the exponent ("1.001" USD)
  kOverflow,               // more than 2^63-1 minor units
};

// Converts decimal text in the major unit to minor units for a currency with
// `exponent` (0..kMaxMinorUnitExponent) fraction digits. On kOk sets *minor_out
// (> 0); on any error leaves it untouched. See the grammar at the top of the file.
DecimalAmountError ParseDecimalAmount(std::string_view text, int exponent, Amount* minor_out);

// The decimal text of `minor` minor units with `exponent` fraction digits, always
// with exactly `exponent` digits after the point and none when exponent is 0:
// (100, 2) -> "1.00", (5, 3) -> "0.005", (-150, 2) -> "-1.50", (42, 0) -> "42".
// Exact for every int64 (no floating point).
std::string FormatMinorUnits(int64_t minor, int exponent);

}  // namespace wallet::router
