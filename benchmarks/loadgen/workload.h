// workload.h — what the load generator sends: which accounts, how much, which mode.
//
// Accounts are ids first_account .. first_account + accounts − 1 (default 1 .. N);
// below, an account's "offset" is id − first_account. Skew (which accounts carry the
// traffic), applied to both ends of a transfer:
//   uniform  every account alike;
//   zipf     offset k drawn with probability ∝ 1 / (k + 1)^theta (rank 0 = id
//            first_account is the hottest); any theta > 0 (0.99 as in YCSB);
//   hot      a share `hot_share` of draws go uniformly to the hot set (the first
//            `hot_accounts` ids), the rest uniformly to the other accounts.
// Ids are hashed to partitions (PartitionOf), so hot ids are spread over shards.
//
// Cross-shard share: with a ShardLayout (each account's shard, learnt from the
// partition map), `cross_shard_share` of transfers go between accounts on different
// shards and the rest within one shard: the destination is drawn from the skewed
// distribution until it falls on the wanted side (up to 64 draws; then uniformly from
// that side), so both ends keep the skew. Without a layout (cross_shard_share < 0)
// both ends are drawn independently and the share is whatever the layout makes it.
//
// Mode: cross-shard transfers (or every transfer, when the layout is unknown) get
// MODE tcc with probability tcc_share and MODE saga otherwise; tcc_share < 0 sends
// no MODE (the router's --default_transfer_mode). A batch draws one mode for all its
// transfers (MODE is per TRANSFER.BATCH command).
//
// Deterministic for a given seed (Rng is xoshiro256**).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace wallet::loadgen {

// xoshiro256** (Blackman and Vigna), seeded through splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, bound), bound >= 1 (Lemire's multiply-shift; bias < 2^-64 * bound).
  uint64_t Below(uint64_t bound) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * bound) >> 64);
  }
  // Uniform in [0, 1).
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_[4];
};

// Zipf over ranks 0 .. n−1: P(k) ∝ 1 / (k + 1)^theta, theta > 0, by rejection-
// inversion (Hörmann and Derflinger 1996): O(1) per draw, no table, any n.
class ZipfSampler {
 public:
  ZipfSampler(uint64_t n, double theta);
  uint64_t Sample(Rng& rng) const;

 private:
  double H(double x) const;              // x^-theta
  double HIntegral(double x) const;      // ∫ x^-theta, shifted so that it suits the method
  double HIntegralInverse(double x) const;

  uint64_t n_;
  double theta_;
  double h_integral_x1_;
  double h_integral_n_;
  double s_;
};

enum class Skew : uint8_t { kUniform, kZipf, kHot };
enum class Mode : uint8_t { kDefault, kTcc, kSaga };
const char* SkewName(Skew skew);
const char* ModeName(Mode mode);

struct WorkloadOptions {
  uint64_t first_account = 1;
  uint64_t accounts = 100'000;  // >= 2
  Skew skew = Skew::kUniform;
  double zipf_theta = 0.99;
  double hot_share = 0.9;
  uint64_t hot_accounts = 100;   // 1 .. accounts − 1
  double cross_shard_share = -1;  // < 0: not controlled; else 0..1 (needs a layout)
  double tcc_share = -1;          // < 0: no MODE; else 0..1
  int64_t amount_min = 1;
  int64_t amount_max = 100;
};

// Each account's shard (as an index 0 .. shard_count−1), by offset.
class ShardLayout {
 public:
  // shard_of[offset] < shard_count for every account.
  ShardLayout(std::vector<uint16_t> shard_of, uint32_t shard_count);
  uint32_t shard_count() const { return shard_count_; }
  uint16_t ShardOf(uint64_t offset) const { return shard_of_[offset]; }
  const std::vector<uint32_t>& Members(uint32_t shard) const { return members_[shard]; }
  size_t accounts() const { return shard_of_.size(); }

 private:
  std::vector<uint16_t> shard_of_;
  uint32_t shard_count_;
  std::vector<std::vector<uint32_t>> members_;  // offsets per shard
};

struct Transfer {
  uint64_t from = 0;  // account ids
  uint64_t to = 0;
  int64_t amount = 0;
  Mode mode = Mode::kDefault;
  int8_t cross = -1;  // 1 cross-shard, 0 same shard, −1 unknown (no layout)
};

class Workload {
 public:
  // Empty string when the options (and layout) are usable, else what is wrong.
  static std::string Validate(const WorkloadOptions& options, const ShardLayout* layout);

  // `layout` may be null (then cross_shard_share must be < 0). Validate first.
  Workload(const WorkloadOptions& options, std::shared_ptr<const ShardLayout> layout);

  // One transfer; its mode drawn for it alone.
  Transfer Next(Rng& rng) const;
  // `count` transfers sharing one drawn mode (for a TRANSFER.BATCH).
  void NextBatch(Rng& rng, size_t count, std::vector<Transfer>* out) const;

  // A skewed account offset (for tests and the setup order).
  uint64_t DrawOffset(Rng& rng) const;
  const WorkloadOptions& options() const { return options_; }

 private:
  Transfer Pair(Rng& rng) const;  // from, to, amount, cross; mode left default
  Mode DrawMode(Rng& rng) const;
  bool CrossSideOk(uint64_t from, uint64_t to, bool want_cross) const;

  WorkloadOptions options_;
  std::shared_ptr<const ShardLayout> layout_;
  std::unique_ptr<ZipfSampler> zipf_;
};

}  // namespace wallet::loadgen
