// engine_bench.cc — Google Benchmark for the pure balance engine
// (wallet::shard::Engine, no sockets): local transfers, TC/C try+confirm pairs and
// account opens, one core, no event sink.
//
//   build-bench/benchmarks/engine_bench --benchmark_repetitions=3
//   build-bench/benchmarks/engine_bench --benchmark_filter='BM_Transfer/accounts:1000000/'
//
// The target is >= 10 million local transfers per second on one core; the
// peer (Redis with a Lua transfer script) is measured over the wire by
// wallet-shard-bench and run_shard_vs_redis.sh, since Redis has no in-process engine.
//
// Steady state. The engine keeps a record of every transaction id for the
// idempotency window and collects expired ones a bounded number at a time. A
// benchmark that only inserts measures an ever-growing table, so these benchmarks
// run the engine on a simulated clock: kSimulatedRatePerMs operations per simulated
// millisecond, an idempotency window of steady_records / kSimulatedRatePerMs ms,
// and Collect() every simulated millisecond (as the server's timer does), with a
// batch large enough to keep up. Before timing starts, the table is filled to that
// steady size (untimed), so every timed operation inserts one record and, on
// average, collection removes one: the record table stays at `steady_records`
// (reported as the `records` counter). Collection is inside the timed loop.
//
// Transaction ids are pre-generated outside the timed loop into a pool of
// 2 x steady_records ids (fixed width, `txid_bytes` long) and reused cyclically: an
// id comes back only after its record expired and was collected, so every timed
// operation is a new transaction (checked: any replay or error fails the benchmark).
// Account pairs and amounts come from a pre-generated ring of random pairs.
//
// The context (engine, pools) for one argument set is built once and kept across
// the repeated calls Google Benchmark makes for that argument set, so the table
// stays at its steady size between calls.
//
// `other_cores`: CPU the rest of the machine used during the timed loop (the
// benchmark machine is shared); figures with other_cores well above 0 are suspect.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/money.h"
#include "common/partition.h"
#include "shard/engine.h"

namespace wallet::shard {
namespace {

constexpr int64_t kSimulatedRatePerMs = 1000;  // 1 million operations per simulated second
constexpr size_t kCollectBatch = 4 * kSimulatedRatePerMs;
constexpr size_t kPairRing = 1u << 20;
constexpr Amount kInitialBalance = 1'000'000'000'000;  // never runs short in a run
constexpr int64_t kStartMs = 1'700'000'000'000;

Currency Usd() {
  Currency usd;
  Currency::Parse("USD", &usd);
  return usd;
}

// Fixed-width transaction ids "b<decimal, zero padded>" in one buffer.
class TxidPool {
 public:
  TxidPool(size_t count, size_t txid_bytes) : count_(count), width_(txid_bytes) {
    buffer_.resize(count * width_);
    for (size_t i = 0; i < count; ++i) {
      char* out = buffer_.data() + i * width_;
      out[0] = 'b';
      size_t value = i;
      for (size_t pos = width_ - 1; pos >= 1; --pos) {
        out[pos] = static_cast<char>('0' + value % 10);
        value /= 10;
      }
    }
  }
  std::string_view at(size_t index) const {
    return std::string_view(buffer_.data() + (index % count_) * width_, width_);
  }
  size_t size() const { return count_; }

 private:
  size_t count_;
  size_t width_;
  std::vector<char> buffer_;
};

struct Pair {
  AccountId from;
  AccountId to;
  Amount amount;
};

// Engine with `accounts` open and funded accounts (ids 1..accounts), filled with
// `steady_records` records, plus the pools the timed loop draws from.
struct Context {
  int64_t accounts;
  int64_t steady_records;
  int64_t txid_bytes;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<TxidPool> txids;
  std::vector<Pair> pairs;
  uint64_t next = 0;  // operations done so far (drives the clock and the pools)
  int64_t start_ms = kStartMs;

  int64_t NowMs() const { return start_ms + static_cast<int64_t>(next) / kSimulatedRatePerMs; }
};

std::unique_ptr<Context> current;

// The machine is shared: how much CPU everything else used while a benchmark ran.
// Busy time of all processors (/proc/stat) minus this process's CPU time, per
// second of wall time; reported as the `other_cores` counter.
class OtherLoad {
 public:
  OtherLoad() : busy_(BusySeconds()), self_(SelfSeconds()), start_(std::chrono::steady_clock::now()) {}
  double cores() const {
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    double other = (BusySeconds() - busy_) - (SelfSeconds() - self_);
    return wall > 0 && other > 0 ? other / wall : 0;
  }

