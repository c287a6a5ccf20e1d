// snapshot.cc — engine state snapshots in files (see snapshot.h).
//
// File format. Integers are fixed-width little-endian; crc32c is CRC-32C
// (common/crc32c.h) as a u32.
//
//   file          := header body trailer
//   header        := magic:"WALLSNAP" u32:format_version(=1) u32:header_bytes
//                    u64:last_seq i64:last_event_time_ms u32:partition_count
//                    u64:accounts u64:local_records u64:distributed_records
//                    u64:digest_low u64:digest_high
//                    u32:owned_bytes byte{owned_bytes}:owned_partitions
//                    u32:header_crc32c            (of every header byte before it)
//   body          := the engine state stream      (Engine::SaveState; grammar in engine.cc)
//   trailer       := u64:body_bytes u32:body_crc32c magic:"SNAPEND!"
//
// header_bytes is the whole header's length (84 + owned_bytes); owned_partitions is
// PartitionSet::ToString() of the saving engine. magic, format_version and
// header_bytes keep their place in every version, so a reader can always tell a
// newer format from damage. The file's size must be exactly header_bytes +
// body_bytes + 20: a truncated or extended file is refused before anything is read.
//
// Loading checks, in order: header magic and checksum, format version, trailer and
// size, body checksum (one pass over the mapped file), then the state stream itself
// (Engine::LoadState checks every item), then the header's counts, last event time
// and digest against the loaded engine.
#include "shard/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>

#include "common/crc32c.h"
#include "common/money.h"
#include "common/strings.h"
#include "shard/state_io.h"

namespace wallet::shard {
namespace {

constexpr std::string_view kMagic = "WALLSNAP";
constexpr std::string_view kTrailerMagic = "SNAPEND!";
constexpr uint32_t kFormatVersion = 1;
// The header without the owned-partition text: magic .. owned_bytes, and the crc.
constexpr size_t kFixedHeaderBytes = 8 + 4 + 4 + 8 + 8 + 4 + 3 * 8 + 2 * 8 + 4 + 4;
constexpr size_t kTrailerBytes = 8 + 4 + 8;
// PartitionSet::ToString() of the worst set (every other one of 2^20 partitions).
constexpr size_t kMaxOwnedBytes = size_t{16} << 20;
constexpr std::string_view kNamePrefix = "snapshot-";
constexpr std::string_view kNameSuffix = ".snap";
constexpr std::string_view kTmpSuffix = ".tmp";
constexpr size_t kSeqDigits = 20;

// DataLoss naming the file and, when known, the byte offset of the damage.
absl::Status Damaged(const std::string& path, std::string_view what, uint64_t offset) {
  return absl::DataLossError(StrCat("snapshot ", path, ": ", what, " (at byte ", offset, ")"));
}

// A status for a failed system call: the code from errno, the text naming the path.
absl::Status SystemError(int error_number, std::string_view action, const std::string& path) {
  return absl::ErrnoToStatus(error_number, ToAbsl(StrCat(action, " ", path)));
}

// Writes all of `data` to `fd` (retrying short writes and EINTR). Returns 0 or errno.
int WriteAll(int fd, const char* data, size_t size_bytes) {
  while (size_bytes > 0) {
    const ssize_t written = write(fd, data, size_bytes);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (written == 0) return EIO;
    data += written;
    size_bytes -= static_cast<size_t>(written);
  }
  return 0;
}

// Makes a rename or unlink in `dir` durable. Called after WriteSnapshot's rename
// and RemoveOldSnapshots' unlinks.
absl::Status SyncDir(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return SystemError(errno, "open folder", dir);
  const int result = fsync(fd);
  const int error_number = errno;
  close(fd);
  if (result != 0) return SystemError(error_number, "fsync folder", dir);
  return absl::OkStatus();
}

// The StateWriter of WriteSnapshot: sends each 1 MiB chunk to the file and extends
// the body checksum. The first failed write is remembered and later chunks dropped.
class FileStateWriter : public StateWriter {
 public:
  explicit FileStateWriter(int fd) : fd_(fd) {}
  uint32_t crc() const { return crc_; }
  int error_number() const { return error_number_; }

