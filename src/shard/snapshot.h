// snapshot.h — engine state snapshots in files, so a shard restarts without
// replaying its event log from the beginning.
//
// A snapshot holds the engine's whole state (Engine::SaveState) after every event
// with sequence number <= last_seq, with a header (format version, last_seq, time of
// the last event, partitions, counts, the state digest) and CRC32C checksums. The
// file format is written as a grammar at the top of snapshot.cc.
//
// Files live in one folder, named by the sequence number they cover:
//   snapshot-00000000000000001234.snap       complete (renamed into place)
//   snapshot-00000000000000001234.snap.tmp   being written, or left by a crash
// A .snap file is never partial: it is written as .tmp, synced, renamed, and the
// folder is synced.
//
// Errors are absl::Status: DataLoss for a damaged file (naming the file and the byte
// offset when known), NotFound / PermissionDenied / ResourceExhausted / Internal for
// system call failures (naming the path and the errno text), FailedPrecondition for
// a snapshot that does not fit the engine (another partition count, a newer format).
//
// Example (the shard's storage):
//   absl::StatusOr<SnapshotInfo> written = WriteSnapshot(engine, last_seq, dir);
//   ...
//   absl::StatusOr<std::vector<SnapshotInfo>> found = ListSnapshots(dir);  // oldest first
//   auto engine = std::make_unique<Engine>(options, owned);
//   absl::StatusOr<SnapshotInfo> loaded = LoadSnapshot(found->back().path, engine.get());
//   if (loaded.ok()) replay the log from loaded->last_seq + 1;
//   absl::StatusOr<uint64_t> oldest_kept = RemoveOldSnapshots(dir, /*keep=*/2);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shard/engine.h"

namespace wallet::shard {

// What a snapshot's header says (and where the file is). ListSnapshots fills only
// path and last_seq (from the file name); the other functions fill every field.
struct SnapshotInfo {
  std::string path;
  uint32_t format_version = 0;
  uint64_t last_seq = 0;            // the state includes every event with seq <= last_seq
  int64_t last_event_time_ms = 0;   // Engine::last_event_time_ms() of the saved state
  uint32_t partition_count = 0;
  std::string owned_partitions;     // PartitionSet::ToString() of the saving engine
  uint64_t accounts = 0;
  uint64_t local_records = 0;
  uint64_t distributed_records = 0;
  StateDigest digest;               // Engine::Digest() of the saved state
  uint64_t file_bytes = 0;
};

// "snapshot-<last_seq as 20 zero-padded digits>.snap" in `dir`.
std::string SnapshotPath(const std::string& dir, uint64_t last_seq);

// Writes the engine's state as the snapshot covering `last_seq` into `dir`: a .tmp
// file written in 1 MiB chunks, fsync, rename to .snap, fsync of the folder. On any
// error the .tmp file is removed and no .snap appears; the status names the path and
// the errno text. Replaces a .snap of the same last_seq. Does not change the engine
// and takes no locks, so a fork child may call it (it allocates its buffers).
absl::StatusOr<SnapshotInfo> WriteSnapshot(const Engine& engine, uint64_t last_seq,
                                           const std::string& dir);

// Reads and checks a snapshot's header and trailer only (magic, version, header
// checksum, file size): cheap, for listing and choosing.
absl::StatusOr<SnapshotInfo> ReadSnapshotHeader(const std::string& path);

// Loads a snapshot into a freshly constructed `engine` (see Engine::LoadState),
// verifying the header, the body's CRC32C, the state stream, the counts and the
// digest recomputed after loading. On error discard the engine: when only the
// header's counts or digest disagree with the body, it holds the loaded state.
absl::StatusOr<SnapshotInfo> LoadSnapshot(const std::string& path, Engine* engine);

// The complete snapshots in `dir` by file name, oldest (smallest last_seq) first.
// .tmp files and other names are ignored. Fills path and last_seq only.
absl::StatusOr<std::vector<SnapshotInfo>> ListSnapshots(const std::string& dir);

// Removes stale .tmp snapshot files and every snapshot but the `keep` newest (keep
// >= 1), then syncs the folder. Returns the last_seq of the oldest snapshot kept (0
// when there is none), i.e. how far the log is covered by what stays. Call it only
// while no snapshot is being written into `dir`: that one's .tmp would go too.
absl::StatusOr<uint64_t> RemoveOldSnapshots(const std::string& dir, int keep);

}  // namespace wallet::shard
