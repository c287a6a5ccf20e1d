// log_format.h — constants of the event log's on-disk format, shared by the writer
// (log_writer.cc, whose header comment is the format's grammar) and the reader.
//
// A shard's data folder holds segments named log-<first seq, 20 digits>.wlog; each
// starts with a file header and then holds records with consecutive sequence
// numbers, the first one being the number in its name.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace wallet::shard::logfmt {

inline constexpr char kSegmentMagic[8] = {'W', 'A', 'L', 'L', 'E', 'T', 'L', 'G'};
inline constexpr uint32_t kFormatVersion = 1;
// magic[8] version:u32 header_crc:u32 first_seq:u64
inline constexpr size_t kFileHeaderBytes = 24;
// crc:u32 length:u32 seq:u64 type:u8
inline constexpr size_t kRecordHeaderBytes = 17;
// No record payload is longer (events are at most a few hundred bytes); a length
// above it can only come from damage.
inline constexpr uint32_t kMaxPayloadBytes = 4096;

inline constexpr std::string_view kSegmentPrefix = "log-";
inline constexpr std::string_view kSegmentSuffix = ".wlog";

// "log-00000000000000000001.wlog" for first_seq 1.
std::string SegmentFileName(uint64_t first_seq);
// Parses a segment file name; false for any other name.
bool ParseSegmentFileName(std::string_view name, uint64_t* first_seq);

struct SegmentFile {
  uint64_t first_seq = 0;
  std::string path;  // dir + "/" + name
};
// The segments in `dir`, oldest first. Other files are ignored. Error if the folder
// cannot be read.
absl::StatusOr<std::vector<SegmentFile>> ListSegments(const std::string& dir);

// The 24-byte file header of a segment starting at first_seq.
std::string EncodeFileHeader(uint64_t first_seq);
// Checks a file header; false (with *error) if it is not one of ours.
bool DecodeFileHeader(std::string_view bytes, uint64_t* first_seq, std::string* error);

}  // namespace wallet::shard::logfmt