 protected:
  void Consume(const char* data, size_t size_bytes) override {
    if (error_number_ != 0) return;
    crc_ = Crc32cExtend(crc_, data, size_bytes);
    error_number_ = WriteAll(fd_, data, size_bytes);
  }

 private:
  int fd_;
  uint32_t crc_ = 0;
  int error_number_ = 0;
};

// The header of `info` (grammar above), checksum included.
std::string EncodeHeader(const SnapshotInfo& info) {
  std::string header;
  StringStateWriter out(&header, kFixedHeaderBytes + info.owned_partitions.size());
  out.Append(kMagic.data(), kMagic.size());
  out.PutU32(kFormatVersion);
  out.PutU32(static_cast<uint32_t>(kFixedHeaderBytes + info.owned_partitions.size()));
  out.PutU64(info.last_seq);
  out.PutI64(info.last_event_time_ms);
  out.PutU32(info.partition_count);
  out.PutU64(info.accounts);
  out.PutU64(info.local_records);
  out.PutU64(info.distributed_records);
  out.PutU64(info.digest.low);
  out.PutU64(info.digest.high);
  out.PutU32(static_cast<uint32_t>(info.owned_partitions.size()));
  out.Append(info.owned_partitions.data(), info.owned_partitions.size());
  out.Flush();
  out.PutU32(Crc32c(header));
  out.Flush();
  return header;
}

// Checks and decodes the header at the start of `file` (the whole file, or at least
// its header) into *info; *header_bytes is where the body starts.
absl::Status DecodeHeader(std::string_view file, SnapshotInfo* info, size_t* header_bytes) {
  const std::string& path = info->path;
  if (file.size() < kFixedHeaderBytes + kTrailerBytes) {
    return Damaged(path, StrCat("file of ", file.size(), " bytes is too short for a snapshot"),
                   file.size());
  }
  if (file.substr(0, kMagic.size()) != kMagic) return Damaged(path, "not a snapshot (bad magic)", 0);
  StateReader in(file.substr(kMagic.size()), kMagic.size());
  info->format_version = in.GetU32();
  const uint32_t length = in.GetU32();
  if (length < kFixedHeaderBytes || length > kFixedHeaderBytes + kMaxOwnedBytes ||
      length > file.size() - kTrailerBytes) {
    return Damaged(path, StrCat("header length ", length, " does not fit the file"), 12);
  }
  uint32_t stored_crc;
  std::memcpy(&stored_crc, file.data() + length - 4, 4);
  if (Crc32c(file.data(), length - 4) != stored_crc) {
    return Damaged(path, "header checksum mismatch", length - 4);
  }
  if (info->format_version != kFormatVersion) {
    return absl::FailedPreconditionError(StrCat("snapshot ", path, ": format version ",
                                                info->format_version, " is not the supported ",
                                                kFormatVersion));
  }
  info->last_seq = in.GetU64();
  info->last_event_time_ms = in.GetI64();
  info->partition_count = in.GetU32();
  info->accounts = in.GetU64();
  info->local_records = in.GetU64();
  info->distributed_records = in.GetU64();
  info->digest.low = in.GetU64();
  info->digest.high = in.GetU64();
  const uint32_t owned_bytes = in.GetU32();
  if (owned_bytes != length - kFixedHeaderBytes) {
    return Damaged(path, "owned-partition text disagrees with the header length", in.offset() - 4);
  }
  info->owned_partitions.assign(in.GetBytes(owned_bytes));
  *header_bytes = length;
  return absl::OkStatus();
}

// Checks the trailer at the end of `file` against the header's length and returns
// the body's checksum in *body_crc.
absl::Status DecodeTrailer(std::string_view file, const std::string& path, size_t header_bytes,
                           uint32_t* body_crc) {
  const size_t trailer_offset = file.size() - kTrailerBytes;
  StateReader in(file.substr(trailer_offset), trailer_offset);
  const uint64_t body_bytes = in.GetU64();
  *body_crc = in.GetU32();
  if (in.GetBytes(kTrailerMagic.size()) != kTrailerMagic) {
    return Damaged(path, "trailer missing (file truncated or not finished)", trailer_offset);
  }
  if (body_bytes != trailer_offset - header_bytes) {
    return Damaged(path, StrCat("trailer says the body has ", body_bytes, " bytes, the file holds ",
                                trailer_offset - header_bytes),
                   trailer_offset);
  }
  return absl::OkStatus();
}

// A read-only private mapping of a whole file, unmapped on destruction.
class MappedFile {
 public:
  enum class Populate { kLazily, kAtOnce };

