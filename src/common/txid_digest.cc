#include "common/txid_digest.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace wallet {

TxidDigest DigestTxid(std::string_view txid) {
  XXH128_hash_t hash = XXH3_128bits(txid.data(), txid.size());
  return TxidDigest{hash.low64, hash.high64};
}

}  // namespace wallet
