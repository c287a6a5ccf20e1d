#include "loadgen/histogram.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace wallet::loadgen {
namespace {

// Within `tolerance` (relative) of `expected`.
void ExpectNear(uint64_t actual, double expected, double tolerance) {
  EXPECT_LE(std::fabs(static_cast<double>(actual) - expected), expected * tolerance)
      << "actual " << actual << " expected " << expected;
}

TEST(LatencyHistogram, EmptyReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.ValueAtQuantile(0.5), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 0; v < 256; ++v) h.Record(v);
  EXPECT_EQ(h.ValueAtQuantile(0.5), 127u);  // rank 128 of 0..255
  EXPECT_EQ(h.ValueAtQuantile(0.99), 253u);  // rank ceil(253.44) = 254
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 255u);
}

TEST(LatencyHistogram, PercentilesOfOneToAMillionWithinOnePercent) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 1'000'000; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 1'000'000u);
  ExpectNear(h.ValueAtQuantile(0.5), 500'000, 0.01);
  ExpectNear(h.ValueAtQuantile(0.9), 900'000, 0.01);
  ExpectNear(h.ValueAtQuantile(0.99), 990'000, 0.01);
  ExpectNear(h.ValueAtQuantile(0.999), 999'000, 0.01);
  EXPECT_EQ(h.ValueAtQuantile(1.0), 1'000'000u);
  EXPECT_EQ(h.ValueAtQuantile(0.0), 1u);
  EXPECT_EQ(h.max(), 1'000'000u);
  EXPECT_DOUBLE_EQ(h.mean(), 500'000.5);
}

TEST(LatencyHistogram, SkewedInputTailIsFound) {
  // 99 % fast (1 ms), 1 % slow (250 ms), in nanoseconds.
  LatencyHistogram h;
  h.RecordN(1'000'000, 99'000);
  h.RecordN(250'000'000, 1'000);
  ExpectNear(h.ValueAtQuantile(0.5), 1e6, 0.01);
  ExpectNear(h.ValueAtQuantile(0.99), 1e6, 0.01);    // rank 99 000 is still fast
  ExpectNear(h.ValueAtQuantile(0.991), 250e6, 0.01);
  EXPECT_EQ(h.max(), 250'000'000u);
  EXPECT_DOUBLE_EQ(h.mean(), (99'000.0 * 1e6 + 1'000.0 * 250e6) / 100'000.0);
}

TEST(LatencyHistogram, EveryBucketIsAtMostOneHundredTwentyEighthWide) {
  for (size_t i = 0; i < LatencyHistogram::kBucketCount; ++i) {
    const uint64_t low = LatencyHistogram::BucketLow(i);
    const uint64_t width = LatencyHistogram::BucketWidth(i);
    EXPECT_EQ(LatencyHistogram::BucketIndex(low), i);
    EXPECT_EQ(LatencyHistogram::BucketIndex(low + width - 1), i);
    if (i + 1 < LatencyHistogram::kBucketCount) {
      EXPECT_EQ(LatencyHistogram::BucketLow(i + 1), low + width) << i;
    }
    if (low >= 256) {
      EXPECT_LE(static_cast<double>(width) / static_cast<double>(low), 1.0 / 128) << i;
    }
  }
  EXPECT_EQ(LatencyHistogram::BucketIndex(LatencyHistogram::kMaxTrackable), LatencyHistogram::kBucketCount - 1);
}

TEST(LatencyHistogram, HugeValuesClampIntoTheLastBucketButMaxStaysExact) {
  LatencyHistogram h;
  h.Record(uint64_t{1} << 50);
  EXPECT_EQ(h.max(), uint64_t{1} << 50);
  EXPECT_EQ(h.ValueAtQuantile(0.5), uint64_t{1} << 50);  // clamped to [min, max]
  EXPECT_EQ(LatencyHistogram::BucketIndex(uint64_t{1} << 50), LatencyHistogram::kBucketCount - 1);
}

TEST(LatencyHistogram, MergeEqualsRecordingEverythingInOne) {
  LatencyHistogram all, odd, even;
  for (uint64_t v = 1; v <= 200'000; ++v) {
    const uint64_t value = v * 37 % 1'000'003;  // spread over many buckets
    all.Record(value);
    (v % 2 == 0 ? even : odd).Record(value);
  }
  LatencyHistogram merged;
  merged.Merge(odd);
  merged.Merge(even);
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_EQ(merged.min(), all.min());
  EXPECT_EQ(merged.max(), all.max());
  EXPECT_DOUBLE_EQ(merged.mean(), all.mean());
  for (double q : {0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    EXPECT_EQ(merged.ValueAtQuantile(q), all.ValueAtQuantile(q)) << q;
  }
}

TEST(LatencyHistogram, MergeIntoEmptyAndResetForgets) {
  LatencyHistogram a, b;
  b.Record(5'000);
  b.Record(7'000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 2u);
  EXPECT_EQ(a.min(), 5'000u);
  a.Merge(LatencyHistogram());
  EXPECT_EQ(a.count(), 2u);
  a.Reset();
  EXPECT_EQ(a.count(), 0u);
  a.Record(9);
  EXPECT_EQ(a.min(), 9u);
  EXPECT_EQ(a.max(), 9u);
}

}  // namespace
}  // namespace wallet::loadgen
