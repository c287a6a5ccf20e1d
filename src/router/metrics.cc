#include "router/metrics.h"

#include "common/result_code.h"

namespace wallet::router {

namespace {

constexpr std::string_view kEndpointNames[] = {"balance_transfer", "balance", "metrics", "healthz",
                                               "other"};
static_assert(std::size(kEndpointNames) == static_cast<size_t>(HttpEndpoint::kCount_));

// Appends "# HELP name help\n# TYPE name type\n".
void AppendHeader(std::string_view name, std::string_view type, std::string_view help,
                  std::string* out) {
  StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

// Appends one unlabelled sample line.
template <typename Number>
void AppendSample(std::string_view name, Number value, std::string* out) {
  StrAppend(out, name, " ", value, "\n");
}

// Appends a whole single-sample family (HELP, TYPE, value).
template <typename Number>
void AppendScalarFamily(std::string_view name, std::string_view type, std::string_view help,
                        Number value, std::string* out) {
  AppendHeader(name, type, help, out);
  AppendSample(name, value, out);
}

// Seconds with microsecond precision, e.g. 1234567 -> "1.234567".
std::string MicrosecondsAsSeconds(uint64_t us) {
  std::string fraction = std::to_string(us % 1000000);
  return StrCat(us / 1000000, ".", std::string(6 - fraction.size(), '0'), fraction);
}

// Appends the samples of one histogram series: cumulative _bucket lines (one per
// bound of kCallLatencyBoundsUs, then +Inf), _sum in seconds and _count.
// `bucket_counts` are per bucket (not cumulative), kCallLatencyBucketCount of them;
// `labels` is the series' other labels, e.g. endpoint="balance".
void AppendHistogramSeries(std::string_view name, std::string_view labels,
                           const uint64_t* bucket_counts, uint64_t sum_us, std::string* out) {
  uint64_t cumulative = 0;
  for (size_t b = 0; b < kCallLatencyBucketCount; ++b) {
    cumulative += bucket_counts[b];
    std::string le =
        b + 1 < kCallLatencyBucketCount ? SecondsLabelFromUs(kCallLatencyBoundsUs[b]) : "+Inf";
    StrAppend(out, name, "_bucket{", labels, ",le=\"", le, "\"} ", cumulative, "\n");
  }
  StrAppend(out, name, "_sum{", labels, "} ", MicrosecondsAsSeconds(sum_us), "\n");
  StrAppend(out, name, "_count{", labels, "} ", cumulative, "\n");
}

}  // namespace

std::string SecondsLabelFromUs(int64_t us) {
  std::string text = MicrosecondsAsSeconds(static_cast<uint64_t>(us < 0 ? 0 : us));
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text;
}

std::string_view HttpEndpointName(HttpEndpoint endpoint) {
  auto index = static_cast<size_t>(endpoint);
  return index < std::size(kEndpointNames) ? kEndpointNames[index] : "other";
}

std::string EscapeLabelValue(std::string_view value) {
  std::string escaped;
  escaped.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      escaped += "\\\\";
    } else if (c == '"') {
      escaped += "\\\"";
    } else if (c == '\n') {
      escaped += "\\n";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

size_t HttpMetrics::StatusSlot(int status) {
  if (status < kMinStatus || status > kMaxStatus) return kStatusSlots - 1;
  return static_cast<size_t>(status - kMinStatus);
}

void HttpMetrics::RecordRequest(HttpEndpoint endpoint, int status, int64_t latency_us) {
  auto index = static_cast<size_t>(endpoint);
  if (index >= std::size(endpoints_)) index = static_cast<size_t>(HttpEndpoint::kOther);
  if (latency_us < 0) latency_us = 0;
  size_t bucket = 0;  // the first bound >= latency; kCallLatencyBucketCount - 1: +Inf
  while (bucket + 1 < kCallLatencyBucketCount && latency_us > kCallLatencyBoundsUs[bucket])
    ++bucket;
  std::lock_guard<std::mutex> lock(mutex_);
  EndpointCounters& counters = endpoints_[index];
  ++counters.requests_by_status[StatusSlot(status)];
  ++counters.bucket_counts[bucket];
  counters.latency_sum_us += static_cast<uint64_t>(latency_us);
}

void HttpMetrics::RecordError(std::string_view code) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = errors_by_code_.find(code);
  if (it != errors_by_code_.end()) {
    ++it->second;
  } else if (errors_by_code_.size() < kMaxCountedErrorCodes) {
    errors_by_code_.emplace(std::string(code), 1);
  } else {
    ++errors_by_code_["OTHER"];  // may exceed the bound by this one key
  }
}

uint64_t HttpMetrics::requests(HttpEndpoint endpoint, int status) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return endpoints_[static_cast<size_t>(endpoint)].requests_by_status[StatusSlot(status)];
}

uint64_t HttpMetrics::errors(std::string_view code) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = errors_by_code_.find(code);
  return it == errors_by_code_.end() ? 0 : it->second;
}

