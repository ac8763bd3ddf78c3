// SHA-256 (FIPS 180-4) of a byte string, as lowercase hex. Used for artifact checksums.
#ifndef BPNAS_COMMON_SHA256_H_
#define BPNAS_COMMON_SHA256_H_

#include <string>
#include <string_view>

namespace bpnas {

std::string Sha256Hex(std::string_view data);

}  // namespace bpnas

#endif  // BPNAS_COMMON_SHA256_H_
