#include "router/currency_units.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace wallet::router {
namespace {

TEST(MinorUnitExponentTest, KnownCurrencies) {
  struct Case {
    const char* code;
    int exponent;
  };
  const Case cases[] = {
      {"USD", 2}, {"EUR", 2}, {"GBP", 2}, {"CHF", 2}, {"JPY", 0}, {"KRW", 0}, {"VND", 0},
      {"ISK", 0}, {"CLP", 0}, {"XOF", 0}, {"BHD", 3}, {"KWD", 3}, {"JOD", 3}, {"OMR", 3},
      {"TND", 3}, {"IQD", 3}, {"LYD", 3}, {"CLF", 4}, {"UYW", 4}, {"AED", 2}, {"ZWL", 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.code);
    ASSERT_TRUE(MinorUnitExponent(c.code).has_value());
    EXPECT_EQ(*MinorUnitExponent(c.code), c.exponent);
  }
}

TEST(MinorUnitExponentTest, UnknownCodesAreRefused) {
  // Lower case, wrong length, metals and other codes without a minor unit, withdrawn.
  for (const char* code : {"", "usd", "Usd", "US", "USDX", "XAU", "XAG", "XDR", "XTS", "XXX", "HRK",
                           "ZZZ", "AAA", "ZZ"}) {
    SCOPED_TRACE(code);
    EXPECT_FALSE(MinorUnitExponent(code).has_value());
  }
  EXPECT_GT(MinorUnitTableSize(), 150u);
}

struct ParseCase {
  const char* text;
  int exponent;
  DecimalAmountError error;
  Amount minor;  // when error == kOk
};

TEST(ParseDecimalAmountTest, Table) {
  const ParseCase cases[] = {
      // Good amounts.
      {"1.00", 2, DecimalAmountError::kOk, 100},
      {"1", 2, DecimalAmountError::kOk, 100},
      {"1.5", 2, DecimalAmountError::kOk, 150},
      {"0.01", 2, DecimalAmountError::kOk, 1},
      {"0.1", 2, DecimalAmountError::kOk, 10},
      {"12345.67", 2, DecimalAmountError::kOk, 1234567},
      {"100", 0, DecimalAmountError::kOk, 100},
      {"1.234", 3, DecimalAmountError::kOk, 1234},
      {"0.001", 3, DecimalAmountError::kOk, 1},
      {"0.0001", 4, DecimalAmountError::kOk, 1},
      {"92233720368547758.07", 2, DecimalAmountError::kOk, std::numeric_limits<int64_t>::max()},
      {"9223372036854775807", 0, DecimalAmountError::kOk, std::numeric_limits<int64_t>::max()},
      // Too many fraction digits, even zeros.
      {"1.001", 2, DecimalAmountError::kTooManyFractionDigits, 0},
      {"1.000", 2, DecimalAmountError::kTooManyFractionDigits, 0},
      {"1.5", 0, DecimalAmountError::kTooManyFractionDigits, 0},
      {"100.0", 0, DecimalAmountError::kTooManyFractionDigits, 0},
      {"0.00001", 4, DecimalAmountError::kTooManyFractionDigits, 0},
      // Zero.
      {"0", 2, DecimalAmountError::kNotPositive, 0},
      {"0.00", 2, DecimalAmountError::kNotPositive, 0},
      {"0", 0, DecimalAmountError::kNotPositive, 0},
      // Overflow of int64 minor units.
      {"92233720368547758.08", 2, DecimalAmountError::kOverflow, 0},
      {"92233720368547759", 2, DecimalAmountError::kOverflow, 0},
      {"9223372036854775808", 0, DecimalAmountError::kOverflow, 0},
      {"99999999999999999999", 0, DecimalAmountError::kOverflow, 0},
      // Malformed.
      {"", 2, DecimalAmountError::kMalformed, 0},
      {"-1", 2, DecimalAmountError::kMalformed, 0},
      {"-1.00", 2, DecimalAmountError::kMalformed, 0},
      {"+1.00", 2, DecimalAmountError::kMalformed, 0},
      {" 1.00", 2, DecimalAmountError::kMalformed, 0},
      {"1.00 ", 2, DecimalAmountError::kMalformed, 0},
      {"1 .00", 2, DecimalAmountError::kMalformed, 0},
      {"1e2", 2, DecimalAmountError::kMalformed, 0},
      {"1E2", 0, DecimalAmountError::kMalformed, 0},
      {"1.0e1", 2, DecimalAmountError::kMalformed, 0},
      {"1.", 2, DecimalAmountError::kMalformed, 0},
      {".5", 2, DecimalAmountError::kMalformed, 0},
      {".", 2, DecimalAmountError::kMalformed, 0},
      {"1..0", 2, DecimalAmountError::kMalformed, 0},
      {"1.0.0", 2, DecimalAmountError::kMalformed, 0},
      {"01", 2, DecimalAmountError::kMalformed, 0},
      {"00.50", 2, DecimalAmountError::kMalformed, 0},
      {"1,00", 2, DecimalAmountError::kMalformed, 0},
      {"0x10", 0, DecimalAmountError::kMalformed, 0},
      {"NaN", 2, DecimalAmountError::kMalformed, 0},
      {"Infinity", 2, DecimalAmountError::kMalformed, 0},
      {"\xd9\xa1", 0, DecimalAmountError::kMalformed, 0},  // ARABIC-INDIC DIGIT ONE
      {"1\n", 0, DecimalAmountError::kMalformed, 0},
      {"000000000000000000000000000000001", 0, DecimalAmountError::kMalformed, 0},  // > 32 chars
  };
  for (const ParseCase& c : cases) {
    SCOPED_TRACE(std::string("\"") + c.text + "\" exponent " + std::to_string(c.exponent));
    Amount minor = -7;
    EXPECT_EQ(ParseDecimalAmount(c.text, c.exponent, &minor), c.error);
    EXPECT_EQ(minor, c.error == DecimalAmountError::kOk ? c.minor : -7);
  }
}

TEST(FormatMinorUnitsTest, Table) {
  struct Case {
    int64_t minor;
    int exponent;
    const char* text;
  };
  const Case cases[] = {
      {100, 2, "1.00"},
      {0, 2, "0.00"},
      {1, 2, "0.01"},
      {150, 2, "1.50"},
      {-150, 2, "-1.50"},
      {-1, 2, "-0.01"},
      {42, 0, "42"},
      {-42, 0, "-42"},
      {5, 3, "0.005"},
      {1234, 3, "1.234"},
      {1, 4, "0.0001"},
      {std::numeric_limits<int64_t>::max(), 2, "92233720368547758.07"},
      {std::numeric_limits<int64_t>::min(), 2, "-92233720368547758.08"},
      {std::numeric_limits<int64_t>::min(), 0, "-9223372036854775808"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(FormatMinorUnits(c.minor, c.exponent), c.text);
  }
}

// Every positive amount formatted and parsed back comes out the same, for every
// exponent in the table.
TEST(CurrencyUnitsTest, RoundTrip) {
  const int64_t amounts[] = {1,   9,     10,      99,        100,
                             101, 12345, 1000000, 999999999, std::numeric_limits<int64_t>::max()};
  for (int exponent = 0; exponent <= kMaxMinorUnitExponent; ++exponent) {
    for (int64_t minor : amounts) {
      std::string text = FormatMinorUnits(minor, exponent);
      SCOPED_TRACE(text);
      Amount parsed = 0;
      ASSERT_EQ(ParseDecimalAmount(text, exponent, &parsed), DecimalAmountError::kOk);
      EXPECT_EQ(parsed, minor);
    }
  }
}

}  // namespace
}  // namespace wallet::router
