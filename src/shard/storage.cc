#include "shard/storage.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/log.h"
#include "common/strings.h"
#include "shard/log_format.h"
#include "shard/snapshot.h"

namespace wallet::shard {
namespace {

int64_t MonotonicMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string ErrnoMessage(std::string_view what, std::string_view path) {
  return StrCat(what, " ", path, ": ", std::strerror(errno));
}

// Creates `dir` (and its parents) if missing.
absl::Status MakeDirectories(const std::string& dir) {
  for (size_t slash = dir.find('/', 1);; slash = dir.find('/', slash + 1)) {
    const std::string prefix = slash == std::string::npos ? dir : dir.substr(0, slash);
    if (!prefix.empty() && mkdir(prefix.c_str(), 0750) != 0 && errno != EEXIST) {
      return absl::UnavailableError(ErrnoMessage("create folder", prefix));
    }
    if (slash == std::string::npos) return absl::OkStatus();
  }
}

// Takes the folder's lock file; fails if another process holds it. The file keeps
// the holder's pid for the error message of the next one.
absl::StatusOr<int> LockDataDir(const std::string& dir) {
  const std::string path = StrCat(dir, "/LOCK");
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return absl::UnavailableError(ErrnoMessage("open", path));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {0};
    ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
    close(fd);
    return absl::FailedPreconditionError(
        StrCat("data folder ", dir, " is in use by another shard (pid ",
               n > 0 ? std::string_view(holder, static_cast<size_t>(n)) : std::string_view("?"), ")"));
  }
  const std::string pid = StrCat(getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    LogWarning("%s", ErrnoMessage("write pid to", path).c_str());
  }
  return fd;
}

}  // namespace

std::string RecoveryReport::Describe() const {
  std::string text;
  if (snapshot_path.empty()) {
    text = "no snapshot (empty state)";
  } else {
    text = StrCat("snapshot ", snapshot_path, " (seq ", snapshot_seq, ", ", snapshot_accounts,
                  " accounts) loaded in ", snapshot_load_ms, " ms");
  }
  const double rate = replay_ms > 0 ? static_cast<double>(events_replayed) * 1000.0 / static_cast<double>(replay_ms)
                                    : 0.0;
  StrAppend(&text, "; replayed ", events_replayed, " events from ", segments_read, " segment(s) in ",
            replay_ms, " ms");
  if (replay_ms > 0) StrAppend(&text, " (", static_cast<uint64_t>(rate), " events/s)");
  StrAppend(&text, "; state at seq ", last_seq);
  if (log.torn_tail) {
    StrAppend(&text, "; torn tail cut: ", log.tail_bytes, " bytes at offset ", log.tail_offset, " of ",
              log.tail_path);
  }
  if (log.damaged) {
    StrAppend(&text, "; DAMAGE kept out: ", log.damage_path, " at offset ", log.damage_offset, " (",
              log.damage_reason, "), ", log.damaged_bytes, " bytes and ", log.segments_set_aside,
              " later segment(s) set aside");
  }
  if (!skipped_snapshots.empty()) StrAppend(&text, "; skipped snapshots: ", skipped_snapshots);
  return text;
}

ShardStorage::ShardStorage(const StorageOptions& options, std::unique_ptr<Engine> engine)
    : options_(options), engine_(std::move(engine)) {}

