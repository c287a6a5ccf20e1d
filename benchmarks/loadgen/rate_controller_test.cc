#include "loadgen/rate_controller.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace wallet::loadgen {
namespace {

constexpr int64_t kMs = 1'000'000;

TEST(RateController, IntendedTimesFollowTheRate) {
  RateController schedule(/*start_ns=*/5 * kMs, /*rate_per_s=*/1000, /*late_threshold_ns=*/kMs);
  EXPECT_EQ(schedule.IntendedTime(0), 5 * kMs);
  EXPECT_EQ(schedule.IntendedTime(1), 6 * kMs);
  EXPECT_EQ(schedule.IntendedTime(1000), 1005 * kMs);
  EXPECT_EQ(schedule.NextDue(), 5 * kMs);
}

TEST(RateController, NonIntegralPeriodDoesNotDrift) {
  RateController schedule(0, /*rate_per_s=*/3, 0);
  EXPECT_EQ(schedule.IntendedTime(1), 333'333'333);
  EXPECT_EQ(schedule.IntendedTime(3), 1'000'000'000);
  EXPECT_EQ(schedule.IntendedTime(3'000'000), 1'000'000'000'000'000);
}

TEST(RateController, OnTimeSenderIsNeverLate) {
  RateController schedule(0, 1000, kMs);
  for (int64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(schedule.TakeDue(schedule.NextDue()), 1u);
  }
  EXPECT_EQ(schedule.taken(), 100u);
  EXPECT_EQ(schedule.late(), 0u);
  EXPECT_EQ(schedule.max_lag_ns(), 0);
  EXPECT_EQ(schedule.mean_lag_ns(), 0.0);
}

TEST(RateController, NothingIsDueBeforeItsTime) {
  RateController schedule(10 * kMs, 1000, kMs);
  EXPECT_EQ(schedule.TakeDue(10 * kMs - 1), 0u);
  EXPECT_EQ(schedule.BacklogNs(10 * kMs - 1), 0);
  EXPECT_EQ(schedule.TakeDue(10 * kMs), 1u);
  EXPECT_EQ(schedule.TakeDue(11 * kMs - 1), 0u);
}

TEST(RateController, StallIsCountedAsLagAndLateSends) {
  // A sender that wakes up 5.5 ms after the start: requests 0..5 are due, with lags
  // 5.5, 4.5, 3.5, 2.5, 1.5 and 0.5 ms; with a 1 ms threshold the first five are late.
  RateController schedule(0, 1000, kMs);
  EXPECT_EQ(schedule.BacklogNs(5'500'000), 5'500'000);
  EXPECT_EQ(schedule.TakeDue(5'500'000), 6u);
  EXPECT_EQ(schedule.late(), 5u);
  EXPECT_EQ(schedule.max_lag_ns(), 5'500'000);
  EXPECT_DOUBLE_EQ(schedule.mean_lag_ns(), (5.5 + 4.5 + 3.5 + 2.5 + 1.5 + 0.5) / 6 * kMs);
  EXPECT_EQ(schedule.next_index(), 6u);
  EXPECT_EQ(schedule.NextDue(), 6 * kMs);
  EXPECT_EQ(schedule.BacklogNs(5'500'000), 0);
  // Back on time: no more late sends, the max stays.
  EXPECT_EQ(schedule.TakeDue(6 * kMs), 1u);
  EXPECT_EQ(schedule.late(), 5u);
  EXPECT_EQ(schedule.max_lag_ns(), 5'500'000);
}

TEST(RateController, TakeDueHonoursItsLimitAndKeepsTheRest) {
  RateController schedule(0, 1000, kMs);
  EXPECT_EQ(schedule.TakeDue(9 * kMs, /*max=*/4), 4u);  // 0..3 of the ten due
  EXPECT_EQ(schedule.next_index(), 4u);
  EXPECT_EQ(schedule.BacklogNs(9 * kMs), 5 * kMs);  // request 4 was due at 4 ms
  // Taken later, the rest have larger lags: the sender's slowness is not forgiven.
  EXPECT_EQ(schedule.TakeDue(10 * kMs), 7u);  // 4..10
  EXPECT_EQ(schedule.max_lag_ns(), 9 * kMs);  // request 0 taken at 9 ms
  // Late (lag > 1 ms): 0..3 (9, 8, 7, 6 ms) and 4..8 (6..2 ms); 9 (1 ms) and 10 (0) are not.
  EXPECT_EQ(schedule.late(), 4u + 5u);
}

TEST(RateController, ThresholdIsExclusive) {
  RateController schedule(0, 1000, kMs);
  EXPECT_EQ(schedule.TakeDue(kMs), 2u);  // request 0 with lag exactly 1 ms, request 1 on time
  EXPECT_EQ(schedule.late(), 0u);
  EXPECT_EQ(schedule.max_lag_ns(), kMs);
}

}  // namespace
}  // namespace wallet::loadgen
