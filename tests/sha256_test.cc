#include "common/sha256.h"

#include <gtest/gtest.h>

namespace bpnas {
namespace {

TEST(Sha256, MatchesFips180Vectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotForAnySplit) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(char(i * 37 + 11));
  const std::string want = Sha256Hex(data);
  for (size_t chunk : {1, 7, 63, 64, 65, 200, 999, 1000}) {
    Sha256 h;
    for (size_t off = 0; off < data.size(); off += chunk) h.Update(std::string_view(data).substr(off, chunk));
    EXPECT_EQ(h.HexDigest(), want) << "chunk " << chunk;
  }
}

}  // namespace
}  // namespace bpnas
