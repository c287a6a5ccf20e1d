#include "loadgen/workload.h"

#include <cmath>
#include <utility>


namespace wallet::loadgen {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// log1p(x) / x, and (exp(x) − 1) / x, accurate near 0.
double Helper1(double x) { return std::fabs(x) > 1e-8 ? std::log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x)); }
double Helper2(double x) {
  return std::fabs(x) > 1e-8 ? std::expm1(x) / x : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x));
}

constexpr int kSideDraws = 64;  // skewed draws of a destination before the uniform fallback

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t state = seed;
  for (uint64_t& word : s_) word = SplitMix64(&state);
}

uint64_t Rng::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

// ---- Zipf by rejection-inversion (as in Apache Commons RNG's sampler). ----

ZipfSampler::ZipfSampler(uint64_t n, double theta) : n_(n), theta_(theta) {
  h_integral_x1_ = HIntegral(1.5) - 1.0;
  h_integral_n_ = HIntegral(static_cast<double>(n_) + 0.5);
  s_ = 2.0 - HIntegralInverse(HIntegral(2.5) - H(2.0));
}

double ZipfSampler::H(double x) const { return std::exp(-theta_ * std::log(x)); }

double ZipfSampler::HIntegral(double x) const {
  const double log_x = std::log(x);
  return Helper2((1.0 - theta_) * log_x) * log_x;
}

double ZipfSampler::HIntegralInverse(double x) const {
  double t = x * (1.0 - theta_);
  if (t < -1.0) t = -1.0;  // rounding guard
  return std::exp(Helper1(t) * x);
}

uint64_t ZipfSampler::Sample(Rng& rng) const {
  for (;;) {
    const double u = h_integral_n_ + rng.Unit() * (h_integral_x1_ - h_integral_n_);
    const double x = HIntegralInverse(u);
    double k = std::floor(x + 0.5);
    if (k < 1) k = 1;
    if (k > static_cast<double>(n_)) k = static_cast<double>(n_);
    if (k - x <= s_ || u >= HIntegral(k + 0.5) - H(k)) return static_cast<uint64_t>(k) - 1;
  }
}

const char* SkewName(Skew skew) {
  switch (skew) {
    case Skew::kUniform: return "uniform";
    case Skew::kZipf: return "zipf";
    case Skew::kHot: return "hot";
  }
  return "?";
}

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kDefault: return "default";
    case Mode::kTcc: return "tcc";
    case Mode::kSaga: return "saga";
  }
  return "?";
}

ShardLayout::ShardLayout(std::vector<uint16_t> shard_of, uint32_t shard_count)
    : shard_of_(std::move(shard_of)), shard_count_(shard_count), members_(shard_count) {
  for (size_t offset = 0; offset < shard_of_.size(); ++offset) {
    members_[shard_of_[offset]].push_back(static_cast<uint32_t>(offset));
  }
}

std::string Workload::Validate(const WorkloadOptions& o, const ShardLayout* layout) {
  if (o.accounts < 2) return "--accounts must be at least 2";
  if (o.first_account + o.accounts - 1 < o.first_account) return "--first_account + --accounts overflows 64 bits";
  if (o.amount_min < 1 || o.amount_max < o.amount_min) return "--amount must be MIN-MAX with 1 <= MIN <= MAX";
  if (o.skew == Skew::kZipf && !(o.zipf_theta > 0 && o.zipf_theta < 100)) return "--zipf_theta must be > 0";
  if (o.skew == Skew::kHot) {
    if (!(o.hot_share >= 0 && o.hot_share <= 1)) return "--hot_share must be 0..1";
    if (o.hot_accounts < 2 || o.hot_accounts + 2 > o.accounts) {
      return "--hot_accounts must be at least 2 and leave at least 2 other accounts";
    }
  }
  if (o.tcc_share > 1) return "--tcc_share must be 0..1 (or < 0: no MODE)";
  if (o.cross_shard_share > 1) return "--cross_shard_share must be 0..1 (or < 0: not controlled)";
  if (o.cross_shard_share >= 0) {
    if (layout == nullptr) return "--cross_shard_share needs the partition map (--zk/--cluster or --partition_map)";
    if (layout->accounts() != o.accounts) return "the shard layout does not cover --accounts";
    if (o.accounts > UINT32_MAX) return "--cross_shard_share supports at most 2^32-1 accounts";
    uint32_t non_empty = 0;
    bool pair_in_one = false;
    for (uint32_t s = 0; s < layout->shard_count(); ++s) {
      if (!layout->Members(s).empty()) ++non_empty;
      if (layout->Members(s).size() >= 2) pair_in_one = true;
    }
    if (o.cross_shard_share > 0 && non_empty < 2) {
      return "--cross_shard_share > 0 needs accounts on at least 2 shards (the map has 1)";
    }
    if (o.cross_shard_share < 1 && !pair_in_one) return "--cross_shard_share < 1 needs 2 accounts on one shard";
  }
  return "";
}

