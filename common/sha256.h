// SHA-256 (FIPS 180-4) of a byte string, as lowercase hex. Used for artifact checksums.
#ifndef BPNAS_COMMON_SHA256_H_
#define BPNAS_COMMON_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bpnas {

std::string Sha256Hex(std::string_view data);

// Incremental SHA-256, for streams (artifacts and checkpoints arrive in chunks):
//   Sha256 h; h.Update(a); h.Update(b); h.HexDigest() == Sha256Hex(a + b).
// HexDigest() ends the computation; Update after it is a programming error.
class Sha256 {
 public:
  Sha256();
  void Update(std::string_view data);
  std::string HexDigest();

 private:
  std::array<uint32_t, 8> h_;
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace bpnas

#endif  // BPNAS_COMMON_SHA256_H_