ShardStorage::~ShardStorage() {
  if (snapshot_pid_ > 0) {
    kill(snapshot_pid_, SIGKILL);
    waitpid(snapshot_pid_, nullptr, 0);
  }
  if (engine_) engine_->set_event_sink(nullptr);
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<ShardStorage>> ShardStorage::Open(const StorageOptions& options,
                                                                 const EngineOptions& engine_options,
                                                                 PartitionSet owned,
                                                                 RecoveryReport* report) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("no data folder given");
  if (options.snapshots_kept < 1) return absl::InvalidArgumentError("snapshots_kept must be at least 1");
  if (absl::Status status = MakeDirectories(options.data_dir); !status.ok()) return status;
  absl::StatusOr<int> lock_fd = LockDataDir(options.data_dir);
  if (!lock_fd.ok()) return lock_fd.status();

  std::unique_ptr<ShardStorage> storage(new ShardStorage(options, nullptr));
  storage->lock_fd_ = *lock_fd;
  RecoveryReport& recovery = storage->recovery_;

  // The newest snapshot that loads; older ones are tried if a newer one is damaged.
  absl::StatusOr<std::vector<SnapshotInfo>> snapshots = ListSnapshots(options.data_dir);
  if (!snapshots.ok()) return snapshots.status();
  for (auto it = snapshots->rbegin(); it != snapshots->rend() && storage->engine_ == nullptr; ++it) {
    auto engine = std::make_unique<Engine>(engine_options, owned);
    const int64_t start_ms = MonotonicMs();
    absl::StatusOr<SnapshotInfo> loaded = LoadSnapshot(it->path, engine.get());
    if (!loaded.ok()) {
      LogError("snapshot %s cannot be loaded, trying an older one: %s", it->path.c_str(),
               std::string(loaded.status().message()).c_str());
      StrAppend(&recovery.skipped_snapshots, recovery.skipped_snapshots.empty() ? "" : "; ", it->path, ": ",
                FromAbsl(loaded.status().message()));
      continue;
    }
    recovery.snapshot_load_ms = MonotonicMs() - start_ms;
    recovery.snapshot_path = it->path;
    recovery.snapshot_seq = loaded->last_seq;
    recovery.snapshot_accounts = loaded->accounts;
    storage->engine_ = std::move(engine);
  }
  if (storage->engine_ == nullptr) {
    if (!snapshots->empty()) {
      // Starting from empty is right only if the log still holds every event.
      LogWarning("no snapshot could be loaded; replaying the whole log");
    }
    storage->engine_ = std::make_unique<Engine>(engine_options, owned);
  }
  storage->engine_->set_owned_partitions(owned);

  // Replay the log after the snapshot.
  LogReadOptions read_options;
  read_options.from_seq = recovery.snapshot_seq + 1;
  read_options.damage = options.damage;
  read_options.repair = RepairMode::kRepair;
  Engine& engine = *storage->engine_;
  const int64_t replay_start_ms = MonotonicMs();
  // Each event is prefetched when read and applied kReplayAhead events later, so
  // that the cache misses of the next events (accounts, index slots) overlap:
  // without it replay runs at the engine's miss-bound rate (~2 M events/s).
  constexpr size_t kReplayAhead = 8;
  struct Ahead {
    Event event;
    std::string txid;  // the reader's buffer may be gone by the time it is applied
    std::string text;
  };
  std::array<Ahead, kReplayAhead> ahead;
  uint64_t read = 0;
  absl::StatusOr<LogReadResult> replay =
      ReadLog(options.data_dir, read_options, [&](uint64_t, const Event& event) {
        Ahead& slot = ahead[read % kReplayAhead];
        if (read >= kReplayAhead) engine.Apply(slot.event);  // the event read kReplayAhead ago
        slot.txid.assign(event.txid);
        slot.text.assign(event.text);
        slot.event = event;
        slot.event.txid = slot.txid;
        slot.event.text = slot.text;
        engine.Prefetch(slot.event);
        ++read;
        return true;
      });
  if (!replay.ok()) return replay.status();
  for (uint64_t i = read - std::min<uint64_t>(read, kReplayAhead); i < read; ++i) {
    engine.Apply(ahead[i % kReplayAhead].event);
  }
  recovery.replay_ms = MonotonicMs() - replay_start_ms;
  recovery.log = *replay;
  recovery.events_replayed = replay->events_delivered;
  recovery.segments_read = replay->segments_read;
  recovery.last_seq = std::max(recovery.snapshot_seq, replay->last_seq);
  if (replay->last_seq < recovery.snapshot_seq) {
    // Every segment left holds only events the snapshot already covers (the log was
    // cut behind it by damage): set them aside so that the new segment, starting
    // right after the snapshot, does not follow a gap.
    absl::StatusOr<std::vector<logfmt::SegmentFile>> stale = logfmt::ListSegments(options.data_dir);
    if (!stale.ok()) return stale.status();
    for (const logfmt::SegmentFile& segment : *stale) {
      const std::string aside = StrCat(segment.path, ".superseded");
      if (rename(segment.path.c_str(), aside.c_str()) != 0) {
        return absl::UnavailableError(ErrnoMessage("rename", segment.path));
      }
    }
  }

  LogWriterOptions log_options;
  log_options.dir = options.data_dir;
  log_options.fsync = options.fsync;
  log_options.segment_bytes = options.segment_bytes;
  absl::StatusOr<std::unique_ptr<LogWriter>> writer = LogWriter::Create(log_options, recovery.last_seq + 1);
  if (!writer.ok()) return writer.status();
  storage->log_ = std::move(*writer);
  storage->engine_->set_event_sink(storage->log_.get());
  storage->snapshot_.last_seq = recovery.snapshot_seq;
  storage->last_snapshot_start_ms_ = WallClockMs();
  if (report != nullptr) *report = recovery;
  return storage;
}