  // Maps `path`; kAtOnce reads the whole file in up front (for a full load).
  static absl::StatusOr<MappedFile> Open(const std::string& path, Populate populate) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return SystemError(errno, "open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
      const int error_number = errno;
      close(fd);
      return SystemError(error_number, "stat", path);
    }
    MappedFile file;
    file.size_ = static_cast<size_t>(st.st_size);
    if (file.size_ > 0) {
      const int flags = MAP_PRIVATE | (populate == Populate::kAtOnce ? MAP_POPULATE : 0);
      void* data = mmap(nullptr, file.size_, PROT_READ, flags, fd, 0);
      if (data == MAP_FAILED) {
        const int error_number = errno;
        close(fd);
        return SystemError(error_number, "mmap", path);
      }
      file.data_ = static_cast<const char*>(data);
      if (populate == Populate::kAtOnce) madvise(data, file.size_, MADV_SEQUENTIAL);
    }
    close(fd);
    return file;
  }

  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(const_cast<char*>(data_), size_);
  }
  std::string_view bytes() const { return std::string_view(data_ == nullptr ? "" : data_, size_); }

 private:
  MappedFile() = default;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// A mapped snapshot file whose header and trailer have been checked.
struct CheckedFile {
  MappedFile file;
  SnapshotInfo info;
  size_t header_bytes = 0;  // where the body starts
  uint32_t body_crc = 0;    // the body's stored checksum
  // The body: from the header to the trailer.
  std::string_view body() const {
    return file.bytes().substr(header_bytes, file.bytes().size() - header_bytes - kTrailerBytes);
  }
};

// Maps the file at `path` and checks its header and trailer. Called by
// ReadSnapshotHeader (kLazily: the body is not read) and LoadSnapshot (kAtOnce).
absl::StatusOr<CheckedFile> OpenChecked(const std::string& path, MappedFile::Populate populate) {
  absl::StatusOr<MappedFile> mapped = MappedFile::Open(path, populate);
  if (!mapped.ok()) return mapped.status();
  CheckedFile checked{std::move(*mapped), SnapshotInfo{}, 0, 0};
  const std::string_view bytes = checked.file.bytes();
  checked.info.path = path;
  checked.info.file_bytes = bytes.size();
  absl::Status status = DecodeHeader(bytes, &checked.info, &checked.header_bytes);
  if (status.ok()) status = DecodeTrailer(bytes, path, checked.header_bytes, &checked.body_crc);
  if (!status.ok()) return status;
  return checked;
}

// Parses "snapshot-<20 digits>.snap[.tmp]"; false for any other name.
bool ParseSnapshotName(std::string_view name, uint64_t* last_seq, bool* is_tmp) {
  *is_tmp = name.ends_with(kTmpSuffix);
  if (*is_tmp) name.remove_suffix(kTmpSuffix.size());
  if (name.size() != kNamePrefix.size() + kSeqDigits + kNameSuffix.size() ||
      !name.starts_with(kNamePrefix) || !name.ends_with(kNameSuffix)) {
    return false;
  }
  return ParseZeroPaddedUint64(name.substr(kNamePrefix.size(), kSeqDigits), last_seq);
}

// The snapshot files (complete ones and .tmp ones) in `dir`, in no order.
struct DirEntry {
  uint64_t last_seq;
  bool is_tmp;
  std::string path;
};
absl::StatusOr<std::vector<DirEntry>> ScanDir(const std::string& dir) {
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) return SystemError(errno, "list folder", dir);
  std::vector<DirEntry> entries;
  errno = 0;
  while (const struct dirent* entry = readdir(handle)) {
    DirEntry found{0, false, ""};
    if (ParseSnapshotName(entry->d_name, &found.last_seq, &found.is_tmp)) {
      found.path = StrCat(dir, "/", entry->d_name);
      entries.push_back(std::move(found));
    }
  }
  const int error_number = errno;
  closedir(handle);
  if (error_number != 0) return SystemError(error_number, "read folder", dir);
  return entries;
}

