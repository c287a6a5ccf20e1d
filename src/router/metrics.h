// metrics.h — the router's /metrics page in the Prometheus text exposition format
// (version 0.0.4): the HTTP server's own counters and latency histograms
// (HttpMetrics) and the router core's counters (AppendRouterMetrics, from
// Router::stats()).
//
// Families written (every one with # HELP and # TYPE lines before its samples):
//   wallet_http_requests_total{endpoint,status}          counter
//   wallet_http_errors_total{code}                       counter (JSON error replies)
//   wallet_http_request_duration_seconds{endpoint}       histogram (_bucket{le}, _sum, _count)
//   wallet_router_up                                     gauge (1: stats below are fresh)
//   wallet_router_requests_total                         counter
//   wallet_router_calls_total{command}                   counter
//   wallet_router_call_duration_seconds{command}         histogram
//   wallet_router_errors_total{code}                     counter
//   wallet_router_moved_retries_total                    counter
//   wallet_router_map_refreshes_total                    counter
//   wallet_router_overloads_total                        counter
//   wallet_router_outcome_unknown_total                  counter
//   wallet_router_cross_shard_refused_total              counter
//   wallet_router_in_flight                              gauge
//   wallet_router_map_version                            gauge (-1: no map yet)
//   wallet_router_live_shards                            gauge
//   wallet_in_doubt_transactions                         gauge (resolver's last scan)
//   wallet_oldest_in_doubt_seconds                       gauge
//   wallet_transactions_total{mode,outcome}              counter
//   wallet_resolver_actions_total{action}                counter
//   wallet_transactions_active                           gauge
//
// Example:
//   HttpMetrics metrics;
//   metrics.RecordRequest(HttpEndpoint::kBalanceTransfer, 200, /*latency_us=*/830);
//   metrics.RecordError("INSUFFICIENT_FUNDS");
//   std::string page;
//   metrics.AppendPrometheus(&page);
//   AppendRouterMetrics(&stats, RouterMetricsOptions{}, &page);   // nullptr: router silent
//
// Threading: HttpMetrics is safe to call from any thread (one mutex; the HTTP path is
// not the hot path, the RESP one is). AppendRouterMetrics is a pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "common/strings.h"
#include "router/router.h"

namespace wallet::router {

// The endpoints the HTTP server counts apart; anything else is kOther.
enum class HttpEndpoint : uint8_t {
  kBalanceTransfer,  // POST /v1/wallet/balance_transfer
  kBalance,          // GET /v1/wallet/balance/{account}
  kMetrics,          // GET /metrics
  kHealthz,          // GET /healthz
  kOther,            // unknown paths, unparsable requests
  kCount_,           // not an endpoint
};

// The label value: "balance_transfer", "balance", "metrics", "healthz", "other".
std::string_view HttpEndpointName(HttpEndpoint endpoint);

// Latency histograms use the router core's bucket bounds (router.h:
// kCallLatencyBoundsUs, 100 us .. 5 s, plus +Inf), so that the HTTP and the core
// histograms can be compared bucket by bucket.

// Distinct error codes counted by name; later new codes are counted as "OTHER" so
// that a peer inventing error words cannot grow the page without bound.
inline constexpr size_t kMaxCountedErrorCodes = 128;

// The HTTP server's counters and histograms.
class HttpMetrics {
 public:
  HttpMetrics() = default;
  HttpMetrics(const HttpMetrics&) = delete;
  HttpMetrics& operator=(const HttpMetrics&) = delete;

  // Counts one answered request: its endpoint, HTTP status (100..599; others are
  // counted as 0) and time from routing to the response being written.
  void RecordRequest(HttpEndpoint endpoint, int status, int64_t latency_us);
  // Counts one JSON error reply by its code ("INSUFFICIENT_FUNDS", "BAD_AMOUNT").
  void RecordError(std::string_view code);

  // Appends the wallet_http_* families to *out.
  void AppendPrometheus(std::string* out) const;

  // For tests: requests counted for (endpoint, status), errors counted for code.
  uint64_t requests(HttpEndpoint endpoint, int status) const;
  uint64_t errors(std::string_view code) const;

 private:
  static constexpr int kMinStatus = 100;
  static constexpr int kMaxStatus = 599;
  static constexpr size_t kStatusSlots = kMaxStatus - kMinStatus + 2;  // +1: "0" (out of range)

  struct EndpointCounters {
    uint64_t requests_by_status[kStatusSlots] = {};
    uint64_t bucket_counts[kCallLatencyBucketCount] = {};  // not cumulative; last: +Inf
    uint64_t latency_sum_us = 0;
  };

  // Index into requests_by_status for an HTTP status.
  static size_t StatusSlot(int status);

  mutable std::mutex mutex_;
  EndpointCounters endpoints_[static_cast<size_t>(HttpEndpoint::kCount_)];  // guarded by mutex_
  absl::flat_hash_map<std::string, uint64_t, StringHash, StringEq>
      errors_by_code_;  // guarded by mutex_
};

struct RouterMetricsOptions {
  // Cross-shard transactions in doubt; 0 until the TC/C and saga executors exist.
  uint64_t in_doubt_transactions = 0;
};

// Appends the wallet_router_* families and wallet_in_doubt_transactions to *out.
// `stats` is what Router::stats() returned on the loop thread, or nullptr when the
// router did not answer in time: then wallet_router_up is 0 and only the gauges
// that need no stats are written.
void AppendRouterMetrics(const RouterStats* stats, const RouterMetricsOptions& options,
                         std::string* out);

// The `le` label text of a bucket bound: 2500 -> "0.0025", 1000000 -> "1".
std::string SecondsLabelFromUs(int64_t us);

// Escapes a label value for the text format (backslash, double quote, newline).
std::string EscapeLabelValue(std::string_view value);

}  // namespace wallet::router
