#include "loadgen/rate_controller.h"

#include <algorithm>
#include <cmath>

namespace wallet::loadgen {

RateController::RateController(int64_t start_ns, double rate_per_s, int64_t late_threshold_ns)
    : start_ns_(start_ns),
      rate_per_s_(rate_per_s),
      late_threshold_ns_(std::max<int64_t>(late_threshold_ns, 0)) {}

int64_t RateController::IntendedTime(uint64_t index) const {
  // index × 1e9 / rate in long double (64-bit mantissa): exact for whole rates, and
  // no drift from a rounded period over a long run.
  return start_ns_ + static_cast<int64_t>(std::floor(static_cast<long double>(index) * 1e9L / rate_per_s_));
}

uint64_t RateController::TakeDue(int64_t now_ns, uint64_t max) {
  uint64_t taken = 0;
  while (taken < max) {
    const int64_t intended = IntendedTime(next_index_);
    if (intended > now_ns) break;
    const int64_t lag = now_ns - intended;
    if (lag > late_threshold_ns_) ++late_;
    max_lag_ns_ = std::max(max_lag_ns_, lag);
    lag_sum_ns_ += lag;
    ++next_index_;
    ++taken;
  }
  return taken;
}

int64_t RateController::BacklogNs(int64_t now_ns) const {
  return std::max<int64_t>(0, now_ns - NextDue());
}

}  // namespace wallet::loadgen
