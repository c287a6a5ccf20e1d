// wallet-history: reads a shard's data folder (snapshots + event log) without
// changing it, to answer what the state was and how it got there.
//
//   wallet-history state   --data_dir=D [--at_seq=S | --at_time_ms=T] [--account=A]
//       Rebuilds the state as of event S (or the last event at or before time T;
//       default: the end of the log) from the nearest snapshot + log, and prints
//       its totals and digest (and one account's balance).
//   wallet-history account --data_dir=D --account=A [--to_seq=S | --to_time_ms=T]
//       Prints every event that touched the account, from the oldest point the
//       folder still holds, each with the balance after it.
//   wallet-history verify  --data_dir=D
//       Replays the log from empty (or, when old segments were removed, from the
//       oldest snapshot) up to the newest snapshot and checks that the state digest
//       equals the one the snapshot recorded. Exit status 0 on a match, 1 otherwise.
//   wallet-history log     --data_dir=D [--from_seq=S] [--to_seq=S]
//       Prints the events themselves.
//
// Safe on a running shard's folder: nothing is written, and a torn tail (a write in
// progress) is ignored.
#include <time.h>

#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/flags_usage.h"
#include "common/log.h"
#include "common/strings.h"
#include "shard/engine.h"
#include "shard/log_format.h"
#include "shard/log_reader.h"
#include "shard/snapshot.h"

ABSL_FLAG(std::string, data_dir, "", "The shard's data folder (required).");
ABSL_FLAG(uint64_t, account, 0, "Account id (account: required; state: optional).");
ABSL_FLAG(uint64_t, at_seq, 0, "state: rebuild as of this event (0: the end of the log).");
ABSL_FLAG(int64_t, at_time_ms, 0, "state: rebuild as of this time, Unix ms (0: unused).");
ABSL_FLAG(uint64_t, to_seq, 0, "account/log: stop after this event (0: the end).");
ABSL_FLAG(int64_t, to_time_ms, 0, "account: stop after this time, Unix ms (0: unused).");
ABSL_FLAG(uint64_t, from_seq, 1, "log: first event printed.");
ABSL_FLAG(uint32_t, partition_count, wallet::kDefaultPartitionCount,
          "Partitions of the cluster, when no snapshot says (replay from empty).");

