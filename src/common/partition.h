// partition.h — the stable account → partition map shared by every component.
//
// An account id maps to one of P partitions (default 1024, fixed for a cluster's
// life) by PartitionOf(). The hash is written out here (the 64-bit finalizer of
// MurmurHash3, "fmix64", then a modulo), so it is the same on every build, machine
// and version. Never replace it with std::hash or absl::Hash: both may change.
// partition_test.cc pins known values; a change that breaks them breaks every
// deployed cluster.
//
// Example:
//   uint32_t p = PartitionOf(account_id, 1024);
//   PartitionSet owned(1024);
//   owned.ParseRanges("0-255,512");   // or owned.AddRange(0, 255)
//   if (!owned.Contains(p)) { /* reply MOVED */ }
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/money.h"

namespace wallet {

inline constexpr uint32_t kDefaultPartitionCount = 1024;
inline constexpr uint32_t kMaxPartitionCount = 1u << 20;

// MurmurHash3's fmix64: a bijection on 64-bit values with full avalanche.
constexpr uint64_t StableMix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

// Partition of an account. partition_count must be in [1, kMaxPartitionCount].
constexpr uint32_t PartitionOf(AccountId account, uint32_t partition_count) {
  return static_cast<uint32_t>(StableMix64(account) % partition_count);
}

// A set of partitions out of partition_count, e.g. the ones a shard owns.
class PartitionSet {
 public:
  explicit PartitionSet(uint32_t partition_count = kDefaultPartitionCount)
      : partition_count_(partition_count), owned_(partition_count, false) {}

  static PartitionSet All(uint32_t partition_count);

  uint32_t partition_count() const { return partition_count_; }
  bool Contains(uint32_t partition) const {
    return partition < partition_count_ && owned_[partition];
  }
  bool ContainsAccount(AccountId account) const {
    return owned_[PartitionOf(account, partition_count_)];
  }
  size_t size() const;
  void Add(uint32_t partition) { owned_.at(partition) = true; }
  void AddRange(uint32_t first, uint32_t last);  // inclusive

  // Parses "all", "" (none) or a comma-separated list of "N" and "A-B" (inclusive).
  // Returns false, with a reason in *error, on syntax errors or out-of-range values;
  // *this is unchanged then.
  bool ParseRanges(std::string_view text, std::string* error);
  // Compact text form, e.g. "0-255,512" (or "all").
  std::string ToString() const;

 private:
  uint32_t partition_count_;
  std::vector<bool> owned_;
};

}  // namespace wallet
