// wallet-loadgen: drives a wallet cluster through its routers with the client library
// (src/client, async calls) and says how fast and how well it answered.
//
//   wallet-loadgen --routers=127.0.0.1:7100,127.0.0.1:7101 --accounts=100000 --setup --duration_s=0
//   wallet-loadgen --routers=... --accounts=100000 --duration_s=10 --threads=2 --connections=2 --pipeline=32
//   wallet-loadgen --routers=... --rate=50000 --duration_s=30               # open loop
//   wallet-loadgen --zk=127.0.0.1:2181 --cluster=local --cross_shard_share=0.2 --tcc_share=0.5 --audit
//   wallet-loadgen --self_test_server --duration_s=10                       # the generator's own ceiling
//
// Load models:
//   closed loop (default, --rate=0): each of --threads worker threads owns one
//     Client with --connections connections to every router, and keeps --pipeline
//     calls outstanding per connection: every completion callback (on the client's
//     I/O thread) starts the next call. Latency: from the call's start to its reply.
//   open loop (--rate=R transfers/s over all threads): request i of a thread is
//     INTENDED to start at t0 + i / (R / threads) (threads interleaved), whatever the
//     replies do; latency runs from that intended time, so a stall of the cluster or
//     of the generator is counted in full (no coordinated omission). A request sent
//     more than --late_threshold_us after its intended time is a late send; their
//     count and the largest lag are reported: the generator fell behind.
//   With --batch=B > 1 every call is one TRANSFER.BATCH of B transfers (the rate and
//   the counts are still transfers; each transfer's latency is its batch's).
//
// Accounts: ids --first_account .. --first_account + --accounts − 1 (default 1 .. N),
// all in --currency. Skew, cross-shard share and modes: loadgen/workload.h.
//
// Which shard holds an account (needed for --cross_shard_share): the partition map,
// read once at start from ZooKeeper (--zk and --cluster: what the routers follow) or
// from a file in the map's text form (--partition_map, e.g. the output of
// `zkCli.sh get /wallet/<cluster>/map`; docs/zookeeper-layout.md). Each account's
// shard is then PartitionOf(id, P) looked up in the map, the routers' own rule. A map
// that changes during the run (a rebalance) only shifts the share a little; nothing
// depends on it for correctness. With --zk and no --routers the live routers are
// taken from ZooKeeper too.
//
// Phases, in this order:
//   --setup   OPEN every account (idempotent), read its BALANCE and, when it holds
//             nothing (available + held = 0), DEPOSIT --initial_balance with the txid
//             lgfund-<id>-<currency>-<amount> (a retry applies once). An account that
//             already holds money is left alone, so running --setup again never adds
//             money, even after the idempotency window. Pipelined like the run.
//   run       --warmup_s, then --duration_s measured (skipped when --duration_s=0).
//             Counted: transfers STARTED (closed) or INTENDED (open) inside the
//             measured window, however late their reply; the generator waits for
//             every reply before it reports.
//   --audit   waits (at most --audit_wait_s) for TX.INDOUBT to be empty (every
//             cross-shard transfer finished), reads every account's BALANCE through
//             a router and checks Σ(available + held) = accounts × --initial_balance
//             (or --expected_total): money conserved. Assumes nothing but this tool
//             moved money into or out of these accounts.
//
// Output: a progress line per second (stderr), a summary in words (stdout), and with
// --json_out a JSON document, schema "wallet-loadgen/1" (benchmarks/README.md).
// Exit status: 0 done (and audit passed), 1 setup failures or a failed audit, 2 bad
// flags, 3 could not reach the cluster.
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "client/wallet_client.h"
#include "cluster/layout.h"
#include "cluster/zk_client.h"
#include "common/flags_usage.h"
#include "common/partition.h"
#include "common/process_files.h"
#include "common/strings.h"
#include "loadgen/histogram.h"
#include "loadgen/rate_controller.h"
#include "loadgen/self_test_server.h"
#include "loadgen/workload.h"

// ---- Target ----
ABSL_FLAG(std::string, routers, "",
          "Routers to drive, host:port[,host:port...] (numeric hosts). Empty with --zk: the live routers "
          "registered in ZooKeeper; empty with --self_test_server: the in-process test server.");
ABSL_FLAG(std::string, password_file, "", "File whose first line is the routers' client password (AUTH).");
ABSL_FLAG(std::string, zk, "", "ZooKeeper connect string: read the partition map (and, without --routers, the routers).");
ABSL_FLAG(std::string, cluster, "", "Cluster name under /wallet in ZooKeeper (with --zk).");
ABSL_FLAG(std::string, partition_map, "",
          "File with the partition map in its text form ('wallet-partition-map 1' ...), instead of --zk.");
// ---- Load model ----
ABSL_FLAG(int32_t, threads, 2, "Worker threads; each owns one Client (and its I/O thread).");
ABSL_FLAG(int32_t, connections, 2, "Connections per router endpoint, per thread (the client's connections_per_endpoint).");
ABSL_FLAG(int32_t, pipeline, 32,
          "Closed loop: calls kept outstanding per connection (in flight = threads x routers x connections x "
          "pipeline).");
ABSL_FLAG(double, rate, 0,
          "Open loop: target transfers per second over all threads (0: closed loop). Latency is measured "
          "from each request's intended send time.");
