// storage.h — a shard's durable state: its data folder, event log and snapshots.
//
// ShardStorage owns the engine of a durable shard. Open() recovers it (newest valid
// snapshot + replay of the log after it, torn tail cut) and starts a new log
// segment; from then on every event the engine produces goes to the LogWriter,
// which the server commits once per loop turn (see log_writer.h). Poll(), called
// from the server's timer, syncs under the everysec policy, takes snapshots when
// they are due and reaps finished ones.
//
// Snapshots are written by a forked child from a copy-on-write image of the
// engine, so the event loop only pays for fork() itself; the child writes
// snapshot-<seq>.snap.tmp, syncs it and renames it into place (snapshot.h). When a
// snapshot is in place, older snapshots beyond `snapshots_kept` are removed, and
// log segments wholly covered by the oldest snapshot kept are deleted (unless
// keep_log_segments), so that `wallet-history verify` can always replay from the
// older snapshot to the newer one.
//
// The folder is locked (flock on LOCK) for the life of the object: a second shard
// started on the same folder fails at Open().
//
// Example:
//   RecoveryReport report;
//   auto storage = ShardStorage::Open(storage_options, engine_options, owned, &report);
//   if (!storage.ok()) exit with storage.status();
//   ShardServer server(server_options, &(*storage)->engine(), storage->get());
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/partition.h"
#include "shard/engine.h"
#include "shard/log_reader.h"
#include "shard/log_writer.h"

namespace wallet::shard {

struct StorageOptions {
  std::string data_dir;
  FsyncPolicy fsync = FsyncPolicy::kAlways;
  uint64_t segment_bytes = 64ull << 20;
  DamagePolicy damage = DamagePolicy::kRefuse;
  // A snapshot is started when this many log bytes were written since the last one
  // (0: never by size), or when snapshot_interval_ms passed with at least one new
  // event (0: never by time), or on command (SNAPSHOT).
  uint64_t snapshot_log_bytes = 1ull << 30;
  int64_t snapshot_interval_ms = 60 * 60 * 1000;
  int snapshots_kept = 2;
  bool keep_log_segments = false;
};

// What recovery found and did, for the startup log line and INFO.
struct RecoveryReport {
  std::string snapshot_path;  // empty: started from an empty state
  uint64_t snapshot_seq = 0;
  uint64_t snapshot_accounts = 0;
  int64_t snapshot_load_ms = 0;
  uint64_t events_replayed = 0;
  uint64_t segments_read = 0;
  int64_t replay_ms = 0;
  uint64_t last_seq = 0;  // last event in the recovered state
  LogReadResult log;      // torn tail / damage details
  std::string skipped_snapshots;  // snapshots that failed to load, and why
  std::string Describe() const;
};

struct SnapshotStatus {
  bool in_progress = false;
  uint64_t in_progress_seq = 0;
  int64_t in_progress_since_ms = 0;
  uint64_t last_seq = 0;      // newest snapshot in place (0: none)
  int64_t last_done_ms = 0;   // wall time it finished
  int64_t last_duration_ms = 0;
  std::string last_error;     // of the last failed attempt, cleared by a success
  uint64_t taken = 0;
  uint64_t failed = 0;
};

class ShardStorage {
 public:
  // Creates the folder if needed, locks it, recovers the engine and opens the log
  // for appending. Fails without touching the folder's files if it is locked or the
  // log is damaged (under DamagePolicy::kRefuse); a torn tail is cut.
  static absl::StatusOr<std::unique_ptr<ShardStorage>> Open(const StorageOptions& options,
                                                            const EngineOptions& engine_options,
                                                            PartitionSet owned,
                                                            RecoveryReport* report);
  ~ShardStorage();
  ShardStorage(const ShardStorage&) = delete;
  ShardStorage& operator=(const ShardStorage&) = delete;

  Engine& engine() { return *engine_; }
  LogWriter& log() { return *log_; }
  const StorageOptions& options() const { return options_; }
  const RecoveryReport& recovery() const { return recovery_; }
  const SnapshotStatus& snapshot_status() const { return snapshot_; }

  // Starts a background snapshot of the state after every committed event. Fails
  // if one is running (AlreadyExists) or the log is failed (Unavailable). Call only
  // at a turn boundary, after the turn's commit: it syncs the log itself.
  absl::Status StartSnapshot(int64_t now_ms);
  // The SNAPSHOT command, mid-turn: checks that a snapshot can start and asks for
  // one at the end of the turn (after the turn's events are committed), which
  // StartRequestedSnapshot() then starts. Same errors as StartSnapshot.
  absl::Status RequestSnapshot();
  void StartRequestedSnapshot(int64_t now_ms);
  // Timer work: reaps a finished snapshot (then removes old snapshots and covered
  // segments), starts one when due, and syncs under the everysec policy.
  void Poll(int64_t now_ms);
  // At shutdown: waits for a running snapshot, makes the log durable (a failed log
  // gets one more Retry). Returns the log's error if events could not be saved.
  absl::Status Close();

 private:
  ShardStorage(const StorageOptions& options, std::unique_ptr<Engine> engine);
  void FinishSnapshot(int wait_status, int64_t now_ms);

  StorageOptions options_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<LogWriter> log_;
  int lock_fd_ = -1;
  RecoveryReport recovery_;
  SnapshotStatus snapshot_;
  pid_t snapshot_pid_ = -1;
  bool snapshot_requested_ = false;
  uint64_t log_bytes_at_last_snapshot_ = 0;
  uint64_t records_at_last_snapshot_ = 0;
  int64_t last_snapshot_start_ms_ = 0;
};

}  // namespace wallet::shard
