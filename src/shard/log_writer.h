// log_writer.h — appends the engine's events to the shard's event log.
//
// The writer is the engine's EventSink: Append() encodes each event into a pending
// buffer with the next sequence number, and the server calls Commit() once per
// event-loop turn, after applying the turn's commands and before sending their
// replies (group commit). What "durable" means depends on the fsync policy:
//
//   kAlways      Commit() = one write + one fdatasync for the whole turn. A reply
//                leaves only once its events are on stable storage. (Default.)
//   kEverySecond Commit() = one write; fdatasync at most once a second
//                (SyncIfDue). A crash of the machine (not of the process) can lose
//                the last second of acknowledged changes.
//   kNever       Commit() = one write; the OS flushes when it likes. A machine crash
//                can lose any acknowledged change not yet flushed (typically up to
//                30 s).
//
// A process crash (kill -9) loses nothing that Commit() returned OK for under any
// policy: the data is in the kernel's page cache.
//
// Failure: if a write or fdatasync fails (disk full, I/O error), Commit() returns
// the error and the writer enters the failed state. It keeps in memory every byte
// that is not known to be on stable storage (the failed batch, and under
// kEverySecond everything written since the last successful sync) and Retry()
// rewrites them from the last synced offset — after fdatasync has failed, the page
// cache can no longer be trusted to hold them (Linux marks failed pages clean). The
// caller must not append while failed; it refuses mutations and calls Retry() until
// it succeeds.
//
// Segments: a new segment file is started once the current one reaches
// segment_bytes, always at a commit boundary. RemoveSegmentsThrough() deletes
// segments wholly covered by a snapshot.
//
// Not thread-safe; one writer per shard event loop. The folder must already exist.
//
// Example:
//   auto writer = LogWriter::Create({.dir = "/var/lib/wallet/shard-1"}, next_seq);
//   engine.set_event_sink(writer->get());
//   ... run the turn's commands ...
//   if (absl::Status s = (*writer)->Commit(now_ms); !s.ok()) hold replies, refuse mutations
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shard/events.h"

namespace wallet::shard {

enum class FsyncPolicy : uint8_t { kAlways, kEverySecond, kNever };
std::string_view FsyncPolicyName(FsyncPolicy policy);  // "always" / "everysec" / "no"
bool ParseFsyncPolicy(std::string_view text, FsyncPolicy* out);

struct LogWriterOptions {
  std::string dir;
  FsyncPolicy fsync = FsyncPolicy::kAlways;
  uint64_t segment_bytes = 64ull << 20;
};

struct LogWriterStats {
  uint64_t records = 0;        // appended by this writer
  uint64_t bytes_written = 0;  // record bytes written (retries included)
  uint64_t commits = 0;        // Commit() calls that wrote something
  uint64_t fsyncs = 0;
  uint64_t segments_created = 0;
  uint64_t segments_removed = 0;
  uint64_t failures = 0;  // failed writes/syncs
};

class LogWriter final : public EventSink {
 public:
  // Starts a new segment in options.dir whose first record will be next_seq (the
  // number after the last record recovery read). Its header is synced before this
  // returns. Fails if the segment exists with records in it or cannot be created.
  static absl::StatusOr<std::unique_ptr<LogWriter>> Create(const LogWriterOptions& options,
                                                           uint64_t next_seq);
  ~LogWriter() override;
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // EventSink: encodes the event as the next record into the pending buffer.
  void Append(const Event& event) override;

  // Writes the pending records (and syncs them under kAlways). OK with nothing
  // pending. On error the writer is failed (see above) and stays so until Retry().
  absl::Status Commit(int64_t now_ms);
  // kEverySecond: fdatasync if data is unsynced and a second has passed since the
  // last sync. No-op under the other policies.
  absl::Status SyncIfDue(int64_t now_ms);
  // Makes everything committed durable now, whatever the policy (before a snapshot
  // and at shutdown).
  absl::Status Sync();
  // In the failed state: cuts the segment back to its last synced offset, rewrites
  // everything not yet durable and syncs. OK (and no longer failed) when it all
  // reached the disk.
  absl::Status Retry();
  bool failed() const { return !failure_.ok(); }
  const absl::Status& failure() const { return failure_; }

  // Deletes closed segments whose records all have seq <= seq (never the current
  // segment). Returns how many were deleted.
  absl::StatusOr<int> RemoveSegmentsThrough(uint64_t seq);

  // Test hook (DEBUG LOGFAULT): while error_number != 0, every write and sync fails
  // with that errno, as a full or failing disk would.
  void set_injected_error(int error_number) { injected_error_ = error_number; }
  int injected_error() const { return injected_error_; }

  FsyncPolicy policy() const { return options_.fsync; }
  uint64_t last_seq() const { return next_seq_ - 1; }  // last appended
  uint64_t durable_seq() const { return durable_seq_; }  // last on stable storage
  size_t pending_bytes() const { return pending_.size() + unsynced_.size(); }
  const std::string& segment_path() const { return segment_path_; }
  const LogWriterStats& stats() const { return stats_; }

 private:
  explicit LogWriter(const LogWriterOptions& options);
  absl::Status OpenSegment(uint64_t first_seq);
  absl::Status WriteAt(std::string_view data, uint64_t offset);
  absl::Status SyncFile();
  absl::Status Fail(absl::Status status);
  void MaybeRoll(int64_t now_ms);

  LogWriterOptions options_;
  int fd_ = -1;
  std::string segment_path_;
  uint64_t segment_first_seq_ = 0;
  uint64_t synced_offset_ = 0;   // bytes of the segment known to be on stable storage
  std::string unsynced_;         // written after synced_offset_, not yet synced (kEverySecond)
  std::string pending_;          // appended, not yet written
  uint64_t next_seq_ = 1;
  uint64_t written_seq_ = 0;     // last seq written (maybe not synced)
  uint64_t durable_seq_ = 0;
  int64_t last_sync_ms_ = 0;
  int64_t next_roll_attempt_ms_ = 0;
  absl::Status failure_;
  int injected_error_ = 0;
  LogWriterStats stats_;
};

}  // namespace wallet::shard
