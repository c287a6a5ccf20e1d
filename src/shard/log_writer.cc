// The event log's on-disk format.
//
// A shard's data folder holds segment files, each named after the sequence number
// of its first record ("log-00000000000000000001.wlog"); together, oldest first,
// they hold one gap-free run of records:
//
//   segment      := file_header record*
//   file_header  := magic:"WALLETLG" version:u32 header_crc:u32 first_seq:u64
//   record       := crc:u32 length:u32 seq:u64 type:u8 payload
//   payload      := length bytes: the event of `type` (grammar in event_codec.h)
//
//   - integers are little-endian;
//   - header_crc = CRC-32C of magic, version and first_seq;
//   - crc = CRC-32C of everything after it in the record (length, seq, type,
//     payload), so a damaged length is caught like damaged data;
//   - seq is 1 for the first event a shard ever logged and grows by one per record,
//     across segments; the first record of a segment has seq == first_seq;
//   - length <= 4096 (logfmt::kMaxPayloadBytes).
//
// Records are only ever appended, a whole loop turn's records with one write. What
// a crash can leave at the end of the newest segment, and how the reader tells it
// from damage, is described in log_reader.h.
#include "shard/log_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/check.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/strings.h"
#include "shard/event_codec.h"
#include "shard/log_format.h"

