// Tests for money.h: currency codes, strict decimal parsers, checked arithmetic,
// transaction ids and 128-bit decimal text.
#include "common/money.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "gtest/gtest.h"

namespace wallet {
namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr uint64_t kUint64Max = std::numeric_limits<uint64_t>::max();

// --- Currency ----------------------------------------------------------------------

TEST(CurrencyTest, ParsesThreeUpperCaseLetters) {
  Currency currency;
  ASSERT_TRUE(Currency::Parse("USD", &currency));
  EXPECT_TRUE(currency.valid());
  EXPECT_EQ(currency.ToString(), "USD");
}

TEST(CurrencyTest, RejectsMalformedCodes) {
  for (const char* text : {"usd", "Usd", "US", "USDX", "", "U5D", "123", "US ", "\0US"}) {
    Currency currency = Currency::FromPacked(42);
    EXPECT_FALSE(Currency::Parse(text, &currency)) << text;
    EXPECT_EQ(currency.packed(), 42) << "output changed for " << text;
  }
}

// The packing is part of the event log format: these values must never change.
TEST(CurrencyTest, PackedValuesAreStable) {
  struct Case {
    const char* code;
    uint16_t packed;
  };
  for (const Case& c :
       {Case{"AAA", 1}, Case{"AAB", 2}, Case{"ABA", 27}, Case{"USD", 13992}, Case{"ZZZ", 17576}}) {
    Currency currency;
    ASSERT_TRUE(Currency::Parse(c.code, &currency)) << c.code;
    EXPECT_EQ(currency.packed(), c.packed) << c.code;
    EXPECT_EQ(Currency::FromPacked(c.packed).ToString(), c.code);
  }
}

TEST(CurrencyTest, RoundTripsThroughToString) {
  for (const char* code : {"AAA", "USD", "EUR", "ZZZ"}) {
    Currency currency;
    ASSERT_TRUE(Currency::Parse(code, &currency));
    Currency again;
    ASSERT_TRUE(Currency::Parse(currency.ToString(), &again));
    EXPECT_EQ(again, currency);
    char text[3];
    currency.AppendTo(text);
    EXPECT_EQ(std::string(text, 3), code);
  }
}

TEST(CurrencyTest, DefaultIsInvalid) {
  Currency none;
  EXPECT_FALSE(none.valid());
  EXPECT_EQ(none.packed(), 0);
  EXPECT_EQ(none.ToString(), "");
  Currency usd;
  ASSERT_TRUE(Currency::Parse("USD", &usd));
  EXPECT_NE(none, usd);
}

// --- Strict decimal parsers --------------------------------------------------------

struct DecimalCase {
  const char* text;
  std::optional<uint64_t> as_uint64;
  std::optional<int64_t> as_int64;
  std::optional<int64_t> as_amount;
};

const DecimalCase kDecimalCases[] = {
    {"0", 0, 0, std::nullopt},
    {"1", 1, 1, 1},
    {"1250", 1250, 1250, 1250},
    {"-1", std::nullopt, -1, std::nullopt},
    {"-0", std::nullopt, std::nullopt, std::nullopt},
    {"00", std::nullopt, std::nullopt, std::nullopt},
    {"007", std::nullopt, std::nullopt, std::nullopt},
    {"-07", std::nullopt, std::nullopt, std::nullopt},
    {"+1", std::nullopt, std::nullopt, std::nullopt},
    {" 1", std::nullopt, std::nullopt, std::nullopt},
    {"1 ", std::nullopt, std::nullopt, std::nullopt},
    {"1a", std::nullopt, std::nullopt, std::nullopt},
    {"1.5", std::nullopt, std::nullopt, std::nullopt},
    {"", std::nullopt, std::nullopt, std::nullopt},
    {"-", std::nullopt, std::nullopt, std::nullopt},
    {"--1", std::nullopt, std::nullopt, std::nullopt},
    {"9223372036854775807", 9223372036854775807u, kInt64Max, kInt64Max},
    {"9223372036854775808", 9223372036854775808u, std::nullopt, std::nullopt},
    {"-9223372036854775808", std::nullopt, kInt64Min, std::nullopt},
    {"-9223372036854775809", std::nullopt, std::nullopt, std::nullopt},
    {"18446744073709551615", kUint64Max, std::nullopt, std::nullopt},
    {"18446744073709551616", std::nullopt, std::nullopt, std::nullopt},
    {"99999999999999999999", std::nullopt, std::nullopt, std::nullopt},
    {"100000000000000000000", std::nullopt, std::nullopt, std::nullopt},  // 21 digits
};

TEST(ParseDecimalTest, ParseUint64) {
  for (const DecimalCase& c : kDecimalCases) {
    uint64_t value = 12345;
    EXPECT_EQ(ParseUint64(c.text, &value), c.as_uint64.has_value()) << '"' << c.text << '"';
    EXPECT_EQ(value, c.as_uint64.value_or(12345)) << '"' << c.text << '"';
  }
}

TEST(ParseDecimalTest, ParseInt64) {
  for (const DecimalCase& c : kDecimalCases) {
    int64_t value = 12345;
    EXPECT_EQ(ParseInt64(c.text, &value), c.as_int64.has_value()) << '"' << c.text << '"';
    EXPECT_EQ(value, c.as_int64.value_or(12345)) << '"' << c.text << '"';
  }
}

TEST(ParseDecimalTest, ParseAmountRefusesZeroAndNegatives) {
  for (const DecimalCase& c : kDecimalCases) {
    Amount value = 12345;
    EXPECT_EQ(ParseAmount(c.text, &value), c.as_amount.has_value()) << '"' << c.text << '"';
    EXPECT_EQ(value, c.as_amount.value_or(12345)) << '"' << c.text << '"';
  }
}

TEST(ParseDecimalTest, ParseZeroPaddedUint64AcceptsLeadingZerosOnly) {
  uint64_t value = 0;
  EXPECT_TRUE(ParseZeroPaddedUint64("00000000000000000042", &value));
  EXPECT_EQ(value, 42u);
  EXPECT_TRUE(ParseZeroPaddedUint64("00000000000000000000", &value));
  EXPECT_EQ(value, 0u);
  EXPECT_TRUE(ParseZeroPaddedUint64("18446744073709551615", &value));
  EXPECT_EQ(value, UINT64_MAX);
  EXPECT_FALSE(ParseZeroPaddedUint64("18446744073709551616", &value));
  EXPECT_FALSE(ParseZeroPaddedUint64("000000000000000000001", &value));  // 21 digits
  EXPECT_FALSE(ParseZeroPaddedUint64("", &value));
  EXPECT_FALSE(ParseZeroPaddedUint64("00x1", &value));
  EXPECT_FALSE(ParseZeroPaddedUint64("-001", &value));
}

TEST(ParseDecimalTest, ParseAccountIdIsParseUint64) {
  AccountId id = 0;
  EXPECT_TRUE(ParseAccountId("18446744073709551615", &id));
  EXPECT_EQ(id, kUint64Max);
  EXPECT_FALSE(ParseAccountId("-1", &id));
}

// --- Checked arithmetic ------------------------------------------------------------

TEST(CheckedArithmeticTest, AddAtInt64Edges) {
  int64_t out = 7;
  EXPECT_TRUE(CheckedAdd(kInt64Max - 1, 1, &out));
  EXPECT_EQ(out, kInt64Max);
  EXPECT_TRUE(CheckedAdd(kInt64Max, kInt64Min, &out));
  EXPECT_EQ(out, -1);
  EXPECT_TRUE(CheckedAdd(kInt64Min + 1, -1, &out));
  EXPECT_EQ(out, kInt64Min);

  out = 7;
  EXPECT_FALSE(CheckedAdd(kInt64Max, 1, &out));
  EXPECT_FALSE(CheckedAdd(kInt64Max, kInt64Max, &out));
  EXPECT_FALSE(CheckedAdd(kInt64Min, -1, &out));
  EXPECT_FALSE(CheckedAdd(kInt64Min, kInt64Min, &out));
  EXPECT_EQ(out, 7) << "overflow must leave the output untouched";
}

TEST(CheckedArithmeticTest, SubAtInt64Edges) {
  int64_t out = 7;
  EXPECT_TRUE(CheckedSub(kInt64Min + 1, 1, &out));
  EXPECT_EQ(out, kInt64Min);
  EXPECT_TRUE(CheckedSub(-1, kInt64Min, &out));
  EXPECT_EQ(out, kInt64Max);
  EXPECT_TRUE(CheckedSub(kInt64Max, kInt64Max, &out));
  EXPECT_EQ(out, 0);

  out = 7;
  EXPECT_FALSE(CheckedSub(kInt64Min, 1, &out));
  EXPECT_FALSE(CheckedSub(0, kInt64Min, &out));
  EXPECT_FALSE(CheckedSub(kInt64Max, -1, &out));
  EXPECT_FALSE(CheckedSub(kInt64Max, kInt64Min, &out));
  EXPECT_EQ(out, 7) << "overflow must leave the output untouched";
}

// --- Transaction ids ---------------------------------------------------------------

TEST(TxidTest, Validity) {
  struct Case {
    std::string txid;
    bool valid;
  };
  const Case cases[] = {
      {"", false},
      {"t", true},
      {"tx-1:abc/DEF", true},
      {"!~", true},  // both ends of visible ASCII
      {std::string(64, 'a'), true},
      {std::string(65, 'a'), false},
      {"tx 1", false},
      {"tx\t1", false},
      {"tx\x01", false},
      {std::string("tx\0", 3), false},
      {"tx\x7f", false},
      {"tx\x80", false},
      {"tx\xff", false},
  };
  for (const Case& c : cases) EXPECT_EQ(IsValidTxid(c.txid), c.valid) << '"' << c.txid << '"';
}

// --- Int128ToString ----------------------------------------------------------------

TEST(Int128ToStringTest, Values) {
  const __int128 int128_max = static_cast<__int128>(~static_cast<unsigned __int128>(0) >> 1);
  const __int128 int128_min = -int128_max - 1;
  EXPECT_EQ(Int128ToString(0), "0");
  EXPECT_EQ(Int128ToString(7), "7");
  EXPECT_EQ(Int128ToString(-1), "-1");
  EXPECT_EQ(Int128ToString(-1250), "-1250");
  EXPECT_EQ(Int128ToString(static_cast<__int128>(kInt64Max) + 1), "9223372036854775808");
  EXPECT_EQ(Int128ToString(static_cast<__int128>(kInt64Min) * 2), "-18446744073709551616");
  EXPECT_EQ(Int128ToString(static_cast<__int128>(kInt64Max) * 1000), "9223372036854775807000");
  EXPECT_EQ(Int128ToString(int128_max), "170141183460469231731687303715884105727");
  EXPECT_EQ(Int128ToString(int128_min), "-170141183460469231731687303715884105728");
}

}  // namespace
}  // namespace wallet
