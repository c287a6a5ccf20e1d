#include "common/txid_digest.h"

#include <set>
#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace wallet {
namespace {

// Pinned: idempotency state may be persisted by digest, so the digest of a txid
// must never change. These are XXH3-128 (seed 0) values.
TEST(TxidDigest, KnownValuesNeverChange) {
  TxidDigest empty = DigestTxid("");
  EXPECT_EQ(empty.low, 0x6001c324468d497fULL);
  EXPECT_EQ(empty.high, 0x99aa06d3014798d8ULL);
}

TEST(TxidDigest, EqualIdsEqualDigestsAndDistinctIdsDistinctDigests) {
  EXPECT_EQ(DigestTxid("tx-1"), DigestTxid(std::string("tx-1")));
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (int i = 0; i < 100000; ++i) {
    TxidDigest digest = DigestTxid("tx-" + std::to_string(i));
    EXPECT_TRUE(seen.insert({digest.low, digest.high}).second) << i;
  }
}

TEST(TxidDigest, EveryByteMatters) {
  std::string id(64, 'a');
  TxidDigest base = DigestTxid(id);
  for (size_t i = 0; i < id.size(); ++i) {
    std::string changed = id;
    changed[i] = 'b';
    EXPECT_FALSE(DigestTxid(changed) == base) << "byte " << i;
  }
}

}  // namespace
}  // namespace wallet
