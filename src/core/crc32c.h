// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected), as iSCSI, ext4 and LevelDB use it: the
// checksum of dlsys's framed record files (serving's request samples).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlsys {

// The CRC-32C of `n` bytes at `data`, continuing from `crc` (the value of the bytes before, or 0
// to start): crc32c(b, n) == crc32c(b + k, n - k, crc32c(b, k)). crc32c("123456789") is
// 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace dlsys
