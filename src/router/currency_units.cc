#include "router/currency_units.h"

#include <algorithm>

#include "common/check.h"

namespace wallet::router {

namespace {

struct MinorUnit {
  std::string_view code;
  int exponent;
};

// ISO 4217 list one: active codes with a minor unit (2023), sorted by code so that
// lookups can bisect (checked at compile time below).
// clang-format off
constexpr MinorUnit kMinorUnits[] = {
    {"AED", 2}, {"AFN", 2}, {"ALL", 2}, {"AMD", 2}, {"ANG", 2}, {"AOA", 2}, {"ARS", 2},
    {"AUD", 2}, {"AWG", 2}, {"AZN", 2}, {"BAM", 2}, {"BBD", 2}, {"BDT", 2}, {"BGN", 2},
    {"BHD", 3}, {"BIF", 0}, {"BMD", 2}, {"BND", 2}, {"BOB", 2}, {"BOV", 2}, {"BRL", 2},
    {"BSD", 2}, {"BTN", 2}, {"BWP", 2}, {"BYN", 2}, {"BZD", 2}, {"CAD", 2}, {"CDF", 2},
    {"CHE", 2}, {"CHF", 2}, {"CHW", 2}, {"CLF", 4}, {"CLP", 0}, {"CNY", 2}, {"COP", 2},
    {"COU", 2}, {"CRC", 2}, {"CUC", 2}, {"CUP", 2}, {"CVE", 2}, {"CZK", 2}, {"DJF", 0},
    {"DKK", 2}, {"DOP", 2}, {"DZD", 2}, {"EGP", 2}, {"ERN", 2}, {"ETB", 2}, {"EUR", 2},
    {"FJD", 2}, {"FKP", 2}, {"GBP", 2}, {"GEL", 2}, {"GHS", 2}, {"GIP", 2}, {"GMD", 2},
    {"GNF", 0}, {"GTQ", 2}, {"GYD", 2}, {"HKD", 2}, {"HNL", 2}, {"HTG", 2}, {"HUF", 2},
    {"IDR", 2}, {"ILS", 2}, {"INR", 2}, {"IQD", 3}, {"IRR", 2}, {"ISK", 0}, {"JMD", 2},
    {"JOD", 3}, {"JPY", 0}, {"KES", 2}, {"KGS", 2}, {"KHR", 2}, {"KMF", 0}, {"KPW", 2},
    {"KRW", 0}, {"KWD", 3}, {"KYD", 2}, {"KZT", 2}, {"LAK", 2}, {"LBP", 2}, {"LKR", 2},
    {"LRD", 2}, {"LSL", 2}, {"LYD", 3}, {"MAD", 2}, {"MDL", 2}, {"MGA", 2}, {"MKD", 2},
    {"MMK", 2}, {"MNT", 2}, {"MOP", 2}, {"MRU", 2}, {"MUR", 2}, {"MVR", 2}, {"MWK", 2},
    {"MXN", 2}, {"MXV", 2}, {"MYR", 2}, {"MZN", 2}, {"NAD", 2}, {"NGN", 2}, {"NIO", 2},
    {"NOK", 2}, {"NPR", 2}, {"NZD", 2}, {"OMR", 3}, {"PAB", 2}, {"PEN", 2}, {"PGK", 2},
    {"PHP", 2}, {"PKR", 2}, {"PLN", 2}, {"PYG", 0}, {"QAR", 2}, {"RON", 2}, {"RSD", 2},
    {"RUB", 2}, {"RWF", 0}, {"SAR", 2}, {"SBD", 2}, {"SCR", 2}, {"SDG", 2}, {"SEK", 2},
    {"SGD", 2}, {"SHP", 2}, {"SLE", 2}, {"SLL", 2}, {"SOS", 2}, {"SRD", 2}, {"SSP", 2},
    {"STN", 2}, {"SVC", 2}, {"SYP", 2}, {"SZL", 2}, {"THB", 2}, {"TJS", 2}, {"TMT", 2},
    {"TND", 3}, {"TOP", 2}, {"TRY", 2}, {"TTD", 2}, {"TWD", 2}, {"TZS", 2}, {"UAH", 2},
    {"UGX", 0}, {"USD", 2}, {"USN", 2}, {"UYI", 0}, {"UYU", 2}, {"UYW", 4}, {"UZS", 2},
    {"VED", 2}, {"VES", 2}, {"VND", 0}, {"VUV", 0}, {"WST", 2}, {"XAF", 0}, {"XCD", 2},
    {"XOF", 0}, {"XPF", 0}, {"YER", 2}, {"ZAR", 2}, {"ZMW", 2}, {"ZWL", 2},
};
// clang-format on

// True when the table is strictly sorted by code and every exponent is in range.
constexpr bool TableIsWellFormed() {
  for (size_t i = 0; i < std::size(kMinorUnits); ++i) {
    if (kMinorUnits[i].code.size() != 3) return false;
    if (kMinorUnits[i].exponent < 0 || kMinorUnits[i].exponent > kMaxMinorUnitExponent)
      return false;
    if (i > 0 && !(kMinorUnits[i - 1].code < kMinorUnits[i].code)) return false;
  }
  return true;
}
static_assert(TableIsWellFormed(), "kMinorUnits must be sorted, 3-letter codes, exponents 0..4");

// 10^exponent for exponent 0..kMaxMinorUnitExponent.
constexpr int64_t kPowersOfTen[] = {1, 10, 100, 1000, 10000};
static_assert(std::size(kPowersOfTen) == kMaxMinorUnitExponent + 1);

// ASCII '0'..'9' only (std::isdigit depends on the locale).
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::optional<int> MinorUnitExponent(std::string_view currency) {
  const MinorUnit* end = std::end(kMinorUnits);
  const MinorUnit* it = std::lower_bound(
      std::begin(kMinorUnits), end, currency,
      [](const MinorUnit& entry, std::string_view code) { return entry.code < code; });
  if (it == end || it->code != currency) return std::nullopt;
  return it->exponent;
}

size_t MinorUnitTableSize() { return std::size(kMinorUnits); }

DecimalAmountError ParseDecimalAmount(std::string_view text, int exponent, Amount* minor_out) {
  WALLET_CHECK(exponent >= 0 && exponent <= kMaxMinorUnitExponent, "exponent out of range");
  if (text.empty() || text.size() > kMaxDecimalAmountChars) return DecimalAmountError::kMalformed;

  // Split at the point and check the grammar before any arithmetic.
  size_t point = text.find('.');
  std::string_view integer_digits = text.substr(0, point);
  std::string_view fraction_digits =
      point == std::string_view::npos ? std::string_view() : text.substr(point + 1);
  if (integer_digits.empty()) return DecimalAmountError::kMalformed;  // ".5"
  if (point != std::string_view::npos && fraction_digits.empty()) {
    return DecimalAmountError::kMalformed;  // "1."
  }
  for (char c : integer_digits) {
    if (!IsDigit(c)) return DecimalAmountError::kMalformed;
  }
  for (char c : fraction_digits) {
    if (!IsDigit(c)) return DecimalAmountError::kMalformed;  // also a second '.'
  }
  if (integer_digits.size() > 1 && integer_digits[0] == '0') return DecimalAmountError::kMalformed;
  if (fraction_digits.size() > static_cast<size_t>(exponent)) {
    return DecimalAmountError::kTooManyFractionDigits;
  }

  // minor = integer * 10^exponent + fraction * 10^(exponent - fraction digits),
  // every step checked.
  int64_t minor = 0;
  for (char c : integer_digits) {
    if (__builtin_mul_overflow(minor, int64_t{10}, &minor) ||
        __builtin_add_overflow(minor, int64_t{c - '0'}, &minor)) {
      return DecimalAmountError::kOverflow;
    }
  }
  if (__builtin_mul_overflow(minor, kPowersOfTen[exponent], &minor)) {
    return DecimalAmountError::kOverflow;
  }
  int64_t fraction = 0;
  for (char c : fraction_digits) fraction = fraction * 10 + (c - '0');  // <= 4 digits
  fraction *= kPowersOfTen[exponent - static_cast<int>(fraction_digits.size())];
  if (__builtin_add_overflow(minor, fraction, &minor)) return DecimalAmountError::kOverflow;
  if (minor == 0) return DecimalAmountError::kNotPositive;
  *minor_out = minor;
  return DecimalAmountError::kOk;
}

std::string FormatMinorUnits(int64_t minor, int exponent) {
  WALLET_CHECK(exponent >= 0 && exponent <= kMaxMinorUnitExponent, "exponent out of range");
  // Work on the magnitude as unsigned so that INT64_MIN is exact.
  bool negative = minor < 0;
  uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(minor) : static_cast<uint64_t>(minor);
  auto scale = static_cast<uint64_t>(kPowersOfTen[exponent]);
  std::string text = negative ? "-" : "";
  text += std::to_string(magnitude / scale);
  if (exponent > 0) {
    std::string fraction = std::to_string(magnitude % scale);
    text += '.';
    text.append(static_cast<size_t>(exponent) - fraction.size(), '0');
    text += fraction;
  }
  return text;
}

}  // namespace wallet::router
