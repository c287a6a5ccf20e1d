#include "shard/log_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/crc32c.h"
#include "common/log.h"
#include "common/strings.h"
#include "shard/event_codec.h"
#include "shard/log_format.h"

namespace wallet::shard {
namespace {

std::string ErrnoMessage(std::string_view what, std::string_view path) {
  return StrCat(what, " ", path, ": ", std::strerror(errno));
}

// Reads a whole file into *out (reusing its capacity).
absl::Status ReadWholeFile(const std::string& path, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError(ErrnoMessage("open", path));
  struct stat info;
  if (fstat(fd, &info) != 0) {
    absl::Status status = absl::UnavailableError(ErrnoMessage("stat", path));
    close(fd);
    return status;
  }
  out->resize(static_cast<size_t>(info.st_size));
  size_t done = 0;
  while (done < out->size()) {
    ssize_t n = pread(fd, out->data() + done, out->size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status status = absl::UnavailableError(ErrnoMessage("read", path));
      close(fd);
      return status;
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  return absl::OkStatus();
}

bool AllZero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

uint32_t GetU32(const char* in) {
  uint32_t value;
  std::memcpy(&value, in, 4);
  return value;
}
uint64_t GetU64(const char* in) {
  uint64_t value;
  std::memcpy(&value, in, 8);
  return value;
}

absl::Status SyncDirectoryOf(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError(ErrnoMessage("open", dir));
  int result = fsync(fd);
  close(fd);
  if (result != 0) return absl::UnavailableError(ErrnoMessage("fsync", dir));
  return absl::OkStatus();
}

// Cuts `path` to `size` bytes and syncs it; a size inside the file header removes
// the file.
absl::Status CutFile(const std::string& dir, const std::string& path, uint64_t size) {
  if (size < logfmt::kFileHeaderBytes) {
    if (unlink(path.c_str()) != 0) return absl::UnavailableError(ErrnoMessage("remove", path));
    return SyncDirectoryOf(dir);
  }
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError(ErrnoMessage("open", path));
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 || fdatasync(fd) != 0) {
    absl::Status status = absl::UnavailableError(ErrnoMessage("truncate", path));
    close(fd);
    return status;
  }
  close(fd);
  return absl::OkStatus();
}

// What went wrong at a place in a segment.
struct Problem {
  enum class Kind { kNone, kTornTail, kDamage } kind = Kind::kNone;
  uint64_t offset = 0;
  std::string reason;
};

// A problem at `offset` of a segment: a torn tail when it may be one (the newest
// segment, and the shape a crash leaves), damage otherwise.
Problem Classify(bool newest_segment, bool tail_shaped, std::string_view rest, uint64_t offset,
                 std::string reason) {
  Problem problem;
  problem.offset = offset;
  problem.reason = std::move(reason);
  const bool zero_filled = !rest.empty() && AllZero(rest);  // an empty `rest` means "not a tail"
  const bool torn = newest_segment && (tail_shaped || zero_filled);
  problem.kind = torn ? Problem::Kind::kTornTail : Problem::Kind::kDamage;
  if (!torn && zero_filled) problem.reason += " (zero-filled, but not in the newest segment)";
  return problem;
}

}  // namespace

absl::StatusOr<LogReadResult> ReadLog(const std::string& dir, const LogReadOptions& options,
                                      EventVisitor visit) {
  absl::StatusOr<std::vector<logfmt::SegmentFile>> listed = logfmt::ListSegments(dir);
  if (!listed.ok()) return listed.status();
  const std::vector<logfmt::SegmentFile>& segments = *listed;
  LogReadResult result;
  if (segments.empty()) return result;

  // The segment holding from_seq: the last one starting at or before it.
  size_t start = 0;
  while (start + 1 < segments.size() && segments[start + 1].first_seq <= options.from_seq) ++start;
  if (segments[start].first_seq > options.from_seq) {
    return absl::NotFoundError(StrCat("event log in ", dir, " starts at seq ", segments[start].first_seq,
                                      ", but seq ", options.from_seq, " is needed"));
  }

  std::string buffer;
  uint64_t expected_seq = segments[start].first_seq;
  for (size_t index = start; index < segments.size(); ++index) {
    const logfmt::SegmentFile& segment = segments[index];
    const bool newest = index + 1 == segments.size();
    if (absl::Status status = ReadWholeFile(segment.path, &buffer); !status.ok()) return status;
    ++result.segments_read;
    result.bytes_read += buffer.size();
    const std::string_view data(buffer);

    Problem problem;
    uint64_t offset = 0;
    uint64_t header_seq = 0;
    std::string header_error;
    if (data.size() < logfmt::kFileHeaderBytes) {
      problem = Classify(newest, /*tail_shaped=*/true, data, 0,
                         StrCat("segment is shorter (", data.size(), " bytes) than its header"));
    } else if (!logfmt::DecodeFileHeader(data, &header_seq, &header_error)) {
      problem = Classify(newest, /*tail_shaped=*/false, data, 0, header_error);
    } else if (header_seq != segment.first_seq) {
      problem = Classify(newest, false, {}, 0,
                         StrCat("header says first seq ", header_seq, ", file name says ", segment.first_seq));
    } else if (header_seq != expected_seq) {
      problem = Classify(newest, false, {}, 0,
                         StrCat("sequence gap: expected seq ", expected_seq, ", segment starts at ", header_seq));
    } else {
      offset = logfmt::kFileHeaderBytes;
    }

    while (problem.kind == Problem::Kind::kNone && offset < data.size()) {
      const std::string_view rest = data.substr(offset);
      if (rest.size() < logfmt::kRecordHeaderBytes) {
        problem = Classify(newest, true, rest, offset,
                           StrCat("truncated record header (", rest.size(), " bytes)"));
        break;
      }
      const uint32_t length = GetU32(rest.data() + 4);
      if (length > logfmt::kMaxPayloadBytes) {
        problem = Classify(newest, false, rest, offset, StrCat("record length ", length, " above the maximum"));
        break;
      }
      const size_t record_bytes = logfmt::kRecordHeaderBytes + length;
      if (rest.size() < record_bytes) {
        problem = Classify(newest, true, rest, offset,
                           StrCat("truncated record: ", record_bytes, " bytes announced, ", rest.size(), " in the file"));
        break;
      }
      if (Crc32c(rest.data() + 4, record_bytes - 4) != GetU32(rest.data())) {
        // A write cut short by a power loss can leave the record's pages partly
        // unwritten and the file extended with zeros past it: tail-shaped when only
        // zeros follow the record. A bad record with nothing (or data) after it is
        // damage.
        const std::string_view after = rest.substr(record_bytes);
        const bool zeros_follow = !after.empty() && AllZero(after);
        problem = Classify(newest, zeros_follow, rest, offset, "record checksum mismatch");
        break;
      }
      const uint64_t seq = GetU64(rest.data() + 8);
      if (seq != expected_seq) {
        problem = Classify(newest, false, {}, offset,
                           StrCat("sequence gap: expected seq ", expected_seq, ", record has ", seq));
        break;
      }
      Event event;
      std::string decode_error;
      const auto type = static_cast<EventType>(static_cast<uint8_t>(rest[16]));
      if (!DecodeEventPayload(type, rest.substr(logfmt::kRecordHeaderBytes, length), &event, &decode_error)) {
        problem = Classify(newest, false, {}, offset, decode_error);
        break;
      }
      if (seq > options.to_seq) return result;
      result.last_seq = seq;
      ++expected_seq;
      offset += record_bytes;
      if (seq >= options.from_seq) {
        if (result.first_seq_delivered == 0) result.first_seq_delivered = seq;
        ++result.events_delivered;
        if (!visit(seq, event)) {
          result.stopped_by_visitor = true;
          return result;
        }
      }
    }

    if (problem.kind == Problem::Kind::kTornTail) {
      result.torn_tail = true;
      result.tail_path = segment.path;
      result.tail_offset = problem.offset;
      result.tail_bytes = data.size() - problem.offset;
      LogWarning("event log: torn tail in %s at offset %llu (%s): %llu bytes %s", segment.path.c_str(),
                 static_cast<unsigned long long>(problem.offset), problem.reason.c_str(),
                 static_cast<unsigned long long>(result.tail_bytes),
                 options.repair == RepairMode::kRepair ? "cut off" : "ignored (read-only)");
      if (options.repair == RepairMode::kRepair) {
        if (absl::Status status = CutFile(dir, segment.path, problem.offset); !status.ok()) return status;
      }
      return result;
    }
    if (problem.kind == Problem::Kind::kDamage) {
      const uint64_t damaged_bytes = data.size() - problem.offset;
      if (options.damage == DamagePolicy::kRefuse) {
        return absl::DataLossError(StrCat(
            "event log damaged in ", segment.path, " at offset ", problem.offset, ": ", problem.reason, "; ",
            damaged_bytes, " bytes of this segment and ", segments.size() - index - 1,
            " later segment(s) follow. Start with --log_damage=keep_prefix to keep only the events "
            "before this point (the events after it are lost)"));
      }
      result.damaged = true;
      result.damage_path = segment.path;
      result.damage_offset = problem.offset;
      result.damage_reason = problem.reason;
      result.damaged_bytes = damaged_bytes;
      result.segments_set_aside = segments.size() - index - 1;
      LogError("event log damaged in %s at offset %llu (%s): keeping the %llu events before it, "
               "dropping %llu bytes and %llu later segment(s)",
               segment.path.c_str(), static_cast<unsigned long long>(problem.offset), problem.reason.c_str(),
               static_cast<unsigned long long>(result.last_seq), static_cast<unsigned long long>(damaged_bytes),
               static_cast<unsigned long long>(result.segments_set_aside));
      if (options.repair == RepairMode::kRepair) {
        for (size_t later = index + 1; later < segments.size(); ++later) {
          const std::string aside = StrCat(segments[later].path, ".damaged");
          if (rename(segments[later].path.c_str(), aside.c_str()) != 0) {
            return absl::UnavailableError(ErrnoMessage("rename", segments[later].path));
          }
        }
        if (problem.offset < logfmt::kFileHeaderBytes) {
          // Nothing valid in this segment: set it aside whole, like the later ones.
          const std::string aside = StrCat(segment.path, ".damaged");
          if (rename(segment.path.c_str(), aside.c_str()) != 0) {
            return absl::UnavailableError(ErrnoMessage("rename", segment.path));
          }
        } else if (absl::Status status = CutFile(dir, segment.path, problem.offset); !status.ok()) {
          return status;
        }
        if (absl::Status status = SyncDirectoryOf(dir); !status.ok()) return status;
      }
      return result;
    }
  }
  return result;
}

}  // namespace wallet::shard