absl::Status ShardStorage::RequestSnapshot() {
  if (snapshot_pid_ > 0 || snapshot_requested_) {
    return absl::AlreadyExistsError(StrCat("a snapshot of seq ", snapshot_.in_progress_seq, " is in progress"));
  }
  if (log_->failed()) return absl::UnavailableError("the event log is failed; no snapshot until it recovers");
  snapshot_requested_ = true;
  return absl::OkStatus();
}

void ShardStorage::StartRequestedSnapshot(int64_t now_ms) {
  if (!snapshot_requested_) return;
  snapshot_requested_ = false;
  if (absl::Status status = StartSnapshot(now_ms); !status.ok()) {
    ++snapshot_.failed;
    snapshot_.last_error = FromAbsl(status.message());
    LogWarning("cannot start the requested snapshot: %s", snapshot_.last_error.c_str());
  }
}

absl::Status ShardStorage::StartSnapshot(int64_t now_ms) {
  if (snapshot_pid_ > 0) {
    return absl::AlreadyExistsError(StrCat("a snapshot of seq ", snapshot_.in_progress_seq, " is in progress"));
  }
  if (log_->failed()) return absl::UnavailableError("the event log is failed; no snapshot until it recovers");
  // The snapshot must cover only durable events: a crash after it is in place must
  // not bring back events the log lost.
  if (absl::Status status = log_->Commit(now_ms); !status.ok()) return status;
  if (absl::Status status = log_->Sync(); !status.ok()) return status;
  const uint64_t seq = log_->last_seq();
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return absl::UnavailableError(ErrnoMessage("fork for snapshot of", options_.data_dir));
  if (pid == 0) {
    // Child: the engine image is frozen at `seq`. Drop every inherited descriptor
    // (sockets, the folder lock) so that a shard restarted after its parent died
    // can bind its port and lock its folder, and die with the parent. Stop signals
    // are blocked in the parent (it reads them from a signalfd); restore them so
    // SIGTERM ends us.
    close_range(3, ~0U, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, nullptr);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    absl::StatusOr<SnapshotInfo> written = WriteSnapshot(*engine_, seq, options_.data_dir);
    if (!written.ok()) {
      LogError("snapshot of seq %llu failed: %s", static_cast<unsigned long long>(seq),
               std::string(written.status().message()).c_str());
      _exit(1);
    }
    _exit(0);
  }
  snapshot_pid_ = pid;
  snapshot_.in_progress = true;
  snapshot_.in_progress_seq = seq;
  snapshot_.in_progress_since_ms = now_ms;
  log_bytes_at_last_snapshot_ = log_->stats().bytes_written;
  records_at_last_snapshot_ = log_->stats().records;
  last_snapshot_start_ms_ = now_ms;
  LogInfo("snapshot of seq %llu started (pid %d)", static_cast<unsigned long long>(seq), static_cast<int>(pid));
  return absl::OkStatus();
}

