// snapshot_bench.cc — Google Benchmark of engine state snapshots: Engine::SaveState
// into memory, Engine::LoadState from memory, Engine::Digest, and whole snapshot
// files (WriteSnapshot with its fsync, LoadSnapshot with its checksum and digest
// checks) in /tmp. One core.
//
//   build-bench/benchmarks/snapshot_bench
//   build-bench/benchmarks/snapshot_bench --benchmark_filter='accounts:1000000/records:0'
//
// The engine holds `accounts` open accounts with balances and `records` local
// idempotency records (deposits within the window); no TC/C or saga state.
// Counters: bytes_per_account is the state stream's size over the account count
// (with records:0 that is the cost of an account in a snapshot); bytes_per_second is
// the stream's (or file's) size over the time. The peer (Redis's RDB) has no
// in-process equivalent; restart times of both servers belong to the server
// benchmarks.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "common/money.h"
#include "common/partition.h"
#include "common/strings.h"
#include "shard/engine.h"
#include "shard/snapshot.h"
#include "shard/state_io.h"

namespace wallet::shard {
namespace {

constexpr int64_t kStartMs = 1'700'000'000'000;

EngineOptions BenchOptions() {
  EngineOptions options;
  options.idempotency_window_ms = 24 * 60 * 60 * 1000;  // nothing expires during the build
  return options;
}

std::unique_ptr<Engine> NewEngine() {
  return std::make_unique<Engine>(BenchOptions(), PartitionSet::All(kDefaultPartitionCount));
}

// An engine with the benchmark's state and that state saved as a stream, built once
// per (accounts, records) and kept for every benchmark that uses the pair.
struct Fixture {
  std::unique_ptr<Engine> engine;
  std::string stream;
};

const Fixture& GetFixture(int64_t accounts, int64_t records) {
  static std::map<std::pair<int64_t, int64_t>, Fixture> fixtures;
  Fixture& fixture = fixtures[{accounts, records}];
  if (fixture.engine != nullptr) return fixture;
  fixture.engine = NewEngine();
  Engine& engine = *fixture.engine;
  Currency usd;
  Currency::Parse("USD", &usd);
  for (int64_t i = 1; i <= accounts; ++i) {
    const AccountId id = static_cast<AccountId>(i);
    engine.Open(id, usd, kStartMs);
    engine.Deposit(StrCat("seed-", i), id, 1'000'000 + i, kStartMs);
  }
  // The funding deposits' records expire; only `records` deposits stay recorded.
  const int64_t later_ms = kStartMs + BenchOptions().idempotency_window_ms + 1;
  engine.Collect(later_ms, static_cast<size_t>(accounts));
  for (int64_t i = 0; i < records; ++i) {
    engine.Deposit(StrCat("record-", i), static_cast<AccountId>(1 + i % accounts), 1, later_ms);
  }
  StringStateWriter writer(&fixture.stream);
  engine.SaveState(&writer);
  writer.Flush();
  return fixture;
}

void SetStreamCounters(benchmark::State& state, const Fixture& fixture, int64_t accounts) {
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(fixture.stream.size()));
  state.counters["bytes_per_account"] =
      static_cast<double>(fixture.stream.size()) / static_cast<double>(accounts);
  state.counters["stream_mb"] = static_cast<double>(fixture.stream.size()) / 1e6;
}

void BM_SaveState(benchmark::State& state) {
  const Fixture& fixture = GetFixture(state.range(0), state.range(1));
  std::string out;
  for (auto _ : state) {
    out.clear();
    out.reserve(fixture.stream.size());
    StringStateWriter writer(&out);
    fixture.engine->SaveState(&writer);
    writer.Flush();
    benchmark::DoNotOptimize(out.data());
  }
  SetStreamCounters(state, fixture, state.range(0));
}

void BM_LoadState(benchmark::State& state) {
  const Fixture& fixture = GetFixture(state.range(0), state.range(1));
  for (auto _ : state) {
    std::unique_ptr<Engine> engine = NewEngine();
    StateReader reader(fixture.stream);
    if (!engine->LoadState(&reader).ok()) state.SkipWithError("load failed");
    state.PauseTiming();
    engine.reset();  // freeing 1M accounts is not part of a load
    state.ResumeTiming();
  }
  SetStreamCounters(state, fixture, state.range(0));
}

void BM_Digest(benchmark::State& state) {
  const Fixture& fixture = GetFixture(state.range(0), state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize(fixture.engine->Digest());
  SetStreamCounters(state, fixture, state.range(0));
}

// A folder under /tmp for the file benchmarks, removed at exit.
const std::string& BenchDir() {
  static const std::string dir = [] {
    char pattern[] = "/tmp/snapshot_bench.XXXXXX";
    const char* made = mkdtemp(pattern);
    return std::string(made == nullptr ? "/tmp" : made);
  }();
  return dir;
}

void BM_WriteSnapshotFile(benchmark::State& state) {
  const Fixture& fixture = GetFixture(state.range(0), state.range(1));
  uint64_t file_bytes = 0;
  for (auto _ : state) {
    absl::StatusOr<SnapshotInfo> info = WriteSnapshot(*fixture.engine, 1, BenchDir());
    if (!info.ok()) state.SkipWithError("write failed");
    file_bytes = info.ok() ? info->file_bytes : 0;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(file_bytes));
}

void BM_LoadSnapshotFile(benchmark::State& state) {
  const Fixture& fixture = GetFixture(state.range(0), state.range(1));
  absl::StatusOr<SnapshotInfo> written = WriteSnapshot(*fixture.engine, 2, BenchDir());
  if (!written.ok()) {
    state.SkipWithError("write failed");
    return;
  }
  for (auto _ : state) {
    std::unique_ptr<Engine> engine = NewEngine();
    if (!LoadSnapshot(written->path, engine.get()).ok()) state.SkipWithError("load failed");
    state.PauseTiming();
    engine.reset();
    state.ResumeTiming();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(written->file_bytes));
}

void Sizes(benchmark::internal::Benchmark* bench) {
  bench->ArgNames({"accounts", "records"});
  bench->Args({1'000'000, 0});
  bench->Args({1'000'000, 1'000'000});
  bench->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_SaveState)->Apply(Sizes);
BENCHMARK(BM_LoadState)->Apply(Sizes);
BENCHMARK(BM_Digest)->Apply(Sizes);
BENCHMARK(BM_WriteSnapshotFile)->Apply(Sizes);
BENCHMARK(BM_LoadSnapshotFile)->Apply(Sizes);

}  // namespace
}  // namespace wallet::shard

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::error_code error;
  std::filesystem::remove_all(wallet::shard::BenchDir(), error);
  return 0;
}
