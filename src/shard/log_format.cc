#include "shard/log_format.h"

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "common/crc32c.h"
#include "common/money.h"
#include "common/strings.h"

namespace wallet::shard::logfmt {

std::string SegmentFileName(uint64_t first_seq) {
  char digits[21];
  std::snprintf(digits, sizeof(digits), "%020llu", static_cast<unsigned long long>(first_seq));
  return StrCat(kSegmentPrefix, digits, kSegmentSuffix);
}

bool ParseSegmentFileName(std::string_view name, uint64_t* first_seq) {
  if (name.size() != kSegmentPrefix.size() + 20 + kSegmentSuffix.size()) return false;
  if (name.substr(0, kSegmentPrefix.size()) != kSegmentPrefix) return false;
  if (name.substr(name.size() - kSegmentSuffix.size()) != kSegmentSuffix) return false;
  return ParseZeroPaddedUint64(name.substr(kSegmentPrefix.size(), 20), first_seq);
}

absl::StatusOr<std::vector<SegmentFile>> ListSegments(const std::string& dir) {
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) {
    return absl::UnavailableError(StrCat("cannot list ", dir, ": ", std::strerror(errno)));
  }
  std::vector<SegmentFile> segments;
  while (struct dirent* entry = readdir(handle)) {
    uint64_t first_seq = 0;
    if (ParseSegmentFileName(entry->d_name, &first_seq)) {
      segments.push_back(SegmentFile{first_seq, StrCat(dir, "/", entry->d_name)});
    }
  }
  closedir(handle);
  std::sort(segments.begin(), segments.end(),
            [](const SegmentFile& a, const SegmentFile& b) { return a.first_seq < b.first_seq; });
  return segments;
}

namespace {
void PutLittleEndian(uint64_t value, size_t bytes, char* out) {
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
uint64_t GetLittleEndian(const char* in, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return value;
}
// The header checksum covers magic, version and first_seq.
uint32_t HeaderCrc(const char* header) {
  uint32_t crc = Crc32c(header, 12);
  return Crc32cExtend(crc, header + 16, 8);
}
}  // namespace

std::string EncodeFileHeader(uint64_t first_seq) {
  std::string header(kFileHeaderBytes, '\0');
  std::memcpy(header.data(), kSegmentMagic, sizeof(kSegmentMagic));
  PutLittleEndian(kFormatVersion, 4, header.data() + 8);
  PutLittleEndian(first_seq, 8, header.data() + 16);
  PutLittleEndian(HeaderCrc(header.data()), 4, header.data() + 12);
  return header;
}

bool DecodeFileHeader(std::string_view bytes, uint64_t* first_seq, std::string* error) {
  if (bytes.size() < kFileHeaderBytes) {
    *error = StrCat("file header needs ", kFileHeaderBytes, " bytes, file has ", bytes.size());
    return false;
  }
  if (std::memcmp(bytes.data(), kSegmentMagic, sizeof(kSegmentMagic)) != 0) {
    *error = "not an event log segment (bad magic)";
    return false;
  }
  if (GetLittleEndian(bytes.data() + 12, 4) != HeaderCrc(bytes.data())) {
    *error = "file header checksum mismatch";
    return false;
  }
  const uint64_t version = GetLittleEndian(bytes.data() + 8, 4);
  if (version != kFormatVersion) {
    *error = StrCat("format version ", version, " is not supported (this build reads ",
                    kFormatVersion, ")");
    return false;
  }
  *first_seq = GetLittleEndian(bytes.data() + 16, 8);
  return true;
}

}  // namespace wallet::shard::logfmt
