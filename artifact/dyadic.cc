#include "artifact/dyadic.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace bpnas {

double Dyadic::value() const { return std::ldexp(double(multiplier), -shift); }

absl::StatusOr<Dyadic> MakeDyadic(double value) {
  if (!std::isfinite(value) || value < 0 || value >= kMaxDyadicValue) {
    return absl::OutOfRangeError(
        absl::StrCat("multiplier ", value, " cannot be a dyadic number: it must be finite and in [0, 2^30)"));
  }
  Dyadic d;
  if (value == 0) return d;
  int exponent = 0;
  std::frexp(value, &exponent);  // value = f * 2^exponent, f in [0.5, 1)
  // m = value * 2^shift in [2^30, 2^31) when shift = 31 - exponent; a value >= 2^30 is refused
  // above, so shift >= 1.
  d.shift = 31 - exponent;
  if (d.shift > kMaxDyadicShift) d.shift = kMaxDyadicShift;
  int64_t m = std::llround(std::ldexp(value, d.shift));
  if (m == (int64_t{1} << 31)) {  // rounded up to the next power of two
    if (d.shift == 1) {
      return absl::OutOfRangeError(
          absl::StrCat("multiplier ", value, " rounds to 2^30: out of the dyadic range"));
    }
    m >>= 1;
    --d.shift;
  }
  d.multiplier = int32_t(m);
  return d;
}

}  // namespace bpnas
