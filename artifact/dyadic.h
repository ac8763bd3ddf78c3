// Dyadic numbers: a real multiplier M stored as m * 2^-shift with integer m, so that integer-only
// inference (artifact/integer_inference.h) rescales with one integer multiply and one rounding shift,
// as HAWQ-V3 does. The multipliers are computed once, in double, when a model is built.
//
//   Dyadic d = *MakeDyadic(0.3);   // m = 1288490189, shift = 32
//   int64_t y = ApplyDyadic(x, d); // floor(x * 0.3 + 1/2) for any int32 x
//
// Pure; thread-safe.
#ifndef BPNAS_ARTIFACT_DYADIC_H_
#define BPNAS_ARTIFACT_DYADIC_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace bpnas {

struct Dyadic {
  int32_t multiplier = 0;  // m in [0, 2^31)
  int shift = 1;           // in [1, kMaxDyadicShift]
  // m * 2^-shift.
  double value() const;
};

inline constexpr int kMaxDyadicShift = 61;
// MakeDyadic takes values in [0, kMaxDyadicValue).
inline constexpr double kMaxDyadicValue = double(int64_t{1} << 30);

// The dyadic number nearest to `value`: m has 31 significant bits (m in [2^30, 2^31)) when
// value >= 2^-31, so the relative error is at most 2^-31; below 2^-31 the shift stays at 61 and the
// absolute error is at most 2^-62 (m = 0 below 2^-62). Values that are dyadic with at most 31
// significant bits and shift <= 61 (0.5, 3/8, 2^-40) are exact. OUT_OF_RANGE for a value that is
// negative, not finite, or >= 2^30.
absl::StatusOr<Dyadic> MakeDyadic(double value);

// floor(x * m / 2^shift + 1/2): x times the dyadic number, rounded half up (the rounding of the
// activation quantizer in model.proto), exactly, for every int32 x. One 32 x 32 -> 64-bit product
// and a rounding shift. The shift is a logical one of a sum made non-negative by adding 2^62 (and
// subtracting 2^(62 - shift) after), which compilers vectorize where an arithmetic 64-bit shift
// has no vector instruction (AVX2).
inline int64_t ApplyDyadic(int32_t x, const Dyadic& d) {
  // |x * m| < 2^62, so the sum lies in (0, 2^63 + 2^61): no wrap-around in uint64.
  const uint64_t sum =
      uint64_t(int64_t(x) * int64_t(d.multiplier)) + ((uint64_t{1} << 62) + (uint64_t{1} << (d.shift - 1)));
  return int64_t(sum >> d.shift) - (int64_t{1} << (62 - d.shift));
}

// The same for any int64 x whose result fits in int64 (|x * value| < 2^62), in 128-bit arithmetic:
// for sums such as a global average pool's.
inline int64_t ApplyDyadicWide(int64_t x, const Dyadic& d) {
  const __int128 product =
      static_cast<__int128>(x) * d.multiplier + (static_cast<__int128>(1) << (d.shift - 1));
  return static_cast<int64_t>(product >> d.shift);
}

}  // namespace bpnas

#endif  // BPNAS_ARTIFACT_DYADIC_H_