// Records the end of the snapshot child; on success removes snapshots beyond the
// ones kept and the log segments the oldest kept snapshot covers.
void ShardStorage::FinishSnapshot(int wait_status, int64_t now_ms) {
  snapshot_pid_ = -1;
  snapshot_.in_progress = false;
  snapshot_.last_duration_ms = now_ms - snapshot_.in_progress_since_ms;
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
    ++snapshot_.failed;
    snapshot_.last_error = WIFSIGNALED(wait_status)
                               ? StrCat("snapshot process killed by signal ", WTERMSIG(wait_status))
                               : StrCat("snapshot process exited with status ", WEXITSTATUS(wait_status),
                                        " (see the log above)");
    LogError("snapshot of seq %llu failed: %s", static_cast<unsigned long long>(snapshot_.in_progress_seq),
             snapshot_.last_error.c_str());
    return;
  }
  ++snapshot_.taken;
  snapshot_.last_seq = snapshot_.in_progress_seq;
  snapshot_.last_done_ms = now_ms;
  snapshot_.last_error.clear();
  LogInfo("snapshot of seq %llu done in %lld ms", static_cast<unsigned long long>(snapshot_.last_seq),
          static_cast<long long>(snapshot_.last_duration_ms));
  absl::StatusOr<uint64_t> oldest_kept = RemoveOldSnapshots(options_.data_dir, options_.snapshots_kept);
  if (!oldest_kept.ok()) {
    LogWarning("removing old snapshots: %s", std::string(oldest_kept.status().message()).c_str());
    return;
  }
  if (options_.keep_log_segments) return;
  absl::StatusOr<int> removed = log_->RemoveSegmentsThrough(*oldest_kept);
  if (!removed.ok()) {
    LogWarning("removing log segments: %s", std::string(removed.status().message()).c_str());
  } else if (*removed > 0) {
    LogInfo("removed %d log segment(s) covered by the snapshot of seq %llu", *removed,
            static_cast<unsigned long long>(*oldest_kept));
  }
}

void ShardStorage::Poll(int64_t now_ms) {
  if (snapshot_pid_ > 0) {
    int wait_status = 0;
    pid_t done = waitpid(snapshot_pid_, &wait_status, WNOHANG);
    if (done == snapshot_pid_) FinishSnapshot(wait_status, now_ms);
  }
  if (log_->failed()) return;
  if (absl::Status status = log_->SyncIfDue(now_ms); !status.ok()) return;
  if (snapshot_pid_ > 0) return;
  const bool due_by_size = options_.snapshot_log_bytes > 0 &&
                           log_->stats().bytes_written - log_bytes_at_last_snapshot_ >= options_.snapshot_log_bytes;
  const bool due_by_time = options_.snapshot_interval_ms > 0 &&
                           now_ms - last_snapshot_start_ms_ >= options_.snapshot_interval_ms &&
                           log_->stats().records > records_at_last_snapshot_;
  if (due_by_size || due_by_time) {
    if (absl::Status status = StartSnapshot(now_ms); !status.ok()) {
      LogWarning("cannot start a snapshot: %s", std::string(status.message()).c_str());
      last_snapshot_start_ms_ = now_ms;  // try again after the interval, not every tick
      log_bytes_at_last_snapshot_ = log_->stats().bytes_written;
    }
  }
}

absl::Status ShardStorage::Close() {
  if (snapshot_pid_ > 0) {
    // Not worth delaying the stop: the log holds everything; the next start removes
    // the unfinished .tmp file.
    kill(snapshot_pid_, SIGKILL);
    waitpid(snapshot_pid_, nullptr, 0);
    snapshot_pid_ = -1;
    snapshot_.in_progress = false;
    LogInfo("snapshot of seq %llu abandoned at shutdown", static_cast<unsigned long long>(snapshot_.in_progress_seq));
  }
  if (log_->failed()) {
    if (absl::Status status = log_->Retry(); !status.ok()) {
      LogError("stopping with %zu bytes of events that never reached the disk; their requests were never "
               "answered: %s",
               log_->pending_bytes(), std::string(status.message()).c_str());
      return status;
    }
  }
  if (absl::Status status = log_->Commit(WallClockMs()); !status.ok()) return status;
  return log_->Sync();
}

}  // namespace wallet::shard
