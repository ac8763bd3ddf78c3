// SHA-256 (FIPS 180-4) of a byte string, as lowercase hex. Used for artifact checksums.
#ifndef BPNAS_COMMON_SHA256_H_
#define BPNAS_COMMON_SHA256_H_

#include <memory>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace bpnas {

std::string Sha256Hex(std::string_view data);

// Incremental SHA-256, for streams (artifacts and checkpoints arrive in chunks):
//   Sha256 h; h.Update(a); h.Update(b); h.HexDigest() == Sha256Hex(a + b).
// HexDigest() ends the computation; Update after it is a programming error. Computed by the
// system's crypto library; a failure there (out of memory, no SHA-256 in a restricted build)
// aborts the process, since no caller can do anything useful with a wrong checksum.
// Not thread-safe: one object per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view data);
  std::string HexDigest();

 private:
  struct FreeContext {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, FreeContext> ctx_;
};

}  // namespace bpnas

#endif  // BPNAS_COMMON_SHA256_H_