void HttpMetrics::AppendPrometheus(std::string* out) const {
  std::lock_guard<std::mutex> lock(mutex_);

  AppendHeader("wallet_http_requests_total", "counter",
               "HTTP requests answered, by endpoint and HTTP status code.", out);
  for (size_t e = 0; e < std::size(endpoints_); ++e) {
    for (size_t slot = 0; slot < kStatusSlots; ++slot) {
      uint64_t count = endpoints_[e].requests_by_status[slot];
      if (count == 0) continue;
      int status = slot == kStatusSlots - 1 ? 0 : kMinStatus + static_cast<int>(slot);
      StrAppend(out, "wallet_http_requests_total{endpoint=\"", kEndpointNames[e], "\",status=\"",
                status, "\"} ", count, "\n");
    }
  }

  AppendHeader("wallet_http_errors_total", "counter",
               "JSON error replies, by error code (see docs/api.md).", out);
  for (const auto& [code, count] : errors_by_code_) {
    StrAppend(out, "wallet_http_errors_total{code=\"", EscapeLabelValue(code), "\"} ", count, "\n");
  }

  AppendHeader("wallet_http_request_duration_seconds", "histogram",
               "Time from routing an HTTP request to writing its response, by endpoint.", out);
  for (size_t e = 0; e < std::size(endpoints_); ++e) {
    AppendHistogramSeries("wallet_http_request_duration_seconds",
                          StrCat("endpoint=\"", kEndpointNames[e], "\""),
                          endpoints_[e].bucket_counts, endpoints_[e].latency_sum_us, out);
  }
}

