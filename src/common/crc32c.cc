#include "common/crc32c.h"

#include <isa-l/crc.h>

#include <climits>

namespace wallet {

// ISA-L's crc32_iscsi takes and returns the raw register (no final inversion) and an
// int length, so a standard CRC-32C is ~crc32_iscsi(data, len, ~previous), fed in
// pieces of at most INT_MAX bytes.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size) {
  auto* bytes = static_cast<unsigned char*>(const_cast<void*>(data));
  uint32_t raw = ~crc;
  while (size > 0) {
    const int piece = size > static_cast<size_t>(INT_MAX) ? INT_MAX : static_cast<int>(size);
    raw = crc32_iscsi(bytes, piece, raw);
    bytes += piece;
    size -= static_cast<size_t>(piece);
  }
  return ~raw;
}

}  // namespace wallet
