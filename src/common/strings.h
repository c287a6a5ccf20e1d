// strings.h — bridges std::string_view and Debian's Abseil.
//
// Debian 12 builds Abseil in C++14 mode, so absl::string_view is Abseil's own type,
// not std::string_view, and Abseil's string functions and transparent string
// hashing do not accept std::string_view. The project uses std::string_view
// everywhere; these helpers make the two meet:
//
//   std::string message = StrCat("account ", id, " txid ", txid_view);  // any mix
//   absl::flat_hash_map<std::string, Row, StringHash, StringEq> rows;
//   rows.find(txid_view);                                   // no temporary string
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace wallet {

inline absl::string_view ToAbsl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}
inline std::string_view FromAbsl(absl::string_view text) {
  return std::string_view(text.data(), text.size());
}

namespace strings_internal {
inline absl::string_view Adapt(std::string_view text) { return ToAbsl(text); }
template <typename T>
const T& Adapt(const T& value) {
  return value;
}
}  // namespace strings_internal

// absl::StrCat that also takes std::string_view arguments.
template <typename... Args>
std::string StrCat(const Args&... args) {
  return absl::StrCat(strings_internal::Adapt(args)...);
}
template <typename... Args>
void StrAppend(std::string* out, const Args&... args) {
  absl::StrAppend(out, strings_internal::Adapt(args)...);
}

// ASCII case-insensitive equality.
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Equality whose time does not depend on where two secrets of equal length differ
// (passwords). Strings of different lengths are unequal at once.
inline bool ConstantTimeEquals(std::string_view secret, std::string_view candidate) {
  if (secret.size() != candidate.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < secret.size(); ++i) {
    difference |= static_cast<unsigned char>(secret[i] ^ candidate[i]);
  }
  return difference == 0;
}

// Transparent hash and equality for std::string keys looked up by std::string_view.
// Hashes through absl::string_view: Abseil's own string hash. (absl::Hash of a
// std::string_view falls back to std::hash in this build, which is much slower.)
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const {
    return absl::Hash<absl::string_view>{}(ToAbsl(text));
  }
};
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

}  // namespace wallet