void AppendRouterMetrics(const RouterStats* stats, const RouterMetricsOptions& options,
                         std::string* out) {
  AppendScalarFamily("wallet_router_up", "gauge",
                     "1 when the router core answered the stats request in time (the "
                     "wallet_router_* values are fresh), 0 when it did not (they are left out).",
                     stats != nullptr ? 1 : 0, out);
  if (stats == nullptr) {
    AppendScalarFamily("wallet_in_doubt_transactions", "gauge",
                       "Cross-shard transactions in doubt (unfinished rows older than the resolver's "
                       "threshold, all shards, at the resolver's last scan).",
                       options.in_doubt_transactions, out);
    return;
  }
  AppendScalarFamily("wallet_in_doubt_transactions", "gauge",
                     "Cross-shard transactions in doubt (unfinished rows older than the resolver's "
                     "threshold, all shards, at the resolver's last scan).",
                     stats->resolver.in_doubt_now, out);
  AppendScalarFamily("wallet_oldest_in_doubt_seconds", "gauge",
                     "Age of the oldest transaction in doubt at the resolver's last scan (0: none).",
                     StrCat(static_cast<double>(stats->resolver.oldest_in_doubt_ms_now) / 1000.0), out);
  {
    const xshard::ExecutorStats& tx = stats->transactions;
    AppendHeader("wallet_transactions_total", "counter",
                 "Cross-shard transfers by mode and the outcome their client was told (committed, "
                 "rejected, aborted, in_doubt), and rows this router finished (finished_committed, "
                 "finished_aborted).",
                 out);
    for (int mode = 0; mode < xshard::kModeCount; ++mode) {
      const std::string_view name = xshard::TransferModeName(static_cast<xshard::TransferMode>(mode));
      const std::pair<std::string_view, uint64_t> outcomes[] = {
          {"committed", tx.committed[mode]},
          {"rejected", tx.rejected[mode]},
          {"aborted", tx.aborted[mode]},
          {"in_doubt", tx.answered_in_doubt[mode]},
          {"finished_committed", tx.finished_committed[mode]},
          {"finished_aborted", tx.finished_aborted[mode]}};
      for (const auto& [outcome, count] : outcomes) {
        StrAppend(out, "wallet_transactions_total{mode=\"", name, "\",outcome=\"", outcome, "\"} ", count, "\n");
      }
    }
    AppendHeader("wallet_resolver_actions_total", "counter",
                 "What the resolver did: scans, rows claimed, claims refused (another router's "
                 "lease), rows brought to an outcome, scans a shard did not answer.",
                 out);
    const std::pair<std::string_view, uint64_t> actions[] = {{"scan", stats->resolver.scans},
                                                             {"claimed", stats->resolver.claimed},
                                                             {"lease_refused", stats->resolver.lease_refused},
                                                             {"finished", stats->resolver.finished},
                                                             {"scan_error", stats->resolver.scan_errors}};
    for (const auto& [action, count] : actions) {
      StrAppend(out, "wallet_resolver_actions_total{action=\"", action, "\"} ", count, "\n");
    }
    AppendScalarFamily("wallet_transactions_active", "gauge", "Cross-shard transactions this router drives now.",
                       tx.active_now, out);
  }

  AppendScalarFamily("wallet_router_requests_total", "counter",
                     "Public API calls the router core has taken (RESP and HTTP).", stats->calls,
                     out);

  constexpr size_t kCommands = static_cast<size_t>(RouterCommand::kCount_);
  AppendHeader("wallet_router_calls_total", "counter", "Public API calls, by command.", out);
  for (size_t i = 0; i < kCommands; ++i) {
    StrAppend(out, "wallet_router_calls_total{command=\"",
              RouterCommandName(static_cast<RouterCommand>(i)), "\"} ", stats->calls_by_command[i],
              "\n");
  }
  AppendHeader("wallet_router_call_duration_seconds", "histogram",
               "Time from the router core taking a call to its reply (MOVED retries included), "
               "by command.",
               out);
  for (size_t i = 0; i < kCommands; ++i) {
    AppendHistogramSeries(
        "wallet_router_call_duration_seconds",
        StrCat("command=\"", RouterCommandName(static_cast<RouterCommand>(i)), "\""),
        stats->call_latency_buckets_by_command[i], stats->call_latency_sum_us_by_command[i], out);
  }

  AppendHeader("wallet_router_errors_total", "counter",
               "Error replies from the router core (its own or passed through from shards), by "
               "code.",
               out);
  for (size_t i = 0; i < std::size(stats->errors_by_code); ++i) {
    uint64_t count = stats->errors_by_code[i];
    if (count == 0) continue;
    // The last slot counts error words that are not a ResultCode.
    std::string label = i + 1 == std::size(stats->errors_by_code) ? std::string("OTHER")
                        : i < static_cast<size_t>(ResultCode::kCount_)
                            ? std::string(ResultCodeName(static_cast<ResultCode>(i)))
                            : StrCat("code_", i);
    StrAppend(out, "wallet_router_errors_total{code=\"", label, "\"} ", count, "\n");
  }

  // The single-sample families, as data: name, type, help, value.
  struct ScalarFamily {
    std::string_view name;
    std::string_view type;
    std::string_view help;
    std::string value;
  };
  const ScalarFamily scalars[] = {
      {"wallet_router_moved_retries_total", "counter",
       "Calls retried after a MOVED reply (stale partition map).", StrCat(stats->moved_retries)},
      {"wallet_router_map_refreshes_total", "counter",
       "Times the router re-read the partition map.", StrCat(stats->map_refreshes)},
      {"wallet_router_overloads_total", "counter",
       "Calls refused because a bounded queue was full (BUSY).", StrCat(stats->overloads)},
      {"wallet_router_outcome_unknown_total", "counter",
       "Mutations answered UNAVAILABLE with an unknown outcome (the client must retry with the "
       "same transaction id to learn it).",
       StrCat(stats->outcome_unknown)},
      {"wallet_router_cross_shard_refused_total", "counter",
       "Transfers refused CROSS_SHARD_UNSUPPORTED (none since the executors exist).",
       StrCat(stats->cross_shard_refused)},
      {"wallet_router_in_flight", "gauge", "Calls sent to shards and not yet answered.",
       StrCat(stats->in_flight_now)},
      {"wallet_router_map_version", "gauge",
       "Version of the cached partition map; -1 before the first map.",
       StrCat(stats->map_version_now)},
      {"wallet_router_live_shards", "gauge",
       "Shards registered as live in ZooKeeper, as the router last saw them.",
       StrCat(stats->live_shards_now)},
  };
  for (const ScalarFamily& family : scalars) {
    AppendScalarFamily(family.name, family.type, family.help, family.value, out);
  }
}

}  // namespace wallet::router