ABSL_FLAG(int64_t, late_threshold_us, 1'000, "Open loop: a request sent later than this after its intended time is late.");
ABSL_FLAG(int32_t, batch, 1, "Transfers per call: 1 = TRANSFER, more = TRANSFER.BATCH of that many (1-10000).");
ABSL_FLAG(int32_t, duration_s, 10, "Measured seconds (after the warm-up); 0: no run (e.g. --setup alone).");
ABSL_FLAG(int32_t, warmup_s, 2, "Seconds of load before the measured window (not counted).");
// ---- Workload ----
ABSL_FLAG(uint64_t, accounts, 100'000, "Accounts used: ids first_account .. first_account + accounts - 1.");
ABSL_FLAG(uint64_t, first_account, 1, "The first account id.");
ABSL_FLAG(std::string, skew, "uniform",
          "Which accounts carry the traffic: uniform | zipf (--zipf_theta; id first_account hottest) | hot "
          "(--hot_share of draws to the --hot_accounts first ids).");
ABSL_FLAG(double, zipf_theta, 0.99, "Zipf exponent (> 0): P(rank k) ~ 1 / (k+1)^theta.");
ABSL_FLAG(double, hot_share, 0.9, "--skew=hot: share of account draws that go to the hot set.");
ABSL_FLAG(uint64_t, hot_accounts, 100, "--skew=hot: size of the hot set (the first ids).");
ABSL_FLAG(double, cross_shard_share, -1,
          "Share of transfers between accounts on different shards (0..1); needs the map (--zk/--cluster or "
          "--partition_map). < 0: not controlled (both ends drawn independently).");
ABSL_FLAG(double, tcc_share, -1,
          "Share of cross-shard transfers sent MODE tcc (0..1); the others MODE saga. < 0: no MODE (the "
          "router's default). Without a map it applies to every transfer (MODE is ignored within a shard).");
ABSL_FLAG(std::string, currency, "USD", "Currency of every account and transfer (three letters).");
ABSL_FLAG(std::string, amount, "1-100", "Transfer amount in minor units: MIN-MAX (uniform) or N.");
ABSL_FLAG(int64_t, initial_balance, 1'000'000, "What --setup deposits into each empty account.");
ABSL_FLAG(uint64_t, seed, 0, "Random seed (0: from the clock). Thread k uses seed + k.");
// ---- Phases ----
ABSL_FLAG(bool, setup, false, "Open and fund the accounts first (idempotent; see the file comment).");
ABSL_FLAG(bool, audit, false, "At the end: wait for no transaction in doubt, sum every balance, compare with the deposits.");
ABSL_FLAG(int32_t, setup_in_flight, 1'024,
          "--setup and --audit: accounts in progress at once per thread (each is a chain of calls).");
ABSL_FLAG(int32_t, audit_wait_s, 60, "--audit: how long to wait for TX.INDOUBT to be empty.");
ABSL_FLAG(int64_t, expected_total, -1,
          "--audit: the expected sum of balances (default: accounts x --initial_balance).");
// ---- Client ----
ABSL_FLAG(int64_t, call_timeout_ms, 5'000, "The client's wait for one reply before it retries (same txid).");
ABSL_FLAG(int32_t, max_attempts, 4, "The client's sends per call (first + retries), 1-100.");
ABSL_FLAG(int64_t, connect_timeout_ms, 1'000, "The client's TCP connect + AUTH timeout.");
ABSL_FLAG(uint64_t, max_in_flight, 100'000, "The client's bound on outstanding async calls, per thread.");
// ---- Output and self test ----
ABSL_FLAG(std::string, json_out, "", "Write the result as JSON (schema wallet-loadgen/1) to this file.");
ABSL_FLAG(bool, progress, true, "Print a progress line every second (stderr).");
ABSL_FLAG(bool, self_test_server, false,
          "Start a trivial in-process RESP server (answers +OK to anything) and, without --routers, drive "
          "it: the generator's own ceiling.");
ABSL_FLAG(int32_t, self_test_port, 0, "Port of --self_test_server (0: a free one).");

namespace {

using wallet::StrAppend;
using wallet::StrCat;
using wallet::client::Client;
using wallet::client::Reply;
using wallet::client::TransferMode;
using wallet::client::TransferRequest;
using wallet::loadgen::LatencyHistogram;
using wallet::loadgen::Mode;
using wallet::loadgen::RateController;
using wallet::loadgen::Rng;
using wallet::loadgen::Transfer;
using wallet::loadgen::Workload;

// CPU time (user + system) of this process, in nanoseconds.
int64_t ProcessCpuNs() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (static_cast<int64_t>(usage.ru_utime.tv_sec) + usage.ru_stime.tv_sec) * 1'000'000'000 +
         (static_cast<int64_t>(usage.ru_utime.tv_usec) + usage.ru_stime.tv_usec) * 1'000;
}

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void SleepUntilNs(int64_t deadline_ns) {
  struct timespec ts;
  ts.tv_sec = deadline_ns / 1'000'000'000;
  ts.tv_nsec = deadline_ns % 1'000'000'000;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

std::atomic<bool> g_interrupted{false};
extern "C" void OnInterrupt(int) { g_interrupted.store(true); }

// 1234567 → "1,234,567".
std::string Thousands(uint64_t value) {
  std::string digits = std::to_string(value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string Ms(uint64_t ns) {
  char buffer[64];
  snprintf(buffer, sizeof(buffer), "%.2f ms", static_cast<double>(ns) / 1e6);
  return buffer;
}
double Us(double ns) { return std::round(ns / 100.0) / 10.0; }  // µs with one decimal

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buffer[8];
          snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out.push_back(c);
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  if (value == std::floor(value) && std::fabs(value) < 9e15) return std::to_string(static_cast<int64_t>(value));
  char buffer[64];
  snprintf(buffer, sizeof(buffer), "%.6g", value);
  return buffer;
}

TransferMode ToClientMode(Mode mode) {
  switch (mode) {
    case Mode::kTcc: return TransferMode::kTcc;
    case Mode::kSaga: return TransferMode::kSaga;
    case Mode::kDefault: break;
  }
  return TransferMode::kDefault;
}

// Errors by code, in a stable order.
using ErrorCounts = std::map<std::string, uint64_t>;

std::string ErrorsText(const ErrorCounts& errors) {
  std::string out;
  for (const auto& [code, count] : errors) StrAppend(&out, out.empty() ? "" : ", ", code, " ", Thousands(count));
  return out;
}

// What the completions of a stretch of time add up to.
struct Tally {
  LatencyHistogram latency;  // ns, every transfer answered (ok or not)
  uint64_t ok = 0, rejected = 0, retryable = 0, protocol = 0;
  ErrorCounts errors;
  void Add(const Reply& reply, uint64_t latency_ns) {
    latency.Record(latency_ns);
    switch (reply.kind) {
      case Reply::Kind::kOk: ++ok; return;
      case Reply::Kind::kRejected: ++rejected; break;
      case Reply::Kind::kRetry: ++retryable; break;
      case Reply::Kind::kProtocol: ++protocol; break;
    }
    ++errors[ErrorCode(reply)];
  }
  // The reply's code; CLIENT_BUSY when the client library refused the call before
  // sending it (its max_in_flight or its I/O queue was full): the generator, not the
  // cluster, is overloaded.
  static std::string ErrorCode(const Reply& reply) {
    if (reply.code.empty()) return "UNKNOWN";
    if (reply.code == "BUSY" && reply.attempts == 0) return "CLIENT_BUSY";
    return reply.code;
  }
  void Merge(const Tally& other) {
    latency.Merge(other.latency);
    ok += other.ok;
    rejected += other.rejected;
    retryable += other.retryable;
    protocol += other.protocol;
    for (const auto& [code, count] : other.errors) errors[code] += count;
  }
  uint64_t answered() const { return ok + rejected + retryable + protocol; }
};

// The run's shared settings.
struct RunPlan {
  bool open_loop = false;
  double rate = 0;             // open loop, transfers/s over all threads
  int64_t t0 = 0;              // start of the warm-up
  int64_t measure_start = 0;   // t0 + warm-up
  std::atomic<int64_t> measure_end{0};  // + duration (moved earlier on SIGINT, by the main thread)
  int batch = 1;
  size_t window_per_client = 0;  // closed loop: calls in flight per thread
  int64_t late_threshold_ns = 0;
  std::string currency;
  std::string txid_prefix;
};

// One worker thread: its Client, its random stream, its counts.
class Worker {
 public:
  Worker(int index, std::unique_ptr<Client> client, const Workload* workload, const RunPlan* plan, uint64_t seed)
      : index_(index), client_(std::move(client)), workload_(workload), plan_(plan), rng_(seed) {
    interval_ = std::make_unique<Tally>();
  }
  ~Worker() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    client_.reset();  // answers what is still in flight before the counts go
  }

  Client& client() { return *client_; }
  int index() const { return index_; }

  // ---- Run ----
  void StartRun() {
    if (plan_->open_loop) {
      thread_ = std::thread([this] { OpenLoop(); });
    } else {
      for (size_t i = 0; i < plan_->window_per_client; ++i) Issue(NowNs());
    }
  }
  void StopIssuing() { stop_.store(true); }
  bool sending_done() const { return !plan_->open_loop || open_loop_done_.load(); }
  void JoinSender() {
    if (thread_.joinable()) thread_.join();
  }
  int64_t outstanding() const { return outstanding_.load(); }

  // Hands the completions since the last call over (progress lines).
  std::unique_ptr<Tally> TakeInterval(std::unique_ptr<Tally> fresh) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::swap(interval_, fresh);
    return fresh;
  }
  void MergeMeasured(Tally* total, uint64_t* sent, uint64_t* cross, uint64_t* same, uint64_t modes[3]) {
    std::lock_guard<std::mutex> lock(mutex_);
    total->Merge(measured_);
    *sent += measured_sent_;
    *cross += cross_sent_;
    *same += same_sent_;
    for (int i = 0; i < 3; ++i) modes[i] += mode_sent_[i];
  }
  // Open loop: the schedule's view of the sender.
  uint64_t late() const { return late_.load(); }
  int64_t max_lag_ns() const { return max_lag_ns_.load(); }
  uint64_t scheduled() const { return scheduled_.load(); }
  int64_t backlog_ns() const { return backlog_ns_.load(); }

 private:
  // The client request for a drawn transfer, with this worker's next txid (call
  // with draw_mutex_ held: it advances the sequence).
  TransferRequest NextRequest(const Transfer& t) {
    TransferRequest request;
    request.from = t.from;
    request.to = t.to;
    request.amount = t.amount;
    request.currency = plan_->currency;
    request.txid = StrCat(plan_->txid_prefix, index_, "-", ++sequence_);
    request.mode = ToClientMode(t.mode);
    return request;
  }

  // Starts one call (a transfer or a batch) that started, or should have, at start_ns.
  void Issue(int64_t start_ns) {
    const bool measured = start_ns >= plan_->measure_start && start_ns < plan_->measure_end;
    outstanding_.fetch_add(1);
    // The random stream and the sequence: the first calls of a closed loop are
    // started here while replies to them may already start more on the I/O thread.
    std::unique_lock<std::mutex> draw(draw_mutex_);
    if (plan_->batch == 1) {
      const Transfer t = workload_->Next(rng_);
      CountSent(t, measured, 1);
      TransferRequest request = NextRequest(t);
      draw.unlock();
      client_->TransferAsync(std::move(request),
                             [this, start_ns, measured](const Reply& reply) { Done(start_ns, measured, &reply, 1); });
    } else {
      workload_->NextBatch(rng_, static_cast<size_t>(plan_->batch), &batch_scratch_);
      std::vector<TransferRequest> requests;
      requests.reserve(batch_scratch_.size());
      for (const Transfer& t : batch_scratch_) {
        CountSent(t, measured, 1);
        requests.push_back(NextRequest(t));
      }
      draw.unlock();
      client_->TransferBatchAsync(std::move(requests), [this, start_ns, measured](std::vector<Reply> replies) {
        Done(start_ns, measured, replies.data(), replies.size());
      });
    }
  }

  void CountSent(const Transfer& t, bool measured, uint64_t n) {
    if (!measured) return;
    std::lock_guard<std::mutex> lock(mutex_);
    measured_sent_ += n;
    if (t.cross == 1) cross_sent_ += n;
    if (t.cross == 0) same_sent_ += n;
    ++mode_sent_[static_cast<int>(t.mode)];
  }

  // A call's replies (one per transfer). Runs on the client's I/O thread (or on the
  // caller's thread when the client refused the call at once).
  void Done(int64_t start_ns, bool measured, const Reply* replies, size_t count) {
    const int64_t now = NowNs();
    const uint64_t latency = static_cast<uint64_t>(std::max<int64_t>(0, now - start_ns));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = 0; i < count; ++i) {
        interval_->Add(replies[i], latency);
        if (measured) measured_.Add(replies[i], latency);
      }
    }
    // Closed loop: the next call, from this callback. Not once stopping (the client's
    // own "client closing" answers come synchronously and must not loop).
    if (!plan_->open_loop && !stop_.load() && now < plan_->measure_end) Issue(now);
    outstanding_.fetch_sub(1);
  }

  void OpenLoop() {
    // Thread k's schedule is offset by k / rate, so the threads' requests interleave
    // into one even stream of `rate` transfers per second.
    const double calls_per_s_all = plan_->rate / plan_->batch;
    const double per_thread = calls_per_s_all / static_cast<double>(thread_count_);
    const int64_t offset = static_cast<int64_t>(1e9 * index_ / calls_per_s_all);
    RateController schedule(plan_->t0 + offset, per_thread, plan_->late_threshold_ns);
    for (;;) {
      const int64_t due = schedule.NextDue();
      if (due >= plan_->measure_end || stop_.load()) break;
      const int64_t now = NowNs();
      if (now < due) {
        SleepUntilNs(std::min(due, now + 50'000'000));  // wake at least every 50 ms to see stop_
        continue;
      }
      const uint64_t first = schedule.next_index();
      const uint64_t n = schedule.TakeDue(now, 32);
      for (uint64_t i = 0; i < n; ++i) {
        const int64_t intended = schedule.IntendedTime(first + i);
        if (intended >= plan_->measure_end) break;
        Issue(intended);
      }
      scheduled_.store(schedule.taken());
      late_.store(schedule.late());
      max_lag_ns_.store(schedule.max_lag_ns());
      backlog_ns_.store(schedule.BacklogNs(NowNs()));
    }
    scheduled_.store(schedule.taken());
    late_.store(schedule.late());
    max_lag_ns_.store(schedule.max_lag_ns());
    backlog_ns_.store(0);
    open_loop_done_.store(true);
  }

 public:
  int thread_count_ = 1;  // set by main before StartRun

 private:
  const int index_;
  std::unique_ptr<Client> client_;
  const Workload* workload_;
  const RunPlan* plan_;
  std::mutex draw_mutex_;  // guards the three below
  Rng rng_;
  uint64_t sequence_ = 0;
  std::vector<Transfer> batch_scratch_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> open_loop_done_{false};
  std::atomic<int64_t> outstanding_{0};
  std::atomic<uint64_t> late_{0}, scheduled_{0};
  std::atomic<int64_t> max_lag_ns_{0}, backlog_ns_{0};

  std::mutex mutex_;
  std::unique_ptr<Tally> interval_;  // guarded by mutex_
  Tally measured_;                   // guarded by mutex_
  uint64_t measured_sent_ = 0, cross_sent_ = 0, same_sent_ = 0;
  uint64_t mode_sent_[3] = {0, 0, 0};
};

// Runs step(client, offset, finish) for every offset in [begin, end) with at most `window`
// steps at once; each step calls finish() exactly once (from a client callback).
class Sweep {
 public:
  using Step = std::function<void(Client& client, uint64_t offset, std::function<void()> finish)>;
  Sweep(Client* client, uint64_t begin, uint64_t end, size_t window, Step step)
      : client_(client), end_(end), window_(window), step_(std::move(step)), next_(begin), total_(end - begin) {}
  void Start() {
    for (size_t i = 0; i < window_; ++i) Next();
  }
  bool done() const { return finished_.load() >= total_; }
  uint64_t finished() const { return finished_.load(); }

 private:
  void Next() {
    const uint64_t offset = next_.fetch_add(1);
    if (offset >= end_) return;
    step_(*client_, offset, [this] {
      Next();
      finished_.fetch_add(1);  // last: once all are finished the sweep may be destroyed
    });
  }
  Client* client_;
  const uint64_t end_;
  const size_t window_;
  Step step_;
  std::atomic<uint64_t> next_;
  const uint64_t total_;
  std::atomic<uint64_t> finished_{0};
};

// Counts shared by the setup's and the audit's callbacks.
struct SweepCounts {
  std::atomic<uint64_t> opened{0}, already_funded{0}, deposited{0}, failed{0};
  std::atomic<int64_t> sum_available{0}, sum_held{0};
  std::atomic<uint64_t> read{0}, unknown{0}, other_currency{0}, read_errors{0};
  std::mutex mutex;
  ErrorCounts errors;        // guarded by mutex
  std::string first_error;   // guarded by mutex
  void Error(const std::string& what, const Reply& reply) {
    std::lock_guard<std::mutex> lock(mutex);
    ++errors[reply.code.empty() ? std::string("UNKNOWN") : reply.code];
    if (first_error.empty()) first_error = StrCat(what, ": ", reply.ToString());
  }
};

// Runs sweeps over [0, accounts) split between the workers, printing progress.
void RunSweeps(std::vector<std::unique_ptr<Worker>>& workers, uint64_t accounts, size_t window, const Sweep::Step& step,
               const char* what, bool progress) {
  std::vector<std::unique_ptr<Sweep>> sweeps;
  const uint64_t per = accounts / workers.size();
  for (size_t i = 0; i < workers.size(); ++i) {
    const uint64_t begin = i * per;
    const uint64_t end = i + 1 == workers.size() ? accounts : begin + per;
    sweeps.push_back(std::make_unique<Sweep>(&workers[i]->client(), begin, end, window, step));
  }
  const int64_t start = NowNs();
  for (auto& sweep : sweeps) sweep->Start();
  int64_t next_tick = start + 1'000'000'000;
  uint64_t last_done = 0;
  for (;;) {
    bool all_done = true;
    uint64_t done = 0;
    for (auto& sweep : sweeps) {
      all_done = all_done && sweep->done();
      done += sweep->finished();
    }
    if (all_done) break;
    const int64_t now = NowNs();
    if (now >= next_tick) {
      if (progress) {
        fprintf(stderr, "[%s %3" PRId64 "s] %s of %s accounts (%s/s)\n", what, (now - start) / 1'000'000'000,
                Thousands(done).c_str(), Thousands(accounts).c_str(), Thousands(done - last_done).c_str());
      }
      last_done = done;
      next_tick += 1'000'000'000;
    }
    SleepUntilNs(std::min(next_tick, NowNs() + 5'000'000));
  }
}

// ---- Setup and audit steps ----

void SetupStep(Client& client, uint64_t account, const std::string& currency, int64_t initial_balance,
               SweepCounts* counts, std::function<void()> finish) {
  client.OpenAsync(account, currency, [&client, account, currency, initial_balance, counts,
                                       finish = std::move(finish)](const Reply& opened) {
    if (!opened.ok()) {
      counts->Error(StrCat("OPEN ", account), opened);
      counts->failed.fetch_add(1);
      finish();
      return;
    }
    counts->opened.fetch_add(1);
    client.GetBalanceAsync(account, [&client, account, currency, initial_balance, counts, finish](
                                        const Reply& read, const wallet::client::Balance& balance) {
      if (!read.ok()) {
        counts->Error(StrCat("BALANCE ", account), read);
        counts->failed.fetch_add(1);
        finish();
        return;
      }
      if (balance.available != 0 || balance.held != 0) {
        counts->already_funded.fetch_add(1);
        finish();
        return;
      }
      std::string txid = StrCat("lgfund-", account, "-", currency, "-", initial_balance);
      client.DepositAsync(account, initial_balance, std::move(txid), [account, counts, finish](const Reply& deposit) {
        if (deposit.ok()) {
          counts->deposited.fetch_add(1);
        } else {
          counts->Error(StrCat("DEPOSIT ", account), deposit);
          counts->failed.fetch_add(1);
        }
        finish();
      });
    });
  });
}

void AuditStep(Client& client, uint64_t account, const std::string& currency, SweepCounts* counts,
               std::function<void()> finish) {
  client.GetBalanceAsync(account, [account, currency, counts, finish = std::move(finish)](
                                      const Reply& read, const wallet::client::Balance& balance) {
    if (read.ok()) {
      counts->read.fetch_add(1);
      counts->sum_available.fetch_add(balance.available);
      counts->sum_held.fetch_add(balance.held);
      if (balance.currency != currency) counts->other_currency.fetch_add(1);
    } else if (read.code == "UNKNOWN_ACCOUNT") {
      counts->unknown.fetch_add(1);
    } else {
      counts->Error(StrCat("BALANCE ", account), read);
      counts->read_errors.fetch_add(1);
    }
    finish();
  });
}

// TX.INDOUBT through any router (hiredis, synchronous): the number of transactions
// in doubt, or −1 with *error when no router gave a list.
int64_t CountInDoubt(const std::vector<std::string>& routers, const std::string& password, std::string* error) {
  for (const std::string& router : routers) {
    const size_t colon = router.rfind(':');
    std::string host = router.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    const int port = atoi(router.c_str() + colon + 1);
    struct timeval timeout = {2, 0};
    redisContext* c = redisConnectWithTimeout(host.c_str(), port, timeout);
    if (c == nullptr || c->err) {
      *error = StrCat(router, ": ", c == nullptr ? "cannot connect" : c->errstr);
      if (c != nullptr) redisFree(c);
      continue;
    }
    redisSetTimeout(c, {10, 0});
    if (!password.empty()) {
      auto* auth = static_cast<redisReply*>(redisCommand(c, "AUTH %s", password.c_str()));
      const bool ok = auth != nullptr && auth->type != REDIS_REPLY_ERROR;
      if (auth != nullptr) freeReplyObject(auth);
      if (!ok) {
        *error = StrCat(router, ": AUTH refused");
        redisFree(c);
        continue;
      }
    }
    auto* reply = static_cast<redisReply*>(redisCommand(c, "TX.INDOUBT 0 COUNT 10000"));
    int64_t count = -1;
    if (reply == nullptr) {
      *error = StrCat(router, ": ", c->errstr);
    } else if (reply->type == REDIS_REPLY_ARRAY) {
      count = static_cast<int64_t>(reply->elements);
    } else {
      *error = StrCat(router, ": ", reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    }
    if (reply != nullptr) freeReplyObject(reply);
    redisFree(c);
    if (count >= 0) return count;
  }
  return -1;
}

bool ParseAmountRange(const std::string& text, int64_t* min, int64_t* max) {
  const size_t dash = text.find('-');
  auto parse = [](std::string_view part, int64_t* out) {
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), *out);
    return ec == std::errc() && end == part.data() + part.size() && !part.empty();
  };
  if (dash == std::string::npos) {
    if (!parse(text, min)) return false;
    *max = *min;
    return true;
  }
  return parse(std::string_view(text).substr(0, dash), min) && parse(std::string_view(text).substr(dash + 1), max);
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Every account's shard index from the partition map.
std::shared_ptr<const wallet::loadgen::ShardLayout> LayoutFromMap(const wallet::cluster::PartitionMap& map,
                                                                  uint64_t first_account, uint64_t accounts) {
  const std::vector<std::string> ids = map.ShardIds();
  std::vector<uint16_t> owner_of_partition(map.partition_count());
  for (uint32_t p = 0; p < map.partition_count(); ++p) {
    owner_of_partition[p] =
        static_cast<uint16_t>(std::find(ids.begin(), ids.end(), map.OwnerOf(p)) - ids.begin());
  }
  std::vector<uint16_t> shard_of(accounts);
  for (uint64_t offset = 0; offset < accounts; ++offset) {
    shard_of[offset] = owner_of_partition[wallet::PartitionOf(first_account + offset, map.partition_count())];
  }
  return std::make_shared<wallet::loadgen::ShardLayout>(std::move(shard_of), static_cast<uint32_t>(ids.size()));
}

struct SetupResult {
  uint64_t accounts = 0, opened = 0, already_funded = 0, deposited = 0, failed = 0;
  double seconds = 0;
  ErrorCounts errors;
  std::string first_error;
};

struct AuditResult {
  double in_doubt_wait_s = 0;
  int64_t in_doubt_left = -1;
  std::string in_doubt_error;
  uint64_t accounts_read = 0, unknown_accounts = 0, other_currency = 0, read_errors = 0;
  int64_t sum_available = 0, sum_held = 0, expected = 0;
  std::string expected_source;
  bool conserved = false, quiet = false, passed = false;
  std::string first_error;
};

}  // namespace

int main(int argc, char** argv) {
  wallet::SetUpFlagsUsage(
      "loadgen/main.cc",
      "drives a wallet cluster through its routers (closed or open loop) and reports throughput, latency "
      "percentiles and errors.\n"
      "Usage: wallet-loadgen --routers=HOST:PORT[,...] [--setup] [--duration_s=10] [--rate=R] [--audit] "
      "[--json_out=FILE] ...\n"
      "Details: the comment at the top of benchmarks/loadgen/main.cc and benchmarks/README.md.");
  absl::ParseCommandLine(argc, argv);

  // ---- Flags ----
  const int threads = absl::GetFlag(FLAGS_threads);
  const int connections = absl::GetFlag(FLAGS_connections);
  const int pipeline = absl::GetFlag(FLAGS_pipeline);
  const int batch = absl::GetFlag(FLAGS_batch);
  const int duration_s = absl::GetFlag(FLAGS_duration_s);
  const int warmup_s = absl::GetFlag(FLAGS_warmup_s);
  const double rate = absl::GetFlag(FLAGS_rate);
  const std::string currency = absl::GetFlag(FLAGS_currency);
  const int64_t initial_balance = absl::GetFlag(FLAGS_initial_balance);
  auto usage_error = [](const std::string& message) {
    fprintf(stderr, "wallet-loadgen: %s\n", message.c_str());
    return 2;
  };
  if (threads < 1 || threads > 256) return usage_error("--threads must be 1-256");
  if (connections < 1 || connections > 64) return usage_error("--connections must be 1-64");
  if (pipeline < 1 || pipeline > 100'000) return usage_error("--pipeline must be 1-100000");
  if (batch < 1 || batch > 10'000) return usage_error("--batch must be 1-10000");
  if (duration_s < 0 || warmup_s < 0) return usage_error("--duration_s and --warmup_s must be >= 0");
  if (rate < 0 || !std::isfinite(rate)) return usage_error("--rate must be >= 0");
  if (currency.size() != 3 || !std::all_of(currency.begin(), currency.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return usage_error("--currency must be three upper-case letters");
  }
  if (initial_balance < 1) return usage_error("--initial_balance must be >= 1");
  const int setup_in_flight = absl::GetFlag(FLAGS_setup_in_flight);
  if (setup_in_flight < 1 || setup_in_flight > 100'000) return usage_error("--setup_in_flight must be 1-100000");

  wallet::loadgen::WorkloadOptions wo;
  wo.first_account = absl::GetFlag(FLAGS_first_account);
  wo.accounts = absl::GetFlag(FLAGS_accounts);
  const std::string skew = absl::GetFlag(FLAGS_skew);
  if (skew == "uniform") {
    wo.skew = wallet::loadgen::Skew::kUniform;
  } else if (skew == "zipf") {
    wo.skew = wallet::loadgen::Skew::kZipf;
  } else if (skew == "hot") {
    wo.skew = wallet::loadgen::Skew::kHot;
  } else {
    return usage_error("--skew must be uniform, zipf or hot");
  }
  wo.zipf_theta = absl::GetFlag(FLAGS_zipf_theta);
  wo.hot_share = absl::GetFlag(FLAGS_hot_share);
  wo.hot_accounts = absl::GetFlag(FLAGS_hot_accounts);
  wo.cross_shard_share = absl::GetFlag(FLAGS_cross_shard_share);
  wo.tcc_share = absl::GetFlag(FLAGS_tcc_share);
  if (!ParseAmountRange(absl::GetFlag(FLAGS_amount), &wo.amount_min, &wo.amount_max)) {
    return usage_error("--amount must be MIN-MAX or N (minor units)");
  }
  std::string password;
  if (const std::string file = absl::GetFlag(FLAGS_password_file); !file.empty()) {
    absl::StatusOr<std::string> read = wallet::ReadPasswordFile(file);
    if (!read.ok()) return usage_error(StrCat("cannot read a password from --password_file=", file));
    password = *read;
  }
  uint64_t seed = absl::GetFlag(FLAGS_seed);
  if (seed == 0) seed = static_cast<uint64_t>(NowNs()) | 1;

  // ---- Self-test server ----
  std::unique_ptr<wallet::loadgen::TrivialRespServer> self_test;
  std::vector<std::string> routers = SplitList(absl::GetFlag(FLAGS_routers));
  if (absl::GetFlag(FLAGS_self_test_server)) {
    const int port = absl::GetFlag(FLAGS_self_test_port);
    if (port < 0 || port > 65535) return usage_error("--self_test_port must be 0-65535");
    auto started = wallet::loadgen::TrivialRespServer::Start(static_cast<uint16_t>(port));
    if (!started.ok()) {
      fprintf(stderr, "wallet-loadgen: cannot start the self-test server: %s\n",
              std::string(started.status().message()).c_str());
      return 3;
    }
    self_test = *std::move(started);
    fprintf(stderr, "self-test server (answers +OK to anything) on 127.0.0.1:%u\n", self_test->port());
    if (routers.empty()) routers.push_back(StrCat("127.0.0.1:", self_test->port()));
  }

  // ---- Partition map (and routers) from ZooKeeper or a file ----
  std::optional<wallet::cluster::PartitionMap> map;
  std::string map_source;
  const std::string zk = absl::GetFlag(FLAGS_zk);
  const std::string map_file = absl::GetFlag(FLAGS_partition_map);
  if (!zk.empty() && !map_file.empty()) return usage_error("give --zk/--cluster or --partition_map, not both");
  if (!zk.empty()) {
    const std::string cluster = absl::GetFlag(FLAGS_cluster);
    if (cluster.empty()) return usage_error("--zk needs --cluster");
    if (absl::Status valid = wallet::cluster::ValidateName("cluster name", cluster); !valid.ok()) {
      return usage_error(std::string(valid.message()));
    }
    wallet::cluster::ZkClientOptions zk_options;
    zk_options.connect_string = zk;
    zk_options.connect_timeout_ms = 10'000;
    auto client = wallet::cluster::ZkClient::Connect(zk_options);
    if (!client.ok()) {
      fprintf(stderr, "wallet-loadgen: cannot reach ZooKeeper %s: %s\n", zk.c_str(),
              std::string(client.status().message()).c_str());
      return 3;
    }
    auto layout = wallet::cluster::ReadLayout(**client, cluster);
    if (!layout.ok()) {
      fprintf(stderr, "wallet-loadgen: cannot read cluster %s: %s\n", cluster.c_str(),
              std::string(layout.status().message()).c_str());
      return 3;
    }
    map = layout->map.map;
    map_source = StrCat("zookeeper ", zk, " /wallet/", cluster, "/map version ", layout->map.version);
    if (routers.empty()) {
      for (const auto& [id, address] : layout->routers) routers.push_back(address);
      if (routers.empty()) {
        fprintf(stderr, "wallet-loadgen: no live router registered in cluster %s\n", cluster.c_str());
        return 3;
      }
    }
  } else if (!map_file.empty()) {
    std::ifstream in(map_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return usage_error(StrCat("cannot read --partition_map=", map_file));
    auto parsed = wallet::cluster::PartitionMap::Parse(text.str());
    if (!parsed.ok()) return usage_error(StrCat("--partition_map: ", std::string(parsed.status().message())));
    map = *std::move(parsed);
    map_source = StrCat("file ", map_file);
  }
  if (routers.empty()) return usage_error("--routers is required (or --zk/--cluster, or --self_test_server)");
  std::shared_ptr<const wallet::loadgen::ShardLayout> layout;
  if (map.has_value()) {
    if (map->ShardIds().size() > 65535) return usage_error("the map names more than 65535 shards");
    if (wo.accounts > UINT32_MAX) return usage_error("with a partition map, --accounts must be below 2^32");
    layout = LayoutFromMap(*map, wo.first_account, wo.accounts);
  }
  if (std::string problem = Workload::Validate(wo, layout.get()); !problem.empty()) return usage_error(problem);
  const Workload workload(wo, layout);

  // ---- Clients ----
  const size_t window = static_cast<size_t>(routers.size()) * connections * pipeline;
  const uint64_t max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  if (rate == 0 && window > max_in_flight) {
    return usage_error(StrCat("routers x --connections x --pipeline (", window, ") exceeds --max_in_flight"));
  }
  wallet::client::ClientOptions client_options;
  client_options.endpoints = routers;
  client_options.password = password;
  client_options.connections_per_endpoint = connections;
  client_options.call_timeout_ms = absl::GetFlag(FLAGS_call_timeout_ms);
  client_options.connect_timeout_ms = absl::GetFlag(FLAGS_connect_timeout_ms);
  client_options.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  client_options.max_in_flight = max_in_flight;

  RunPlan plan;
  plan.open_loop = rate > 0;
  plan.rate = rate;
  plan.batch = batch;
  plan.window_per_client = window;
  plan.late_threshold_ns = absl::GetFlag(FLAGS_late_threshold_us) * 1'000;
  plan.currency = currency;
  {
    // Unique per run: the clock in base 36 and 20 random bits.
    uint64_t id = static_cast<uint64_t>(time(nullptr)) * 1'048'576 + (Rng(seed ^ NowNs()).Next() & 0xFFFFF);
    std::string text;
    do {
      text.insert(text.begin(), "0123456789abcdefghijklmnopqrstuvwxyz"[id % 36]);
      id /= 36;
    } while (id > 0);
    plan.txid_prefix = StrCat("lg", text, "-");
  }
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; ++i) {
    auto client = Client::Create(client_options);
    if (!client.ok()) return usage_error(StrCat("client: ", std::string(client.status().message())));
    workers.push_back(std::make_unique<Worker>(i, *std::move(client), &workload, &plan, seed + static_cast<uint64_t>(i)));
    workers.back()->thread_count_ = threads;
  }
  // One call first, so a cluster that cannot be reached is said at once.
  if (Reply ping = workers[0]->client().Ping(); !ping.ok()) {
    fprintf(stderr, "wallet-loadgen: the routers (%s) do not answer PING: %s\n",
            absl::GetFlag(FLAGS_routers).empty() ? routers[0].c_str() : absl::GetFlag(FLAGS_routers).c_str(),
            ping.ToString().c_str());
    return 3;
  }
  signal(SIGINT, OnInterrupt);
  signal(SIGTERM, OnInterrupt);
  const bool progress = absl::GetFlag(FLAGS_progress);

  std::string describe = StrCat(plan.open_loop ? StrCat("open loop at ", Thousands(static_cast<uint64_t>(rate)), " transfers/s")
                                               : StrCat("closed loop, ", window * threads, " calls in flight"),
                                ", ", threads, " thread(s) x ", routers.size(), " router(s) x ", connections,
                                " connection(s)", plan.open_loop ? "" : StrCat(" x pipeline ", pipeline),
                                batch > 1 ? StrCat(", TRANSFER.BATCH of ", batch) : std::string(", single TRANSFERs"),
                                "; ", Thousands(wo.accounts), " accounts (", wo.first_account, "..",
                                wo.first_account + wo.accounts - 1, ") ", wallet::loadgen::SkewName(wo.skew));
  if (wo.skew == wallet::loadgen::Skew::kZipf) StrAppend(&describe, " theta ", wo.zipf_theta);
  if (wo.skew == wallet::loadgen::Skew::kHot) {
    StrAppend(&describe, " (", wo.hot_share * 100, "% to ", wo.hot_accounts, " hot)");
  }
  if (wo.cross_shard_share >= 0) StrAppend(&describe, ", cross-shard share ", wo.cross_shard_share);
  if (wo.tcc_share >= 0) StrAppend(&describe, ", tcc share ", wo.tcc_share);
  StrAppend(&describe, ", amounts ", wo.amount_min, "-", wo.amount_max, " ", currency);

  // ---- Setup ----
  std::optional<SetupResult> setup;
  int exit_status = 0;
  if (absl::GetFlag(FLAGS_setup)) {
    SweepCounts counts;
    const int64_t start = NowNs();
    const uint64_t first = wo.first_account;
    RunSweeps(workers, wo.accounts, static_cast<size_t>(setup_in_flight),
              [&](Client& client, uint64_t offset, std::function<void()> finish) {
                SetupStep(client, first + offset, currency, initial_balance, &counts, std::move(finish));
              },
              "setup", progress);
    SetupResult result;
    result.accounts = wo.accounts;
    result.opened = counts.opened;
    result.already_funded = counts.already_funded;
    result.deposited = counts.deposited;
    result.failed = counts.failed;
    result.seconds = static_cast<double>(NowNs() - start) / 1e9;
    result.errors = counts.errors;
    result.first_error = counts.first_error;
    printf("setup: %s accounts in %.1f s: %s funded now with %s %s each, %s already held money, %s failed%s\n",
           Thousands(result.accounts).c_str(), result.seconds, Thousands(result.deposited).c_str(),
           Thousands(static_cast<uint64_t>(initial_balance)).c_str(), currency.c_str(),
           Thousands(result.already_funded).c_str(), Thousands(result.failed).c_str(),
           result.failed > 0 ? StrCat(" (", ErrorsText(result.errors), "; first: ", result.first_error, ")").c_str()
                              : "");
    if (result.failed > 0) exit_status = 1;
    setup = result;
  }

  // ---- Run ----
  Tally total;
  uint64_t sent = 0, cross = 0, same = 0, modes[3] = {0, 0, 0}, late = 0, scheduled = 0;
  int64_t max_lag_ns = 0;
  double measured_s = duration_s;
  double generator_cores = -1;  // CPU cores the generator used over the whole run
  const bool ran = duration_s > 0 && !g_interrupted.load();
  if (ran) {
    printf("run: %s\n", describe.c_str());
    fflush(stdout);
    plan.t0 = NowNs() + 20'000'000;  // a moment for the open-loop threads to start
    plan.measure_start = plan.t0 + int64_t{warmup_s} * 1'000'000'000;
    plan.measure_end = plan.measure_start + int64_t{duration_s} * 1'000'000'000;
    const int64_t drain_limit_ns =
        (client_options.call_timeout_ms + 1'000) * 1'000'000 * client_options.max_attempts + 5'000'000'000;
    SleepUntilNs(plan.t0);
    const int64_t cpu_start = ProcessCpuNs();
    for (auto& worker : workers) worker->StartRun();
    int64_t tick = plan.t0 + 1'000'000'000;
    uint64_t last_late = 0;
    bool stopped = false;
    for (;;) {
      // Wait for the tick (or for the end of the drain, whichever first).
      for (;;) {
        const int64_t now = NowNs();
        if (g_interrupted.load() && !stopped && now < plan.measure_end) {
          // Ctrl-C: end the measured window now (the JSON says how long it was).
          plan.measure_end = std::max(plan.measure_start, now);
        }
        if (!stopped && now >= plan.measure_end) {
          for (auto& worker : workers) worker->StopIssuing();
          stopped = true;
        }
        bool drained = stopped;
        for (auto& worker : workers) drained = drained && worker->sending_done() && worker->outstanding() == 0;
        if (drained || now >= tick) break;
        SleepUntilNs(std::min(tick, now + 5'000'000));
      }
      Tally interval;
      for (auto& worker : workers) {
        std::unique_ptr<Tally> taken = worker->TakeInterval(std::make_unique<Tally>());
        interval.Merge(*taken);
      }
      int64_t in_flight = 0, backlog = 0;
      uint64_t late_now = 0;
      for (auto& worker : workers) {
        in_flight += worker->outstanding();
        late_now += worker->late();
        backlog = std::max(backlog, worker->backlog_ns());
      }
      const int64_t now = NowNs();
      const bool drained = stopped && in_flight == 0 &&
                           std::all_of(workers.begin(), workers.end(), [](auto& w) { return w->sending_done(); });
      if (progress && (interval.answered() > 0 || !drained)) {
        // The line covers (tick − 1 s, now]: the last one of a drain may be shorter.
        const int64_t from = tick - 1'000'000'000;
        const char* phase = from < plan.measure_start ? "warm-up" : (from >= plan.measure_end ? "drain" : "run");
        char elapsed[32];
        snprintf(elapsed, sizeof(elapsed), now >= tick ? "%.0fs" : "%.2fs", static_cast<double>(now - plan.t0) / 1e9);
        std::string line = StrCat("[", phase, " ", elapsed, "] ", Thousands(interval.ok),
                                  now >= tick ? " ok/s" : " ok", "  p50 ",
                                  Ms(interval.latency.ValueAtQuantile(0.5)), "  p99 ",
                                  Ms(interval.latency.ValueAtQuantile(0.99)), "  in flight ", Thousands(in_flight));
        if (interval.answered() > interval.ok) {
          StrAppend(&line, "  errors ", Thousands(interval.answered() - interval.ok), " (", ErrorsText(interval.errors), ")");
        }
        if (plan.open_loop) {
          StrAppend(&line, "  late sends ", Thousands(late_now - last_late), "  behind ", Ms(static_cast<uint64_t>(backlog)));
        }
        fprintf(stderr, "%s\n", line.c_str());
      }
      last_late = late_now;
      if (drained) break;
      if (stopped && now > plan.measure_end + drain_limit_ns) {
        fprintf(stderr, "wallet-loadgen: %" PRId64 " calls still unanswered %.0f s after the end; reporting without them\n",
                in_flight, static_cast<double>(drain_limit_ns) / 1e9);
        break;
      }
      tick += 1'000'000'000;
    }
    for (auto& worker : workers) worker->JoinSender();
    generator_cores = static_cast<double>(ProcessCpuNs() - cpu_start) / static_cast<double>(NowNs() - plan.t0);
    for (auto& worker : workers) {
      worker->MergeMeasured(&total, &sent, &cross, &same, modes);
      late += worker->late();
      scheduled += worker->scheduled();
      max_lag_ns = std::max(max_lag_ns, worker->max_lag_ns());
    }
    measured_s = static_cast<double>(plan.measure_end - plan.measure_start) / 1e9;
    if (measured_s <= 0) measured_s = 0;
  }

  // ---- Audit ----
  std::optional<AuditResult> audit;
  if (absl::GetFlag(FLAGS_audit)) {
    AuditResult result;
    const int64_t start = NowNs();
    const int64_t deadline = start + int64_t{absl::GetFlag(FLAGS_audit_wait_s)} * 1'000'000'000;
    for (;;) {
      result.in_doubt_left = CountInDoubt(routers, password, &result.in_doubt_error);
      if (result.in_doubt_left == 0 || NowNs() >= deadline || g_interrupted.load()) break;
      SleepUntilNs(NowNs() + 200'000'000);
    }
    result.in_doubt_wait_s = static_cast<double>(NowNs() - start) / 1e9;
    SweepCounts counts;
    const uint64_t first = wo.first_account;
    RunSweeps(workers, wo.accounts, static_cast<size_t>(setup_in_flight),
              [&](Client& client, uint64_t offset, std::function<void()> finish) {
                AuditStep(client, first + offset, currency, &counts, std::move(finish));
              },
              "audit", progress);
    result.accounts_read = counts.read;
    result.unknown_accounts = counts.unknown;
    result.other_currency = counts.other_currency;
    result.read_errors = counts.read_errors;
    result.sum_available = counts.sum_available;
    result.sum_held = counts.sum_held;
    result.first_error = counts.first_error;
    if (const int64_t expected = absl::GetFlag(FLAGS_expected_total); expected >= 0) {
      result.expected = expected;
      result.expected_source = "--expected_total";
    } else {
      result.expected = static_cast<int64_t>(wo.accounts) * initial_balance;
      result.expected_source = "accounts x --initial_balance (each account funded once by --setup)";
    }
    result.quiet = result.in_doubt_left == 0;
    result.conserved = result.read_errors == 0 && result.unknown_accounts == 0 &&
                       result.sum_available + result.sum_held == result.expected;
    result.passed = result.quiet && result.conserved && result.sum_held == 0 && result.other_currency == 0;
    if (!result.passed) exit_status = 1;
    audit = result;
  }

  // ---- Summary in words ----
  const double throughput = measured_s > 0 ? static_cast<double>(total.ok) / measured_s : 0;
  if (ran) {
    printf("measured %.1f s after a %d s warm-up: %s transfers OK = %s transfers/s", measured_s, warmup_s,
           Thousands(total.ok).c_str(), Thousands(static_cast<uint64_t>(throughput)).c_str());
    printf(" (%s sent in the window)\n", Thousands(sent).c_str());
    const LatencyHistogram& h = total.latency;
    printf("latency %s: p50 %s, p90 %s, p99 %s, p99.9 %s, max %s, mean %s\n",
           plan.open_loop ? "from each request's intended send time" : "from send to reply",
           Ms(h.ValueAtQuantile(0.5)).c_str(), Ms(h.ValueAtQuantile(0.9)).c_str(), Ms(h.ValueAtQuantile(0.99)).c_str(),
           Ms(h.ValueAtQuantile(0.999)).c_str(), Ms(h.max()).c_str(), Ms(static_cast<uint64_t>(h.mean())).c_str());
    if (total.answered() == total.ok) {
      printf("errors: none\n");
    } else {
      printf("errors: %s rejected, %s retryable (after the client's retries), %s protocol: %s\n",
             Thousands(total.rejected).c_str(), Thousands(total.retryable).c_str(), Thousands(total.protocol).c_str(),
             ErrorsText(total.errors).c_str());
    }
    if (layout != nullptr && sent > 0) {
      printf("cross-shard: %.1f%% of the transfers sent (map: %s)\n", 100.0 * static_cast<double>(cross) / static_cast<double>(sent),
             map_source.c_str());
    }
    if (wo.tcc_share >= 0) {
      printf("modes sent: tcc %s, saga %s, no MODE (same shard) %s\n", Thousands(modes[1]).c_str(),
             Thousands(modes[2]).c_str(), Thousands(modes[0]).c_str());
    }
    if (plan.open_loop) {
      const double achieved = measured_s > 0 ? static_cast<double>(sent) / measured_s : 0;
      if (late > 0) {
        printf("the generator FELL BEHIND: %s of %s calls sent more than %" PRId64 " us late (max lag %s); "
               "sent %.0f transfers/s of %.0f asked (their latency still counts from the intended time)\n",
               Thousands(late).c_str(), Thousands(scheduled).c_str(), absl::GetFlag(FLAGS_late_threshold_us),
               Ms(static_cast<uint64_t>(max_lag_ns)).c_str(), achieved, rate);
      } else {
        printf("the generator kept to the schedule: every call sent within %" PRId64 " us of its time (max lag %s)\n",
               absl::GetFlag(FLAGS_late_threshold_us), Ms(static_cast<uint64_t>(max_lag_ns)).c_str());
      }
    }
    printf("generator CPU: %.2f cores over the run (warm-up and drain included%s)\n", generator_cores,
           self_test != nullptr ? ", the in-process test server too" : "");
    if (self_test != nullptr) printf("self-test server answered %s commands\n", Thousands(self_test->commands()).c_str());
  }
  if (audit.has_value()) {
    const AuditResult& a = *audit;
    printf("audit: %s. %s accounts read: sum of balances %" PRId64 " (held %" PRId64 ") against %" PRId64
           " expected (%s), difference %" PRId64 "; transactions in doubt %s after %.1f s%s%s\n",
           a.passed ? "PASSED, money conserved" : "FAILED", Thousands(a.accounts_read).c_str(),
           a.sum_available + a.sum_held, a.sum_held, a.expected, a.expected_source.c_str(),
           a.sum_available + a.sum_held - a.expected,
           a.in_doubt_left < 0 ? "unknown" : std::to_string(a.in_doubt_left).c_str(), a.in_doubt_wait_s,
           a.unknown_accounts + a.read_errors + a.other_currency > 0
               ? StrCat("; ", a.unknown_accounts, " unknown accounts, ", a.other_currency, " in another currency, ",
                        a.read_errors, " unreadable", a.first_error.empty() ? "" : StrCat(" (", a.first_error, ")"))
                     .c_str()
               : "",
           a.in_doubt_left < 0 ? StrCat(" (", a.in_doubt_error, ")").c_str() : "");
  }
  fflush(stdout);

  // ---- JSON ----
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::string j = "{\n  \"schema\": \"wallet-loadgen/1\",\n  \"config\": {";
    std::string routers_json;
    for (const std::string& r : routers) StrAppend(&routers_json, routers_json.empty() ? "" : ", ", JsonString(r));
    StrAppend(&j, "\"routers\": [", routers_json, "], \"mode\": ", JsonString(plan.open_loop ? "open" : "closed"),
              ", \"rate\": ", plan.open_loop ? JsonNumber(rate) : "null", ", \"threads\": ", threads,
              ", \"connections\": ", connections, ", \"pipeline\": ", pipeline,
              ", \"in_flight\": ", plan.open_loop ? "null" : std::to_string(window * threads), ", \"batch\": ", batch,
              ", \"accounts\": ", wo.accounts, ", \"first_account\": ", wo.first_account,
              ", \"skew\": ", JsonString(wallet::loadgen::SkewName(wo.skew)),
              ", \"zipf_theta\": ", wo.skew == wallet::loadgen::Skew::kZipf ? JsonNumber(wo.zipf_theta) : "null",
              ", \"hot_share\": ", wo.skew == wallet::loadgen::Skew::kHot ? JsonNumber(wo.hot_share) : "null",
              ", \"hot_accounts\": ", wo.skew == wallet::loadgen::Skew::kHot ? std::to_string(wo.hot_accounts) : "null",
              ", \"cross_shard_share\": ", wo.cross_shard_share >= 0 ? JsonNumber(wo.cross_shard_share) : "null",
              ", \"tcc_share\": ", wo.tcc_share >= 0 ? JsonNumber(wo.tcc_share) : "null",
              ", \"currency\": ", JsonString(currency), ", \"amount_min\": ", wo.amount_min,
              ", \"amount_max\": ", wo.amount_max, ", \"initial_balance\": ", initial_balance,
              ", \"duration_s\": ", duration_s, ", \"warmup_s\": ", warmup_s, ", \"seed\": ", seed,
              ", \"call_timeout_ms\": ", client_options.call_timeout_ms, ", \"max_attempts\": ", client_options.max_attempts,
              ", \"late_threshold_us\": ", absl::GetFlag(FLAGS_late_threshold_us),
              ", \"partition_map\": ", map_source.empty() ? "null" : JsonString(map_source),
              ", \"shards\": ", map.has_value() ? std::to_string(map->ShardIds().size()) : "null",
              ", \"self_test_server\": ", self_test != nullptr ? "true" : "false", "},\n");
    const LatencyHistogram& h = total.latency;
    StrAppend(&j, "  \"duration_s\": ", JsonNumber(ran ? measured_s : 0), ",\n  \"transfers_sent\": ", sent,
              ",\n  \"transfers_ok\": ", total.ok, ",\n  \"throughput_per_s\": ", JsonNumber(std::round(throughput * 10) / 10),
              ",\n  \"latency_us\": {\"p50\": ", JsonNumber(Us(static_cast<double>(h.ValueAtQuantile(0.5)))),
              ", \"p90\": ", JsonNumber(Us(static_cast<double>(h.ValueAtQuantile(0.9)))),
              ", \"p99\": ", JsonNumber(Us(static_cast<double>(h.ValueAtQuantile(0.99)))),
              ", \"p999\": ", JsonNumber(Us(static_cast<double>(h.ValueAtQuantile(0.999)))),
              ", \"max\": ", JsonNumber(Us(static_cast<double>(h.max()))), ", \"mean\": ", JsonNumber(Us(h.mean())),
              ", \"count\": ", h.count(), ", \"from\": ", JsonString(plan.open_loop ? "intended_send" : "send"), "}");
    std::string errors_json;
    for (const auto& [code, count] : total.errors) StrAppend(&errors_json, errors_json.empty() ? "" : ", ", JsonString(code), ": ", count);
    StrAppend(&j, ",\n  \"errors\": {", errors_json, "},\n  \"rejected\": ", total.rejected,
              ",\n  \"retryable\": ", total.retryable, ",\n  \"protocol\": ", total.protocol,
              ",\n  \"late_sends\": ", plan.open_loop ? std::to_string(late) : "null",
              ",\n  \"max_lag_us\": ", plan.open_loop ? JsonNumber(Us(static_cast<double>(max_lag_ns))) : "null",
              ",\n  \"cross_shard_sent\": ", layout != nullptr ? std::to_string(cross) : "null",
              ",\n  \"generator_cpu_cores\": ", generator_cores >= 0 ? JsonNumber(std::round(generator_cores * 100) / 100) : "null",
              ",\n  \"modes_sent\": {\"tcc\": ", modes[1], ", \"saga\": ", modes[2], ", \"default\": ", modes[0], "}");
    if (setup.has_value()) {
      std::string setup_errors;
      for (const auto& [code, count] : setup->errors) StrAppend(&setup_errors, setup_errors.empty() ? "" : ", ", JsonString(code), ": ", count);
      StrAppend(&j, ",\n  \"setup\": {\"accounts\": ", setup->accounts, ", \"opened\": ", setup->opened,
                ", \"funded_now\": ", setup->deposited, ", \"already_funded\": ", setup->already_funded,
                ", \"failed\": ", setup->failed, ", \"deposited\": ", static_cast<int64_t>(setup->deposited) * initial_balance,
                ", \"seconds\": ", JsonNumber(std::round(setup->seconds * 100) / 100), ", \"errors\": {", setup_errors, "}}");
    } else {
      StrAppend(&j, ",\n  \"setup\": null");
    }
    if (audit.has_value()) {
      const AuditResult& a = *audit;
      StrAppend(&j, ",\n  \"audit\": {\"passed\": ", a.passed ? "true" : "false", ", \"conserved\": ", a.conserved ? "true" : "false",
                ", \"sum_available\": ", a.sum_available, ", \"sum_held\": ", a.sum_held, ", \"expected\": ", a.expected,
                ", \"difference\": ", a.sum_available + a.sum_held - a.expected,
                ", \"expected_source\": ", JsonString(a.expected_source), ", \"accounts_read\": ", a.accounts_read,
                ", \"unknown_accounts\": ", a.unknown_accounts, ", \"other_currency\": ", a.other_currency,
                ", \"read_errors\": ", a.read_errors,
                ", \"in_doubt_left\": ", a.in_doubt_left < 0 ? "null" : std::to_string(a.in_doubt_left),
                ", \"in_doubt_wait_s\": ", JsonNumber(std::round(a.in_doubt_wait_s * 10) / 10), "}");
    } else {
      StrAppend(&j, ",\n  \"audit\": null");
    }
    Client::Stats client_stats;
    for (auto& worker : workers) {
      Client::Stats s = worker->client().stats();
      client_stats.calls += s.calls;
      client_stats.sends += s.sends;
      client_stats.retries += s.retries;
      client_stats.failovers += s.failovers;
    }
    StrAppend(&j, ",\n  \"client\": {\"calls\": ", client_stats.calls, ", \"sends\": ", client_stats.sends,
              ", \"retries\": ", client_stats.retries, ", \"failovers\": ", client_stats.failovers, "}\n}\n");
    if (!wallet::WriteFileAtomically(path, j)) {
      fprintf(stderr, "wallet-loadgen: cannot write --json_out=%s\n", path.c_str());
      exit_status = exit_status == 0 ? 1 : exit_status;
    }
  }
  workers.clear();  // clients first, while the self-test server still answers
  self_test.reset();
  return exit_status;
}
