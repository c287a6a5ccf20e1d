// txid_digest.h — a fixed-size, stable digest of a transaction id.
//
// Idempotency records are looked up by the 128-bit XXH3 digest of their txid
// instead of the txid string: 16 bytes inline, no allocation, cheap to compare and
// already a uniform hash (no rehashing of strings when a table grows). XXH3-128's
// output is frozen by the xxHash project since 0.8.0, so a digest means the same on
// every build, machine and version (it may be persisted in snapshots).
//
// Two different txids share a digest with probability about n^2 / 2^129 for n ids
// (under 1e-20 for a billion ids in one window); even then a request is only treated
// as a replay if every argument also matches, and otherwise refused as TXID_REUSED.
//
// Example:
//   TxidDigest digest = DigestTxid("tx-42");
//   absl::flat_hash_map<TxidDigest, Record, TxidDigestHash> records;
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace wallet {

struct TxidDigest {
  uint64_t low = 0;
  uint64_t high = 0;
  friend bool operator==(const TxidDigest& a, const TxidDigest& b) {
    return a.low == b.low && a.high == b.high;
  }
};

TxidDigest DigestTxid(std::string_view txid);

// The digest is already uniformly distributed: its low half is the table hash.
struct TxidDigestHash {
  size_t operator()(const TxidDigest& digest) const { return static_cast<size_t>(digest.low); }
};

}  // namespace wallet
