// crc32c.h — CRC-32C (Castagnoli), the checksum of the event log and snapshots.
//
// A thin wrapper over Intel ISA-L's crc32_iscsi (libisal-dev), which picks the
// hardware instruction at run time. Values are the standard CRC-32C (RFC 3720):
// Crc32c("123456789") == 0xE3069283. Extend lets a checksum cover pieces that are
// not contiguous: Crc32c(a + b) == Crc32cExtend(Crc32c(a), b).
//
// Example:
//   uint32_t crc = Crc32c(header_tail);
//   crc = Crc32cExtend(crc, payload);
#pragma once

#include <cstdint>
#include <string_view>

namespace wallet {

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);
inline uint32_t Crc32cExtend(uint32_t crc, std::string_view data) {
  return Crc32cExtend(crc, data.data(), data.size());
}
inline uint32_t Crc32c(const void* data, size_t size) { return Crc32cExtend(0, data, size); }
inline uint32_t Crc32c(std::string_view data) { return Crc32cExtend(0, data.data(), data.size()); }

}  // namespace wallet
