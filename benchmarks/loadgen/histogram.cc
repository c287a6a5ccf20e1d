#include "loadgen/histogram.h"

#include <algorithm>
#include <cmath>

namespace wallet::loadgen {

size_t LatencyHistogram::BucketIndex(uint64_t value) {
  if (value > kMaxTrackable) value = kMaxTrackable;
  if (value < 2 * kSubBucketCount) return static_cast<size_t>(value);
  const int msb = 63 - __builtin_clzll(value);
  const int shift = msb - kSubBucketBits;  // >= 1 here
  const uint64_t mantissa = value >> shift;  // in [kSubBucketCount, 2 * kSubBucketCount)
  return static_cast<size_t>(static_cast<uint64_t>(shift) * kSubBucketCount + mantissa);
}

uint64_t LatencyHistogram::BucketLow(size_t index) {
  if (index < 2 * kSubBucketCount) return index;
  const uint64_t shift = index / kSubBucketCount - 1;
  const uint64_t mantissa = index - shift * kSubBucketCount;
  return mantissa << shift;
}

uint64_t LatencyHistogram::BucketWidth(size_t index) {
  if (index < 2 * kSubBucketCount) return 1;
  return uint64_t{1} << (index / kSubBucketCount - 1);
}

void LatencyHistogram::RecordN(uint64_t value, uint64_t count) {
  if (count == 0) return;
  buckets_[BucketIndex(value)] += count;
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  count_ += count;
  sum_ += static_cast<unsigned __int128>(value) * count;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < kBucketCount; ++i) buckets_[i] += other.buckets_[i];
  if (count_ == 0 || other.min_ < min_) min_ = other.min_;
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

void LatencyHistogram::Reset() {
  buckets_.fill(0);
  count_ = 0;
  min_ = 0;
  max_ = 0;
  sum_ = 0;
}

uint64_t LatencyHistogram::ValueAtQuantile(double q) const {
  if (count_ == 0) return 0;
  if (!(q > 0.0)) return min_;
  if (q >= 1.0) return max_;
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBucketCount; ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      const uint64_t middle = BucketLow(i) + (BucketWidth(i) - 1) / 2;
      return std::clamp(middle, min_, max_);
    }
  }
  return max_;
}

}  // namespace wallet::loadgen
