// Bit-packing of weight codes (proto/bpnas/v1/model.proto, QuantizedConv.weight_packed).
//
// Code i of a layer occupies bits [i*b, (i+1)*b) of the layer's bit stream as b-bit two's
// complement; bit j of the stream is bit (j % 8) of byte j / 8; the last byte is zero-padded.
// Pure functions; thread-safe.
#ifndef BPNAS_ARTIFACT_PACKING_H_
#define BPNAS_ARTIFACT_PACKING_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace bpnas {

// ceil(count * bits / 8): the bytes `count` codes of `bits` bits take.
int64_t PackedSize(int64_t count, int bits);

// Packs codes (each must fit in `bits` bits as two's complement; bits in [1, 8]).
std::string PackCodes(const int8_t* codes, int64_t count, int bits);

// Unpacks `count` codes of `bits` bits into `out`. DATA_LOSS if `packed` is not exactly
// PackedSize(count, bits) bytes or its padding bits are not zero.
absl::Status UnpackCodes(std::string_view packed, int bits, int64_t count, int8_t* out);

}  // namespace bpnas

#endif  // BPNAS_ARTIFACT_PACKING_H_