Workload::Workload(const WorkloadOptions& options, std::shared_ptr<const ShardLayout> layout)
    : options_(options), layout_(std::move(layout)) {
  if (options_.skew == Skew::kZipf) zipf_ = std::make_unique<ZipfSampler>(options_.accounts, options_.zipf_theta);
}

uint64_t Workload::DrawOffset(Rng& rng) const {
  switch (options_.skew) {
    case Skew::kUniform:
      return rng.Below(options_.accounts);
    case Skew::kZipf:
      return zipf_->Sample(rng);
    case Skew::kHot:
      if (rng.Unit() < options_.hot_share) return rng.Below(options_.hot_accounts);
      return options_.hot_accounts + rng.Below(options_.accounts - options_.hot_accounts);
  }
  return 0;
}

bool Workload::CrossSideOk(uint64_t from, uint64_t to, bool want_cross) const {
  return from != to && ((layout_->ShardOf(from) != layout_->ShardOf(to)) == want_cross);
}

Transfer Workload::Pair(Rng& rng) const {
  Transfer t;
  t.amount = options_.amount_min + static_cast<int64_t>(rng.Below(
                                       static_cast<uint64_t>(options_.amount_max - options_.amount_min) + 1));
  uint64_t from = DrawOffset(rng);
  uint64_t to = 0;
  if (options_.cross_shard_share < 0 || layout_ == nullptr) {
    do {
      to = DrawOffset(rng);
    } while (to == from);
    if (layout_ != nullptr) t.cross = layout_->ShardOf(from) != layout_->ShardOf(to) ? 1 : 0;
  } else {
    const bool want_cross = rng.Unit() < options_.cross_shard_share;
    for (;;) {
      bool found = false;
      for (int i = 0; i < kSideDraws && !found; ++i) {
        to = DrawOffset(rng);
        found = CrossSideOk(from, to, want_cross);
      }
      if (!found && !want_cross) {
        const std::vector<uint32_t>& same = layout_->Members(layout_->ShardOf(from));
        if (same.size() >= 2) {
          do {
            to = same[rng.Below(same.size())];
          } while (to == from);
          found = true;
        }
      } else if (!found) {
        // Uniformly among the accounts of a random other non-empty shard.
        const uint32_t shards = layout_->shard_count();
        const uint32_t start = static_cast<uint32_t>(rng.Below(shards));
        for (uint32_t i = 0; i < shards && !found; ++i) {
          const uint32_t s = (start + i) % shards;
          if (s == layout_->ShardOf(from) || layout_->Members(s).empty()) continue;
          to = layout_->Members(s)[rng.Below(layout_->Members(s).size())];
          found = true;
        }
      }
      if (found) break;
      from = DrawOffset(rng);  // this source has no partner on the wanted side
    }
    t.cross = want_cross ? 1 : 0;
  }
  t.from = options_.first_account + from;
  t.to = options_.first_account + to;
  return t;
}

Mode Workload::DrawMode(Rng& rng) const {
  if (options_.tcc_share < 0) return Mode::kDefault;
  return rng.Unit() < options_.tcc_share ? Mode::kTcc : Mode::kSaga;
}

Transfer Workload::Next(Rng& rng) const {
  Transfer t = Pair(rng);
  const Mode mode = DrawMode(rng);
  if (t.cross != 0) t.mode = mode;  // MODE means nothing to a same-shard transfer
  return t;
}

void Workload::NextBatch(Rng& rng, size_t count, std::vector<Transfer>* out) const {
  out->clear();
  const Mode mode = DrawMode(rng);
  for (size_t i = 0; i < count; ++i) {
    out->push_back(Pair(rng));
    out->back().mode = mode;
  }
}

}  // namespace wallet::loadgen