 private:
  static double BusySeconds() {
    FILE* file = std::fopen("/proc/stat", "r");
    if (file == nullptr) return 0;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0,
                       softirq = 0, steal = 0;
    int fields = std::fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice,
                             &system, &idle, &iowait, &irq, &softirq, &steal);
    std::fclose(file);
    if (fields < 4) return 0;
    return static_cast<double>(user + nice + system + irq + softirq + steal) /
           static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  static double SelfSeconds() {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  }
  double busy_;
  double self_;
  std::chrono::steady_clock::time_point start_;
};

Context& ContextFor(int64_t accounts, int64_t steady_records, int64_t txid_bytes) {
  if (current != nullptr && current->accounts == accounts &&
      current->steady_records == steady_records && current->txid_bytes == txid_bytes) {
    return *current;
  }
  current.reset();  // free the previous argument set's memory first
  auto context = std::make_unique<Context>();
  context->accounts = accounts;
  context->steady_records = steady_records;
  context->txid_bytes = txid_bytes;
  EngineOptions options;
  options.idempotency_window_ms = steady_records / kSimulatedRatePerMs;
  options.max_txn_records = static_cast<size_t>(steady_records) * 4 + 1'000'000;
  context->engine = std::make_unique<Engine>(options, PartitionSet::All(options.partition_count));
  context->txids = std::make_unique<TxidPool>(static_cast<size_t>(steady_records) * 2,
                                              static_cast<size_t>(txid_bytes));
  std::mt19937_64 random(42);
  context->pairs.resize(kPairRing);
  for (Pair& pair : context->pairs) {
    pair.from = 1 + random() % static_cast<uint64_t>(accounts);
    do {
      pair.to = 1 + random() % static_cast<uint64_t>(accounts);
    } while (pair.to == pair.from);
    pair.amount = 1 + static_cast<Amount>(random() % 100);
  }
  Engine& engine = *context->engine;
  Currency usd = Usd();
  // Opens and deposits happen long before the window the timed loop sees: the
  // deposit records expire during the fill below.
  for (int64_t id = 1; id <= accounts; ++id) {
    engine.Open(static_cast<AccountId>(id), usd, kStartMs);
    std::string txid = "fund-" + std::to_string(id);
    Result result = engine.Deposit(txid, static_cast<AccountId>(id), kInitialBalance, kStartMs);
    if (!result.ok()) {
      std::fprintf(stderr, "setup deposit failed: %s\n", result.message.c_str());
      std::abort();
    }
  }
  context->start_ms = kStartMs + options.idempotency_window_ms + 1;
  current = std::move(context);
  return *current;
}

// One local transfer at the context's clock; collection every simulated ms.
inline bool TransferOnce(Context& context, Currency usd) {
  uint64_t n = context.next++;
  const Pair& pair = context.pairs[n % kPairRing];
  int64_t now_ms = context.NowMs();
  if (n % kSimulatedRatePerMs == 0) context.engine->Collect(now_ms, kCollectBatch);
  Result result =
      context.engine->Transfer(context.txids->at(n), pair.from, pair.to, pair.amount, usd, now_ms);
  return result.ok() && !result.replayed();
}

// One TC/C debit try and its confirm on the same shard (the home-shard half of a
// cross-shard transfer without the row).
inline bool TccPairOnce(Context& context, Currency usd) {
  uint64_t n = context.next++;
  const Pair& pair = context.pairs[n % kPairRing];
  int64_t now_ms = context.NowMs();
  if (n % kSimulatedRatePerMs == 0) context.engine->Collect(now_ms, kCollectBatch);
  std::string_view txid = context.txids->at(n);
  Result tried = context.engine->TccTry(txid, Direction::kDebit, pair.from, pair.amount, usd,
                                        /*home=*/nullptr, now_ms);
  Result confirmed = context.engine->TccConfirm(txid, Direction::kDebit, now_ms);
  return tried.ok() && !tried.replayed() && confirmed.ok() && !confirmed.replayed();
}

template <bool (*Operation)(Context&, Currency)>
void RunSteady(benchmark::State& state) {
  Context& context = ContextFor(state.range(0), state.range(1), state.range(2));
  Currency usd = Usd();
  // Fill to steady state (untimed, once per context): one window's worth of
  // operations plus a margin, so the first timed operation finds a full table.
  if (context.next == 0) {
    for (int64_t i = 0; i < context.steady_records + 2 * kSimulatedRatePerMs; ++i) {
      if (!Operation(context, usd)) {
        state.SkipWithError("fill: an operation failed or was replayed");
        return;
      }
    }
  }
  uint64_t failures = 0;
  OtherLoad other_load;
  for (auto _ : state) {
    if (!Operation(context, usd)) ++failures;
  }
  state.counters["other_cores"] = other_load.cores();
  if (failures != 0) {
    state.SkipWithError("an operation failed or was replayed (txid pool too small?)");
    return;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  EngineStats stats = context.engine->stats();
  state.counters["records"] =
      static_cast<double>(stats.local_records + stats.distributed_records);
  state.counters["accounts"] = static_cast<double>(stats.accounts);
}

void BM_Transfer(benchmark::State& state) { RunSteady<TransferOnce>(state); }

// The same steady-state transfers, each timed on its own (steady_clock around every
// call, so the mean is higher than BM_Transfer's): the pauses a client would see from
// the engine alone, e.g. hash-table rehashes of the idempotency index. Counters:
// p50/p99/p999/max per transfer in ns, and how many took over 1 ms.
void BM_TransferPauses(benchmark::State& state) {
  Context& context = ContextFor(state.range(0), state.range(1), state.range(2));
  Currency usd = Usd();
  if (context.next == 0) {
    for (int64_t i = 0; i < context.steady_records + 2 * kSimulatedRatePerMs; ++i) {
      if (!TransferOnce(context, usd)) {
        state.SkipWithError("fill: an operation failed or was replayed");
        return;
      }
    }
  }
  constexpr size_t kBuckets = 100'000;  // 100 ns buckets up to 10 ms, then overflow
  std::vector<uint64_t> histogram(kBuckets + 1, 0);
  int64_t max_ns = 0;
  uint64_t over_1ms = 0, failures = 0;
  OtherLoad other_load;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    if (!TransferOnce(context, usd)) ++failures;
    int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::steady_clock::now() - start).count();
    ++histogram[std::min<size_t>(static_cast<size_t>(ns / 100), kBuckets)];
    max_ns = std::max(max_ns, ns);
    if (ns > 1'000'000) ++over_1ms;
  }
  if (failures != 0) {
    state.SkipWithError("an operation failed or was replayed");
    return;
  }
  auto percentile = [&](double fraction) {
    uint64_t rank = static_cast<uint64_t>(fraction * static_cast<double>(state.iterations()));
    uint64_t seen = 0;
    for (size_t i = 0; i < histogram.size(); ++i) {
      seen += histogram[i];
      if (seen > rank) return static_cast<double>(i * 100);
    }
    return static_cast<double>(kBuckets * 100);
  };
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["p50_ns"] = percentile(0.5);
  state.counters["p99_ns"] = percentile(0.99);
  state.counters["p999_ns"] = percentile(0.999);
  state.counters["max_ns"] = static_cast<double>(max_ns);
  state.counters["over_1ms"] = static_cast<double>(over_1ms);
  state.counters["other_cores"] = other_load.cores();
  EngineStats stats = context.engine->stats();
  state.counters["records"] = static_cast<double>(stats.local_records);
}
void BM_TccTryConfirm(benchmark::State& state) { RunSteady<TccPairOnce>(state); }

// Args: accounts, steady records, txid bytes.
BENCHMARK(BM_Transfer)
    ->ArgNames({"accounts", "records", "txid_bytes"})
    ->Args({100'000, 1'000'000, 20})
    ->Args({1'000'000, 1'000'000, 20})
    ->Args({1'000'000, 1'000'000, 12})
    ->Args({1'000'000, 1'000'000, 36})
    ->Args({1'000'000, 10'000'000, 20})
    ->Args({1'000, 1'000'000, 20})
    ->MinTime(2.0)
    ->Unit(benchmark::kNanosecond);

BENCHMARK(BM_TransferPauses)
    ->ArgNames({"accounts", "records", "txid_bytes"})
    ->Args({1'000'000, 1'000'000, 20})
    ->MinTime(5.0)
    ->Unit(benchmark::kNanosecond);

BENCHMARK(BM_TccTryConfirm)
    ->ArgNames({"accounts", "records", "txid_bytes"})
    ->Args({100'000, 1'000'000, 20})
    ->Args({1'000'000, 1'000'000, 20})
    ->MinTime(2.0)
    ->Unit(benchmark::kNanosecond);

// Opens `accounts` accounts into a fresh engine per iteration (the engine's
// construction and destruction are not timed). items/s = opens per second.
void BM_Open(benchmark::State& state) {
  const int64_t accounts = state.range(0);
  Currency usd = Usd();
  OtherLoad other_load;
  for (auto _ : state) {
    state.PauseTiming();
    auto engine = std::make_unique<Engine>(EngineOptions{}, PartitionSet::All(kDefaultPartitionCount));
    state.ResumeTiming();
    for (int64_t id = 1; id <= accounts; ++id) {
      Result result = engine->Open(static_cast<AccountId>(id), usd, kStartMs);
      if (!result.ok()) {
        state.SkipWithError("open failed");
        return;
      }
    }
    state.PauseTiming();
    engine.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * accounts);
  state.counters["other_cores"] = other_load.cores();
}
BENCHMARK(BM_Open)->ArgNames({"accounts"})->Arg(100'000)->Arg(1'000'000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace wallet::shard

BENCHMARK_MAIN();
