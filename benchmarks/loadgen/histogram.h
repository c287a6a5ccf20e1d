// histogram.h — a latency histogram for the load generator: log-linear buckets in
// the style of HdrHistogram, fixed memory, mergeable, percentiles within 0.4 %.
//
// Buckets: values below 2^(kSubBucketBits+1) = 256 each have a bucket of their own
// (exact). Above, every power of two [2^k, 2^(k+1)) is cut into 2^kSubBucketBits =
// 128 equal buckets, so a bucket is at most 1/128 of its lower bound wide. A
// percentile is reported as the middle of its bucket (clamped to the exact min and
// max), so it is within 1/256 (0.4 %) of a value actually recorded at that rank.
// Values above kMaxTrackable (2^40 − 1, about 18 minutes in nanoseconds) count in
// the last bucket; max() and mean() stay exact.
//
// Memory: kBucketCount (4 352) 64-bit counters, 34 KiB, allocated with the object.
//
// Example (values in nanoseconds, reported in microseconds):
//   LatencyHistogram total, second;
//   second.Record(latency_ns);
//   total.Merge(second);  second.Reset();
//   double p99_us = total.ValueAtQuantile(0.99) / 1e3;
//
// Not thread-safe: one writer at a time; merge per-thread histograms to combine.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace wallet::loadgen {

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr uint64_t kSubBucketCount = uint64_t{1} << kSubBucketBits;  // 128
  static constexpr int kMaxBits = 40;
  static constexpr uint64_t kMaxTrackable = (uint64_t{1} << kMaxBits) - 1;
  // Index of kMaxTrackable's bucket, plus one: shift (kMaxBits - 1 - kSubBucketBits)
  // times 128, plus the largest mantissa (255), plus one.
  static constexpr size_t kBucketCount = (kMaxBits - kSubBucketBits + 1) * kSubBucketCount;

  LatencyHistogram() { Reset(); }

  void Record(uint64_t value) { RecordN(value, 1); }
  void RecordN(uint64_t value, uint64_t count);
  // Adds every value of `other` (same bucket layout by construction).
  void Merge(const LatencyHistogram& other);
  void Reset();

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_); }

  // The value at quantile q in [0, 1]: the value of rank ceil(q * count) (1-based,
  // at least 1), as the middle of its bucket clamped to [min, max]. 0 when empty;
  // q <= 0 gives min(), q >= 1 max().
  uint64_t ValueAtQuantile(double q) const;

  // Bucket layout, for tests.
  static size_t BucketIndex(uint64_t value);
  static uint64_t BucketLow(size_t index);    // smallest value of the bucket
  static uint64_t BucketWidth(size_t index);  // values in the bucket

 private:
  std::array<uint64_t, kBucketCount> buckets_;
  uint64_t count_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
  unsigned __int128 sum_ = 0;
};

}  // namespace wallet::loadgen
