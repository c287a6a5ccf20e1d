#include "common/money.h"

namespace wallet {

bool Currency::Parse(std::string_view text, Currency* out) {
  if (text.size() != 3) return false;
  uint32_t packed = 0;
  for (char c : text) {
    if (c < 'A' || c > 'Z') return false;
    packed = packed * 26 + static_cast<uint32_t>(c - 'A');
  }
  *out = Currency(static_cast<uint16_t>(packed + 1));
  return true;
}

void Currency::AppendTo(char out[3]) const {
  uint32_t v = packed_ - 1u;
  out[2] = static_cast<char>('A' + v % 26);
  v /= 26;
  out[1] = static_cast<char>('A' + v % 26);
  v /= 26;
  out[0] = static_cast<char>('A' + v % 26);
}

std::string Currency::ToString() const {
  if (!valid()) return std::string();
  char text[3];
  AppendTo(text);
  return std::string(text, 3);
}

bool ParseUint64(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  if (text.size() > 1 && text[0] == '0') return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (__builtin_mul_overflow(value, uint64_t{10}, &value)) return false;
    if (__builtin_add_overflow(value, digit, &value)) return false;
  }
  *out = value;
  return true;
}

bool ParseZeroPaddedUint64(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  size_t first = 0;
  while (first + 1 < text.size() && text[first] == '0') ++first;
  return ParseUint64(text.substr(first), out);
}

bool ParseInt64(std::string_view text, int64_t* out) {
  bool negative = !text.empty() && text[0] == '-';
  if (negative) text.remove_prefix(1);
  uint64_t magnitude;
  if (!ParseUint64(text, &magnitude)) return false;
  if (negative) {
    if (magnitude == 0) return false;  // "-0"
    if (magnitude > uint64_t{1} << 63) return false;
    *out = static_cast<int64_t>(0 - magnitude);
  } else {
    if (magnitude > static_cast<uint64_t>(kMaxAmount)) return false;
    *out = static_cast<int64_t>(magnitude);
  }
  return true;
}

bool ParseAmount(std::string_view text, Amount* out) {
  int64_t value;
  if (!ParseInt64(text, &value) || value <= 0) return false;
  *out = value;
  return true;
}

bool IsValidTxid(std::string_view txid) {
  if (txid.empty() || txid.size() > kMaxTxidBytes) return false;
  for (char c : txid) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

std::string Int128ToString(__int128 value) {
  if (value == 0) return "0";
  bool negative = value < 0;
  unsigned __int128 magnitude =
      negative ? static_cast<unsigned __int128>(0) - static_cast<unsigned __int128>(value)
               : static_cast<unsigned __int128>(value);
  char buffer[48];
  size_t pos = sizeof(buffer);
  while (magnitude != 0) {
    buffer[--pos] = static_cast<char>('0' + static_cast<int>(magnitude % 10));
    magnitude /= 10;
  }
  if (negative) buffer[--pos] = '-';
  return std::string(buffer + pos, sizeof(buffer) - pos);
}

}  // namespace wallet