// Everything WriteSnapshot puts in the open .tmp file, ending with its fsync.
absl::Status WriteFile(int fd, const Engine& engine, const std::string& tmp_path,
                       SnapshotInfo* info) {
  const std::string header = EncodeHeader(*info);
  if (int error_number = WriteAll(fd, header.data(), header.size()); error_number != 0) {
    return SystemError(error_number, "write", tmp_path);
  }
  FileStateWriter body(fd);
  engine.SaveState(&body);
  body.Flush();
  if (body.error_number() != 0) return SystemError(body.error_number(), "write", tmp_path);
  std::string trailer;
  StringStateWriter out(&trailer, kTrailerBytes);
  out.PutU64(body.bytes_written());
  out.PutU32(body.crc());
  out.Append(kTrailerMagic.data(), kTrailerMagic.size());
  out.Flush();
  if (int error_number = WriteAll(fd, trailer.data(), trailer.size()); error_number != 0) {
    return SystemError(error_number, "write", tmp_path);
  }
  if (fsync(fd) != 0) return SystemError(errno, "fsync", tmp_path);
  info->file_bytes = header.size() + body.bytes_written() + trailer.size();
  return absl::OkStatus();
}

}  // namespace

// Public functions: snapshot.h says what each does. Callers: the shard's storage
// (storage.cc), tests and benchmarks.

std::string SnapshotPath(const std::string& dir, uint64_t last_seq) {
  char digits[kSeqDigits + 1];
  std::snprintf(digits, sizeof(digits), "%020llu", static_cast<unsigned long long>(last_seq));
  return StrCat(dir, "/", kNamePrefix, digits, kNameSuffix);
}

absl::StatusOr<SnapshotInfo> WriteSnapshot(const Engine& engine, uint64_t last_seq,
                                           const std::string& dir) {
  SnapshotInfo info;
  info.path = SnapshotPath(dir, last_seq);
  info.format_version = kFormatVersion;
  info.last_seq = last_seq;
  info.last_event_time_ms = engine.last_event_time_ms();
  info.partition_count = engine.options().partition_count;
  info.owned_partitions = engine.owned_partitions().ToString();
  const EngineStats stats = engine.stats();
  info.accounts = stats.accounts;
  info.local_records = stats.local_records;
  info.distributed_records = stats.distributed_records;
  info.digest = engine.Digest();

  const std::string tmp_path = StrCat(info.path, kTmpSuffix);
  const int fd = open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return SystemError(errno, "create", tmp_path);
  absl::Status status = WriteFile(fd, engine, tmp_path, &info);
  if (close(fd) != 0 && status.ok()) status = SystemError(errno, "close", tmp_path);
  if (status.ok() && rename(tmp_path.c_str(), info.path.c_str()) != 0) {
    status = SystemError(errno, StrCat("rename ", tmp_path, " to"), info.path);
  }
  if (!status.ok()) {
    unlink(tmp_path.c_str());
    return status;
  }
  if (status = SyncDir(dir); !status.ok()) return status;
  return info;
}