namespace wallet::shard {
namespace {

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

std::string FormatTime(int64_t time_ms) {
  time_t seconds = static_cast<time_t>(time_ms / 1000);
  struct tm parts;
  gmtime_r(&seconds, &parts);
  char text[32];
  strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &parts);
  char millis[8];
  std::snprintf(millis, sizeof(millis), ".%03dZ", static_cast<int>(time_ms % 1000));
  return StrCat(text, millis);
}

// One line describing an event's own fields.
std::string DescribeEvent(const Event& event) {
  std::string text = StrCat(EventTypeName(event.type));
  if (!event.txid.empty()) StrAppend(&text, " txid=", event.txid);
  if (event.account != 0) StrAppend(&text, " account=", event.account);
  if (event.peer != 0) StrAppend(&text, " peer=", event.peer);
  if (event.amount != 0) StrAppend(&text, " amount=", event.amount);
  if (event.currency.valid()) StrAppend(&text, " currency=", event.currency.ToString());
  if (event.direction != Direction::kNone) StrAppend(&text, " direction=", DirectionName(event.direction));
  if (event.step != 0) StrAppend(&text, " step=", static_cast<int>(event.step));
  if (event.mode != Mode::kNone) StrAppend(&text, " mode=", ModeName(event.mode));
  if (!event.text.empty()) StrAppend(&text, " owner=", event.text);
  if (event.type == EventType::kCollect) StrAppend(&text, " cutoff_ms=", event.cutoff_ms);
  return text;
}

// Where a replay starts: empty, or a snapshot.
struct ReplayBase {
  std::optional<SnapshotInfo> snapshot;  // nullopt: from empty
  uint64_t seq() const { return snapshot ? snapshot->last_seq : 0; }
};

// What the folder holds.
struct Folder {
  std::string dir;
  std::vector<SnapshotInfo> snapshots;  // oldest first
  uint64_t log_first_seq = 0;           // 0: no segment
};

absl::StatusOr<Folder> ScanFolder(const std::string& dir) {
  Folder folder;
  folder.dir = dir;
  absl::StatusOr<std::vector<SnapshotInfo>> snapshots = ListSnapshots(dir);
  if (!snapshots.ok()) return snapshots.status();
  for (const SnapshotInfo& listed : *snapshots) {
    absl::StatusOr<SnapshotInfo> header = ReadSnapshotHeader(listed.path);
    if (!header.ok()) {
      LogWarning("ignoring snapshot %s: %s", listed.path.c_str(), std::string(header.status().message()).c_str());
      continue;
    }
    folder.snapshots.push_back(*header);
  }
  absl::StatusOr<std::vector<logfmt::SegmentFile>> segments = logfmt::ListSegments(dir);
  if (!segments.ok()) return segments.status();
  if (!segments->empty()) folder.log_first_seq = segments->front().first_seq;
  return folder;
}

// Bases from which the log can be replayed, oldest first: empty when the log starts
// at seq 1 (or there is neither log nor snapshot), and every snapshot the log
// continues from.
std::vector<ReplayBase> UsableBases(const Folder& folder) {
  std::vector<ReplayBase> bases;
  if (folder.log_first_seq == 1 || (folder.log_first_seq == 0 && folder.snapshots.empty())) {
    bases.push_back(ReplayBase{});
  }
  for (const SnapshotInfo& snapshot : folder.snapshots) {
    bases.push_back(ReplayBase{snapshot});
  }
  return bases;
}

EngineOptions ReplayEngineOptions(const ReplayBase& base) {
  EngineOptions options;
  options.partition_count = base.snapshot ? base.snapshot->partition_count : absl::GetFlag(FLAGS_partition_count);
  options.max_accounts = std::numeric_limits<size_t>::max();
  options.max_txn_records = std::numeric_limits<size_t>::max();
  return options;
}

// A fresh engine holding the base's state.
absl::StatusOr<std::unique_ptr<Engine>> LoadBase(const ReplayBase& base) {
  const EngineOptions options = ReplayEngineOptions(base);
  auto engine = std::make_unique<Engine>(options, PartitionSet::All(options.partition_count));
  if (base.snapshot) {
    absl::StatusOr<SnapshotInfo> loaded = LoadSnapshot(base.snapshot->path, engine.get());
    if (!loaded.ok()) return loaded.status();
  }
  return engine;
}

// Replays the log after the base into *engine up to (and including) to_seq and
// events at or before to_time_ms; `observe` sees each event before and after it is
// applied. Returns the last seq applied.
template <typename Observe>
absl::StatusOr<uint64_t> Replay(const Folder& folder, const ReplayBase& base, Engine* engine, uint64_t to_seq,
                                int64_t to_time_ms, Observe observe) {
  LogReadOptions options;
  options.from_seq = base.seq() + 1;
  options.to_seq = to_seq;
  options.repair = RepairMode::kReadOnly;
  uint64_t last_seq = base.seq();
  absl::StatusOr<LogReadResult> result = ReadLog(folder.dir, options, [&](uint64_t seq, const Event& event) {
    if (event.time_ms > to_time_ms) return false;
    observe(seq, event, /*applied=*/false);
    engine->Apply(event);
    observe(seq, event, /*applied=*/true);
    last_seq = seq;
    return true;
  });
  if (!result.ok() && !absl::IsNotFound(result.status())) return result.status();
  if (!result.ok() && base.seq() < to_seq && to_seq != kNoLimit) return result.status();
  return last_seq;
}

void PrintTotals(const Engine& engine) {
  const AuditTotals& totals = engine.audit();
  std::printf("accounts: %zu\n", engine.stats().accounts);
  std::printf("available: %s\nheld: %s\npending_credit: %s\n", Int128ToString(totals.available).c_str(),
              Int128ToString(totals.held).c_str(), Int128ToString(totals.pending_credit).c_str());
  std::printf("deposited: %s\nwithdrawn: %s\nmoved_in: %s\nmoved_out: %s\n",
              Int128ToString(totals.deposited).c_str(), Int128ToString(totals.withdrawn).c_str(),
              Int128ToString(totals.moved_in).c_str(), Int128ToString(totals.moved_out).c_str());
  std::printf("digest: %s\n", engine.Digest().ToString().c_str());
}

std::string DescribeBalance(const Engine& engine, AccountId account) {
  AccountView view;
  if (!engine.Balance(account, &view).ok()) return "not open";
  return StrCat("available=", view.available, " held=", view.held, " pending_credit=", view.pending_credit,
                " currency=", view.currency.ToString());
}

int RunState(const Folder& folder) {
  const uint64_t at_seq = absl::GetFlag(FLAGS_at_seq) == 0 ? kNoLimit : absl::GetFlag(FLAGS_at_seq);
  const int64_t at_time_ms =
      absl::GetFlag(FLAGS_at_time_ms) == 0 ? std::numeric_limits<int64_t>::max() : absl::GetFlag(FLAGS_at_time_ms);
  // The newest base at or before the target.
  std::vector<ReplayBase> bases = UsableBases(folder);
  const ReplayBase* chosen = nullptr;
  for (const ReplayBase& base : bases) {
    if (base.seq() <= at_seq && (!base.snapshot || base.snapshot->last_event_time_ms <= at_time_ms)) chosen = &base;
  }
  if (chosen == nullptr) {
    LogError("no snapshot or log start at or before the requested point; the folder's history begins later");
    return 1;
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine = LoadBase(*chosen);
  if (!engine.ok()) {
    LogError("%s", std::string(engine.status().message()).c_str());
    return 1;
  }
  int64_t last_time_ms = chosen->snapshot ? chosen->snapshot->last_event_time_ms : 0;
  absl::StatusOr<uint64_t> last_seq =
      Replay(folder, *chosen, engine->get(), at_seq, at_time_ms,
             [&](uint64_t, const Event& event, bool applied) { if (applied) last_time_ms = event.time_ms; });
  if (!last_seq.ok()) {
    LogError("%s", std::string(last_seq.status().message()).c_str());
    return 1;
  }
  if (at_seq != kNoLimit && *last_seq != at_seq) {
    LogError("the log ends at seq %llu, before the requested seq %llu", static_cast<unsigned long long>(*last_seq),
             static_cast<unsigned long long>(at_seq));
    return 1;
  }
  std::printf("state at seq %llu (last event %s), from %s\n", static_cast<unsigned long long>(*last_seq),
              last_time_ms > 0 ? FormatTime(last_time_ms).c_str() : "-",
              chosen->snapshot ? chosen->snapshot->path.c_str() : "empty");
  PrintTotals(**engine);
  if (absl::GetFlag(FLAGS_account) != 0) {
    std::printf("account %llu: %s\n", static_cast<unsigned long long>(absl::GetFlag(FLAGS_account)),
                DescribeBalance(**engine, absl::GetFlag(FLAGS_account)).c_str());
  }
  return 0;
}

int RunAccount(const Folder& folder) {
  const AccountId account = absl::GetFlag(FLAGS_account);
  if (account == 0) {
    LogError("account: --account is required");
    return 2;
  }
  const uint64_t to_seq = absl::GetFlag(FLAGS_to_seq) == 0 ? kNoLimit : absl::GetFlag(FLAGS_to_seq);
  const int64_t to_time_ms =
      absl::GetFlag(FLAGS_to_time_ms) == 0 ? std::numeric_limits<int64_t>::max() : absl::GetFlag(FLAGS_to_time_ms);
  std::vector<ReplayBase> bases = UsableBases(folder);
  if (bases.empty()) {
    LogError("the folder holds no snapshot the log continues from");
    return 1;
  }
  const ReplayBase& base = bases.front();  // the oldest: the longest history
  absl::StatusOr<std::unique_ptr<Engine>> engine = LoadBase(base);
  if (!engine.ok()) {
    LogError("%s", std::string(engine.status().message()).c_str());
    return 1;
  }
  std::printf("history of account %llu from %s\n", static_cast<unsigned long long>(account),
              base.snapshot ? StrCat("snapshot of seq ", base.snapshot->last_seq).c_str() : "the first event");
  std::printf("  at start: %s\n", DescribeBalance(**engine, account).c_str());
  std::string before;
  uint64_t printed = 0;
  absl::StatusOr<uint64_t> last_seq =
      Replay(folder, base, engine->get(), to_seq, to_time_ms, [&](uint64_t seq, const Event& event, bool applied) {
        if (!applied) {
          before = DescribeBalance(**engine, account);
          return;
        }
        const std::string after = DescribeBalance(**engine, account);
        if (event.account != account && event.peer != account && after == before) return;
        ++printed;
        std::printf("%llu %s %s -> %s\n", static_cast<unsigned long long>(seq), FormatTime(event.time_ms).c_str(),
                    DescribeEvent(event).c_str(), after.c_str());
      });
  if (!last_seq.ok()) {
    LogError("%s", std::string(last_seq.status().message()).c_str());
    return 1;
  }
  std::printf("%llu event(s) through seq %llu\n", static_cast<unsigned long long>(printed),
              static_cast<unsigned long long>(*last_seq));
  return 0;
}

int RunVerify(const Folder& folder) {
  if (folder.snapshots.empty()) {
    LogError("verify: the folder holds no snapshot to compare with (start one with SNAPSHOT)");
    return 1;
  }
  const SnapshotInfo& newest = folder.snapshots.back();
  std::vector<ReplayBase> bases = UsableBases(folder);
  // The oldest base before the newest snapshot: empty when the log starts at 1.
  const ReplayBase* base = nullptr;
  for (const ReplayBase& candidate : bases) {
    if (candidate.seq() < newest.last_seq) {
      base = &candidate;
      break;
    }
  }
  if (base == nullptr) {
    LogError("verify: nothing older than the newest snapshot (seq %llu) to replay from: the log before it was "
             "removed and no older snapshot is kept (see --snapshots_kept, --keep_log_segments)",
             static_cast<unsigned long long>(newest.last_seq));
    return 1;
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine = LoadBase(*base);
  if (!engine.ok()) {
    LogError("%s", std::string(engine.status().message()).c_str());
    return 1;
  }
  uint64_t events = 0;
  absl::StatusOr<uint64_t> last_seq =
      Replay(folder, *base, engine->get(), newest.last_seq, std::numeric_limits<int64_t>::max(),
             [&](uint64_t, const Event&, bool applied) { events += applied ? 1 : 0; });
  if (!last_seq.ok()) {
    LogError("verify: %s", std::string(last_seq.status().message()).c_str());
    return 1;
  }
  if (*last_seq != newest.last_seq) {
    std::printf("MISMATCH: the log ends at seq %llu, before the newest snapshot's seq %llu\n",
                static_cast<unsigned long long>(*last_seq), static_cast<unsigned long long>(newest.last_seq));
    return 1;
  }
  const StateDigest replayed = (*engine)->Digest();
  const bool match = replayed == newest.digest;
  std::printf("%s: replayed %llu events from %s to seq %llu; digest %s, snapshot %s records %s\n",
              match ? "OK" : "MISMATCH", static_cast<unsigned long long>(events),
              base->snapshot ? StrCat("the snapshot of seq ", base->seq()).c_str() : "empty",
              static_cast<unsigned long long>(newest.last_seq), replayed.ToString().c_str(), newest.path.c_str(),
              newest.digest.ToString().c_str());
  return match ? 0 : 1;
}

int RunLog(const Folder& folder) {
  LogReadOptions options;
  options.from_seq = absl::GetFlag(FLAGS_from_seq);
  options.to_seq = absl::GetFlag(FLAGS_to_seq) == 0 ? kNoLimit : absl::GetFlag(FLAGS_to_seq);
  absl::StatusOr<LogReadResult> result = ReadLog(folder.dir, options, [](uint64_t seq, const Event& event) {
    std::printf("%llu %s %s\n", static_cast<unsigned long long>(seq), FormatTime(event.time_ms).c_str(),
                DescribeEvent(event).c_str());
    return true;
  });
  if (!result.ok()) {
    LogError("%s", std::string(result.status().message()).c_str());
    return 1;
  }
  if (result->torn_tail) {
    std::printf("(torn tail: %llu bytes at offset %llu of %s)\n", static_cast<unsigned long long>(result->tail_bytes),
                static_cast<unsigned long long>(result->tail_offset), result->tail_path.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace wallet::shard

int main(int argc, char** argv) {
  wallet::SetUpFlagsUsage(
      "shard/history_main.cc",
      "reads a shard's data folder (never writes it).\n"
      "Usage: wallet-history state|account|verify|log --data_dir=D [flags]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  wallet::SetLogProgramName("wallet-history");
  if (args.size() != 2 || absl::GetFlag(FLAGS_data_dir).empty()) {
    wallet::LogError("usage: wallet-history state|account|verify|log --data_dir=D [flags] (see --help)");
    return 2;
  }
  absl::StatusOr<wallet::shard::Folder> folder = wallet::shard::ScanFolder(absl::GetFlag(FLAGS_data_dir));
  if (!folder.ok()) {
    wallet::LogError("%s", std::string(folder.status().message()).c_str());
    return 1;
  }
  const std::string command = args[1];
  if (command == "state") return wallet::shard::RunState(*folder);
  if (command == "account") return wallet::shard::RunAccount(*folder);
  if (command == "verify") return wallet::shard::RunVerify(*folder);
  if (command == "log") return wallet::shard::RunLog(*folder);
  wallet::LogError("unknown command '%s': state, account, verify or log", command.c_str());
  return 2;
}
