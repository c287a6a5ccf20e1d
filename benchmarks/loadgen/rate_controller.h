// rate_controller.h — the open loop's schedule: request i is INTENDED to be sent at
// t0 + i / rate, whatever happened to the requests before it. Latency is measured
// from that intended time, so a stall of the system (or of the generator) shows in
// the latencies of every request that should have gone out during it, instead of
// being hidden by sending fewer requests ("coordinated omission").
//
// The controller is a pure function of the clock values it is given (no clock of
// its own), so tests drive it with a fake clock. It also keeps the generator honest
// about itself: every request taken records its lag (the `now` it was taken at minus
// its intended time); a lag above `late_threshold_ns` counts as a late send.
//
// Example (one sender thread):
//   RateController schedule(Now(), /*rate_per_s=*/50'000, /*late_threshold_ns=*/1'000'000);
//   while (schedule.NextDue() < end_ns) {
//     SleepUntil(schedule.NextDue());
//     const uint64_t first = schedule.next_index();
//     const uint64_t n = schedule.TakeDue(Now(), /*max=*/64);
//     for (uint64_t i = first; i < first + n; ++i) Send(/*intended_ns=*/schedule.IntendedTime(i));
//   }
//   if (schedule.late() > 0) ... the generator fell behind by up to schedule.max_lag_ns()
#pragma once

#include <cstdint>
#include <limits>

namespace wallet::loadgen {

class RateController {
 public:
  // rate_per_s > 0; late_threshold_ns >= 0.
  RateController(int64_t start_ns, double rate_per_s, int64_t late_threshold_ns);

  // t0 + index / rate, in nanoseconds (rounded down).
  int64_t IntendedTime(uint64_t index) const;
  // The index of the next request to take, and when it is due.
  uint64_t next_index() const { return next_index_; }
  int64_t NextDue() const { return IntendedTime(next_index_); }

  // Takes the requests due at `now_ns` (intended time <= now), at most `max` of them,
  // and returns how many; they are next_index() .. next_index() + n - 1 as it was
  // before the call. Each one's lag is now_ns minus its intended time.
  uint64_t TakeDue(int64_t now_ns, uint64_t max = std::numeric_limits<uint64_t>::max());

  // How far behind the schedule the sender is at `now_ns`: now minus the intended
  // time of the oldest request not taken yet (0 when it is not due yet).
  int64_t BacklogNs(int64_t now_ns) const;

  uint64_t taken() const { return next_index_; }
  uint64_t late() const { return late_; }          // taken with lag > the threshold
  int64_t max_lag_ns() const { return max_lag_ns_; }
  double mean_lag_ns() const {
    return next_index_ == 0 ? 0.0 : static_cast<double>(lag_sum_ns_) / static_cast<double>(next_index_);
  }
  double rate_per_s() const { return rate_per_s_; }
  int64_t start_ns() const { return start_ns_; }

 private:
  int64_t start_ns_;
  double rate_per_s_;
  int64_t late_threshold_ns_;
  uint64_t next_index_ = 0;
  uint64_t late_ = 0;
  int64_t max_lag_ns_ = 0;
  __int128 lag_sum_ns_ = 0;
};

}  // namespace wallet::loadgen