absl::StatusOr<SnapshotInfo> ReadSnapshotHeader(const std::string& path) {
  absl::StatusOr<CheckedFile> checked = OpenChecked(path, MappedFile::Populate::kLazily);
  if (!checked.ok()) return checked.status();
  return std::move(checked->info);
}

absl::StatusOr<SnapshotInfo> LoadSnapshot(const std::string& path, Engine* engine) {
  absl::StatusOr<CheckedFile> checked = OpenChecked(path, MappedFile::Populate::kAtOnce);
  if (!checked.ok()) return checked.status();
  const SnapshotInfo& info = checked->info;
  const size_t header_bytes = checked->header_bytes;
  const std::string_view body = checked->body();
  if (Crc32c(body) != checked->body_crc) {
    return Damaged(path, StrCat("body checksum mismatch over bytes ", header_bytes, "-",
                                header_bytes + body.size()),
                   header_bytes);
  }
  StateReader reader(body, header_bytes);
  const absl::Status status = engine->LoadState(&reader);
  if (!status.ok()) {
    return absl::Status(status.code(), ToAbsl(StrCat("snapshot ", path, ": ", FromAbsl(status.message()))));
  }
  if (!reader.at_end()) {
    return Damaged(path, StrCat(reader.remaining_bytes(), " bytes follow the engine state"),
                   reader.offset());
  }
  const EngineStats stats = engine->stats();
  if (stats.accounts != info.accounts || stats.local_records != info.local_records ||
      stats.distributed_records != info.distributed_records ||
      engine->last_event_time_ms() != info.last_event_time_ms) {
    return Damaged(path, "the header's counts or last event time disagree with the state", 0);
  }
  if (const StateDigest digest = engine->Digest(); digest != info.digest) {
    return Damaged(path, StrCat("state digest ", digest.ToString(), " is not the header's ",
                                info.digest.ToString()),
                   0);
  }
  return info;
}

absl::StatusOr<std::vector<SnapshotInfo>> ListSnapshots(const std::string& dir) {
  absl::StatusOr<std::vector<DirEntry>> entries = ScanDir(dir);
  if (!entries.ok()) return entries.status();
  std::vector<SnapshotInfo> snapshots;
  for (DirEntry& entry : *entries) {
    if (entry.is_tmp) continue;
    SnapshotInfo info;
    info.path = std::move(entry.path);
    info.last_seq = entry.last_seq;
    snapshots.push_back(std::move(info));
  }
  std::sort(snapshots.begin(), snapshots.end(),
            [](const SnapshotInfo& a, const SnapshotInfo& b) { return a.last_seq < b.last_seq; });
  return snapshots;
}

absl::StatusOr<uint64_t> RemoveOldSnapshots(const std::string& dir, int keep) {
  if (keep < 1) return absl::InvalidArgumentError("RemoveOldSnapshots must keep at least 1");
  absl::StatusOr<std::vector<DirEntry>> entries = ScanDir(dir);
  if (!entries.ok()) return entries.status();
  // Complete snapshots newest first; every .tmp and every snapshot past `keep` goes.
  std::sort(entries->begin(), entries->end(), [](const DirEntry& a, const DirEntry& b) {
    return a.is_tmp != b.is_tmp ? b.is_tmp : a.last_seq > b.last_seq;
  });
  uint64_t oldest_kept = 0;
  size_t kept = 0;
  bool removed_any = false;
  for (const DirEntry& entry : *entries) {
    if (!entry.is_tmp && kept < static_cast<size_t>(keep)) {
      ++kept;
      oldest_kept = entry.last_seq;
      continue;
    }
    if (unlink(entry.path.c_str()) != 0 && errno != ENOENT) {
      return SystemError(errno, "remove", entry.path);
    }
    removed_any = true;
  }
  if (removed_any) {
    if (absl::Status status = SyncDir(dir); !status.ok()) return status;
  }
  return oldest_kept;
}

}  // namespace wallet::shard
