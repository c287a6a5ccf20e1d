// log_reader.h — reads the event log back: recovery, the history tool and tests.
//
// ReadLog() walks the segments of a data folder in order, checks every record
// (checksum, length, sequence number, payload) and hands each event to a visitor.
// It tells a torn tail from damage:
//
//   Torn tail — what a crash in the middle of a write leaves at the end of the
//   NEWEST segment: fewer bytes than a record header, a record whose length runs
//   past the end of the file, a segment shorter than its file header, a run of
//   zero bytes up to the end of the file (space the file system allocated but the
//   data never reached), or a record with a bad checksum followed only by zeros (a
//   write whose pages reached the disk in part). None of it was acknowledged (a reply leaves only after
//   its write completed), so it is cut off (RepairMode::kRepair truncates the file)
//   and reported.
//
//   Damage — anything else: a checksum mismatch on a record that is wholly in the
//   file and followed by data or by nothing, a length above the format's maximum, a gap or jump in sequence numbers, a
//   bad file header, a payload that does not decode, or any problem in a segment
//   that is not the newest. Records after it may be acknowledged changes, so
//   ReadLog refuses (DataLoss naming the file and byte offset) unless
//   DamagePolicy::kKeepPrefix says to keep what precedes the damage; then, with
//   kRepair, the damaged segment is cut at the damage and the segments after it
//   are renamed to *.damaged (kept for inspection, never read again).
//
// Example (recovery after loading a snapshot that covers through seq 41):
//   LogReadOptions options{.from_seq = 42, .repair = RepairMode::kRepair};
//   auto result = ReadLog(dir, options, [&](uint64_t seq, const Event& e) {
//     engine.Apply(e);
//     return true;  // keep reading
//   });
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "shard/events.h"

namespace wallet::shard {

enum class DamagePolicy : uint8_t { kRefuse, kKeepPrefix };
enum class RepairMode : uint8_t { kReadOnly, kRepair };

struct LogReadOptions {
  // Events with seq < from_seq are checked but not delivered; segments wholly
  // before it are not read. Reading fails if the log starts after from_seq (unless
  // the folder holds no segment at all).
  uint64_t from_seq = 1;
  // Reading stops after this seq.
  uint64_t to_seq = std::numeric_limits<uint64_t>::max();
  DamagePolicy damage = DamagePolicy::kRefuse;
  RepairMode repair = RepairMode::kReadOnly;
};

struct LogReadResult {
  uint64_t first_seq_delivered = 0;  // 0: none delivered
  uint64_t last_seq = 0;             // last valid record read (0: none)
  uint64_t events_delivered = 0;
  uint64_t segments_read = 0;
  uint64_t bytes_read = 0;
  bool stopped_by_visitor = false;
  // The torn tail cut (kRepair) or found (kReadOnly).
  bool torn_tail = false;
  std::string tail_path;
  uint64_t tail_offset = 0;
  uint64_t tail_bytes = 0;
  // Damage kept out by DamagePolicy::kKeepPrefix.
  bool damaged = false;
  std::string damage_path;
  uint64_t damage_offset = 0;
  std::string damage_reason;
  uint64_t damaged_bytes = 0;  // in the damaged segment from the damage on
  uint64_t segments_set_aside = 0;
};

// Returns false to stop reading (not an error). The event's txid and text point
// into the reader's buffer: copy them to keep them past the call.
using EventVisitor = absl::FunctionRef<bool(uint64_t seq, const Event& event)>;

// Reads the log in `dir` as described above. Errors: DataLoss for damage under
// kRefuse (the message names file and offset and the flag that keeps the prefix),
// NotFound when the log starts after options.from_seq, Unavailable for I/O errors.
absl::StatusOr<LogReadResult> ReadLog(const std::string& dir, const LogReadOptions& options,
                                      EventVisitor visit);

}  // namespace wallet::shard