namespace wallet::shard {
namespace {

std::string ErrnoMessage(std::string_view what, std::string_view path, int error_number) {
  return StrCat(what, " ", path, ": ", std::strerror(error_number));
}

// fsync of a folder, so that a file created or removed in it survives a crash.
absl::Status SyncDirectory(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError(ErrnoMessage("open", dir, errno));
  int result = fsync(fd);
  int error_number = errno;
  close(fd);
  if (result != 0) return absl::UnavailableError(ErrnoMessage("fsync", dir, error_number));
  return absl::OkStatus();
}

void PutU32(uint32_t value, char* out) { std::memcpy(out, &value, 4); }
void PutU64(uint64_t value, char* out) { std::memcpy(out, &value, 8); }

}  // namespace

std::string_view FsyncPolicyName(FsyncPolicy policy) {
  switch (policy) {
    case FsyncPolicy::kAlways: return "always";
    case FsyncPolicy::kEverySecond: return "everysec";
    case FsyncPolicy::kNever: return "no";
  }
  return "?";
}

bool ParseFsyncPolicy(std::string_view text, FsyncPolicy* out) {
  for (FsyncPolicy policy : {FsyncPolicy::kAlways, FsyncPolicy::kEverySecond, FsyncPolicy::kNever}) {
    if (text == FsyncPolicyName(policy)) {
      *out = policy;
      return true;
    }
  }
  return false;
}

LogWriter::LogWriter(const LogWriterOptions& options) : options_(options) {}

LogWriter::~LogWriter() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<std::unique_ptr<LogWriter>> LogWriter::Create(const LogWriterOptions& options,
                                                             uint64_t next_seq) {
  if (next_seq == 0) return absl::InvalidArgumentError("sequence numbers start at 1");
  if (options.segment_bytes < logfmt::kFileHeaderBytes + 4096) {
    return absl::InvalidArgumentError("segment_bytes is too small (at least 4120)");
  }
  std::unique_ptr<LogWriter> writer(new LogWriter(options));
  writer->next_seq_ = next_seq;
  writer->written_seq_ = next_seq - 1;
  writer->durable_seq_ = next_seq - 1;
  if (absl::Status status = writer->OpenSegment(next_seq); !status.ok()) return status;
  return writer;
}

// Creates the segment whose first record is first_seq, writes and syncs its header,
// syncs the folder, and makes it the current segment (closing the previous one).
// Called by Create() and when the current segment is full. A leftover file of that
// name holding only a header (a crash right after a roll) is replaced.
absl::Status LogWriter::OpenSegment(uint64_t first_seq) {
  const std::string path = StrCat(options_.dir, "/", logfmt::SegmentFileName(first_seq));
  struct stat existing;
  if (stat(path.c_str(), &existing) == 0 &&
      static_cast<uint64_t>(existing.st_size) > logfmt::kFileHeaderBytes) {
    return absl::AlreadyExistsError(StrCat("segment ", path, " already holds records"));
  }
  if (injected_error_ != 0) {
    return absl::UnavailableError(ErrnoMessage("create", path, injected_error_));
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::UnavailableError(ErrnoMessage("create", path, errno));
  const std::string header = logfmt::EncodeFileHeader(first_seq);
  const ssize_t written = pwrite(fd, header.data(), header.size(), 0);
  const bool complete = written == static_cast<ssize_t>(header.size());
  const int error_number = !complete ? (written < 0 ? errno : ENOSPC) : (fdatasync(fd) != 0 ? errno : 0);
  if (error_number != 0) {
    close(fd);
    unlink(path.c_str());
    return absl::UnavailableError(ErrnoMessage("write header of", path, error_number));
  }
  if (absl::Status status = SyncDirectory(options_.dir); !status.ok()) {
    close(fd);
    unlink(path.c_str());
    return status;
  }
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
  segment_path_ = path;
  segment_first_seq_ = first_seq;
  synced_offset_ = logfmt::kFileHeaderBytes;
  ++stats_.segments_created;
  return absl::OkStatus();
}

// Encodes one record: header (checksum filled last) then payload, straight into the
// pending buffer.
void LogWriter::Append(const Event& event) {
  WALLET_CHECK(failure_.ok(), "append to a failed event log");
  const size_t start = pending_.size();
  pending_.resize(start + logfmt::kRecordHeaderBytes);
  EncodeEventPayload(event, &pending_);
  char* record = pending_.data() + start;
  const size_t payload_bytes = pending_.size() - start - logfmt::kRecordHeaderBytes;
  PutU32(static_cast<uint32_t>(payload_bytes), record + 4);
  PutU64(next_seq_, record + 8);
  record[16] = static_cast<char>(event.type);
  PutU32(Crc32c(record + 4, pending_.size() - start - 4), record);
  ++next_seq_;
  ++stats_.records;
}

// pwrite of all of `data` at `offset` of the current segment, or the error.
absl::Status LogWriter::WriteAt(std::string_view data, uint64_t offset) {
  while (!data.empty()) {
    if (injected_error_ != 0) {
      return absl::UnavailableError(ErrnoMessage("write", segment_path_, injected_error_));
    }
    ssize_t n = pwrite(fd_, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(ErrnoMessage("write", segment_path_, errno));
    }
    if (n == 0) return absl::UnavailableError(ErrnoMessage("write", segment_path_, ENOSPC));
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
    stats_.bytes_written += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status LogWriter::SyncFile() {
  if (injected_error_ != 0) {
    return absl::UnavailableError(ErrnoMessage("fdatasync", segment_path_, injected_error_));
  }
  ++stats_.fsyncs;
  if (fdatasync(fd_) != 0) return absl::UnavailableError(ErrnoMessage("fdatasync", segment_path_, errno));
  return absl::OkStatus();
}

absl::Status LogWriter::Fail(absl::Status status) {
  ++stats_.failures;
  if (failure_.ok()) LogError("event log failed: %s", std::string(status.message()).c_str());
  failure_ = status;
  return status;
}

absl::Status LogWriter::Commit(int64_t now_ms) {
  if (!failure_.ok()) return failure_;
  if (pending_.empty()) return absl::OkStatus();
  ++stats_.commits;
  const uint64_t offset = synced_offset_ + unsynced_.size();
  if (absl::Status status = WriteAt(pending_, offset); !status.ok()) return Fail(status);
  written_seq_ = last_seq();
  switch (options_.fsync) {
    case FsyncPolicy::kAlways:
      if (absl::Status status = SyncFile(); !status.ok()) return Fail(status);
      synced_offset_ = offset + pending_.size();
      durable_seq_ = written_seq_;
      last_sync_ms_ = now_ms;
      break;
    case FsyncPolicy::kEverySecond:
      unsynced_.append(pending_);
      break;
    case FsyncPolicy::kNever:
      synced_offset_ = offset + pending_.size();  // nothing kept: the OS flushes
      break;
  }
  pending_.clear();
  MaybeRoll(now_ms);
  return failure_;  // a sync before a roll may have failed: then this turn is held too
}

absl::Status LogWriter::SyncIfDue(int64_t now_ms) {
  if (options_.fsync != FsyncPolicy::kEverySecond || !failure_.ok()) return failure_;
  if (unsynced_.empty() || now_ms - last_sync_ms_ < 1000) return absl::OkStatus();
  if (absl::Status status = Sync(); !status.ok()) return status;
  last_sync_ms_ = now_ms;
  return absl::OkStatus();
}

absl::Status LogWriter::Sync() {
  if (!failure_.ok()) return failure_;
  if (absl::Status status = SyncFile(); !status.ok()) return Fail(status);
  synced_offset_ += unsynced_.size();
  unsynced_.clear();
  durable_seq_ = written_seq_;
  return absl::OkStatus();
}

absl::Status LogWriter::Retry() {
  if (failure_.ok()) return absl::OkStatus();
  if (injected_error_ != 0) {
    return absl::UnavailableError(ErrnoMessage("write", segment_path_, injected_error_));
  }
  // Cut whatever part of the failed writes reached the file, then write it all again.
  if (ftruncate(fd_, static_cast<off_t>(synced_offset_)) != 0) {
    return absl::UnavailableError(ErrnoMessage("truncate", segment_path_, errno));
  }
  const uint64_t unsynced_bytes = unsynced_.size();
  if (absl::Status status = WriteAt(unsynced_, synced_offset_); !status.ok()) return status;
  if (absl::Status status = WriteAt(pending_, synced_offset_ + unsynced_bytes); !status.ok()) {
    return status;
  }
  if (absl::Status status = SyncFile(); !status.ok()) return status;
  synced_offset_ += unsynced_bytes + pending_.size();
  unsynced_.clear();
  pending_.clear();
  written_seq_ = last_seq();
  durable_seq_ = written_seq_;
  LogInfo("event log recovered: %s writable again, durable through seq %llu", segment_path_.c_str(),
          static_cast<unsigned long long>(durable_seq_));
  failure_ = absl::OkStatus();
  return absl::OkStatus();
}

// Starts the next segment once the current one is full. Under kEverySecond the old
// segment is synced first, so that only the newest segment can ever hold unsynced
// records. A failed roll is not an error: the current segment keeps growing and the
// roll is tried again a second later.
void LogWriter::MaybeRoll(int64_t now_ms) {
  if (synced_offset_ + unsynced_.size() < options_.segment_bytes || now_ms < next_roll_attempt_ms_) return;
  if (!unsynced_.empty()) {
    if (absl::Status status = Sync(); !status.ok()) return;
  }
  if (options_.fsync == FsyncPolicy::kNever) {
    // Even without a sync policy, a closed segment is made durable once.
    if (fdatasync(fd_) != 0) LogWarning("%s", ErrnoMessage("fdatasync", segment_path_, errno).c_str());
  }
  if (absl::Status status = OpenSegment(next_seq_); !status.ok()) {
    LogWarning("cannot start a new log segment (current one keeps growing): %s",
               std::string(status.message()).c_str());
    next_roll_attempt_ms_ = now_ms + 1000;
  }
}

absl::StatusOr<int> LogWriter::RemoveSegmentsThrough(uint64_t seq) {
  absl::StatusOr<std::vector<logfmt::SegmentFile>> segments = logfmt::ListSegments(options_.dir);
  if (!segments.ok()) return segments.status();
  int removed = 0;
  for (size_t i = 0; i + 1 < segments->size(); ++i) {
    const logfmt::SegmentFile& segment = (*segments)[i];
    // Segment i holds seqs [first_seq, next.first_seq - 1].
    if (segment.first_seq >= segment_first_seq_ || (*segments)[i + 1].first_seq - 1 > seq) break;
    if (unlink(segment.path.c_str()) != 0) {
      return absl::UnavailableError(ErrnoMessage("remove", segment.path, errno));
    }
    ++removed;
  }
  stats_.segments_removed += static_cast<uint64_t>(removed);
  if (removed > 0) {
    if (absl::Status status = SyncDirectory(options_.dir); !status.ok()) return status;
  }
  return removed;
}

}  // namespace wallet::shard
