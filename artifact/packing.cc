#include "artifact/packing.h"

#include "absl/strings/str_cat.h"

namespace bpnas {

int64_t PackedSize(int64_t count, int bits) { return (count * bits + 7) / 8; }

std::string PackCodes(const int8_t* codes, int64_t count, int bits) {
  std::string out(size_t(PackedSize(count, bits)), '\0');
  const uint32_t mask = (1u << bits) - 1;
  uint64_t bit = 0;
  for (int64_t i = 0; i < count; ++i, bit += bits) {
    const uint32_t v = uint32_t(uint8_t(codes[i])) & mask;
    // A code spans at most two bytes (bits <= 8).
    out[bit / 8] = char(uint8_t(out[bit / 8]) | uint8_t(v << (bit % 8)));
    if (bit % 8 + bits > 8) out[bit / 8 + 1] = char(uint8_t(out[bit / 8 + 1]) | uint8_t(v >> (8 - bit % 8)));
  }
  return out;
}

absl::Status UnpackCodes(std::string_view packed, int bits, int64_t count, int8_t* out) {
  if (bits < 1 || bits > 8) return absl::DataLossError(absl::StrCat("weight bits ", bits, " not in [1, 8]"));
  const int64_t want = PackedSize(count, bits);
  if (int64_t(packed.size()) != want) {
    return absl::DataLossError(absl::StrCat("weight_packed holds ", packed.size(), " bytes; ", count,
                                            " codes of ", bits, " bits take ", want));
  }
  const auto* p = reinterpret_cast<const uint8_t*>(packed.data());
  const uint32_t mask = (1u << bits) - 1, sign = 1u << (bits - 1);
  uint64_t bit = 0;
  for (int64_t i = 0; i < count; ++i, bit += bits) {
    uint32_t v = uint32_t(p[bit / 8]) >> (bit % 8);
    if (bit % 8 + bits > 8) v |= uint32_t(p[bit / 8 + 1]) << (8 - bit % 8);
    v &= mask;
    out[i] = int8_t((v & sign) ? int32_t(v) - int32_t(1u << bits) : int32_t(v));
  }
  const uint64_t used = uint64_t(count) * bits;
  if (used % 8 != 0 && (p[want - 1] >> (used % 8)) != 0) {
    return absl::DataLossError("weight_packed: the padding bits of the last byte are not zero");
  }
  return absl::OkStatus();
}

}  // namespace bpnas
