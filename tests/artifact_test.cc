// The format-2 model file without LibTorch: packing, validation, versions, random models.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "artifact/builder.h"
#include "artifact/model_file.h"
#include "artifact/packing.h"
#include "artifact/validate.h"
#include "spec/graph.h"

namespace bpnas {
namespace {

using bpnas::v1::Node;
using bpnas::v1::QuantizedModel;

TEST(Packing, TwoBitCodesFillABytePairLsbFirst) {
  const std::vector<int8_t> codes = {1, -1, 0, 1, -1};
  const std::string packed = PackCodes(codes.data(), 5, 2);
  ASSERT_EQ(packed.size(), 2u);
  // 01 | 11 | 00 | 01 from bit 0 up, then 11 and zero padding.
  EXPECT_EQ(uint8_t(packed[0]), 0x4D);
  EXPECT_EQ(uint8_t(packed[1]), 0x03);
}

TEST(Packing, RoundTripsEveryCodeAtEveryBitwidth) {
  std::mt19937 rng(7);
  for (int bits = 2; bits <= 8; ++bits) {
    const int qmax = (1 << (bits - 1)) - 1;
    for (int64_t count : {1, 7, 8, 9, 1000}) {
      std::vector<int8_t> codes(static_cast<size_t>(count));
      std::uniform_int_distribution<int> d(-qmax, qmax);
      for (auto& c : codes) c = int8_t(d(rng));
      codes[0] = int8_t(-qmax);
      codes.back() = int8_t(qmax);
      const std::string packed = PackCodes(codes.data(), count, bits);
      EXPECT_EQ(int64_t(packed.size()), (count * bits + 7) / 8);
      EXPECT_EQ(int64_t(packed.size()), PackedSize(count, bits));
      std::vector<int8_t> back(static_cast<size_t>(count));
      ASSERT_TRUE(UnpackCodes(packed, bits, count, back.data()).ok()) << bits << " bits, " << count;
      EXPECT_EQ(back, codes) << bits << " bits, " << count;
    }
  }
}

TEST(Packing, UnpackRefusesAWrongLengthAndNonzeroPadding) {
  const std::vector<int8_t> codes = {1, 1, 1};
  std::string packed = PackCodes(codes.data(), 3, 3);  // 9 bits: 2 bytes, 7 padding bits
  std::vector<int8_t> out(3);
  EXPECT_EQ(UnpackCodes(packed.substr(0, 1), 3, 3, out.data()).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(UnpackCodes(packed + "x", 3, 3, out.data()).code(), absl::StatusCode::kDataLoss);
  packed[1] = char(uint8_t(packed[1]) | 0x80);
  EXPECT_EQ(UnpackCodes(packed, 3, 3, out.data()).code(), absl::StatusCode::kDataLoss);
}

ModelGraph Resnet(double width) {
  ModelOptions o;
  o.width_multiplier = width;
  auto g = BuildModelGraph(o);
  EXPECT_TRUE(g.ok()) << g.status();
  return *g;
}

TEST(RandomModel, IsValidWithFoldedBatchNormAndPackedWeightsAtEveryBitwidth) {
  const ModelGraph g = Resnet(0.5);
  for (int bits = 2; bits <= 8; ++bits) {
    auto m = MakeRandomModel(g, {bits, bits, bits % 2 == 0, uint64_t(bits)});
    ASSERT_TRUE(m.ok()) << m.status();
    auto layout = ValidateModel(*m);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->outputs.back().numel(), 10);
    int64_t payload = 0, expected = 0;
    for (const Node& n : m->nodes()) {
      EXPECT_EQ(n.name().find("bn"), std::string::npos) << n.name();
      if (n.op() != Node::CONV2D && n.op() != Node::LINEAR) continue;
      const auto& c = n.conv();
      payload += int64_t(c.weight_packed().size());
      expected += PackedSize(int64_t(c.out_channels()) * c.in_channels() * c.kernel() * c.kernel(), bits);
    }
    EXPECT_EQ(payload, expected);
    // Every batch norm of the graph is gone, and readers of one read its conv.
    for (const Node& n : m->nodes()) {
      for (const auto& in : n.inputs()) EXPECT_EQ(in.find("bn"), std::string::npos) << n.name();
    }
    // The file round-trips through its own reader.
    auto back = ParseModel(SerializeModel(*m), "random");
    ASSERT_TRUE(back.ok()) << back.status();
  }
}

TEST(ParseModel, NamesAnOlderFormatVersion) {
  auto m = MakeRandomModel(Resnet(0.25), {});
  ASSERT_TRUE(m.ok());
  m->set_format_version(1);
  m->set_checksum(ModelChecksum(*m));
  auto r = ParseModel(SerializeModel(*m), "old.bpq");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(r.status().message()).find("old.bpq: format_version 1"), std::string::npos)
      << r.status();
}

TEST(ParseModel, RefusesEmptyBytesAChecksumMismatchAndAZeroStride) {
  EXPECT_EQ(ParseModel("", "e.bpq").status().code(), absl::StatusCode::kDataLoss);
  auto m = MakeRandomModel(Resnet(0.25), {});
  ASSERT_TRUE(m.ok());
  QuantizedModel bad = *m;
  bad.mutable_nodes(0)->mutable_conv()->set_stride(0);
  auto r = ParseModel(SerializeModel(bad), "s.bpq");  // old checksum: caught by the checksum
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(r.status().message()).find("checksum"), std::string::npos) << r.status();
  bad.set_checksum(ModelChecksum(bad));  // valid checksum: only validation can catch it
  r = ParseModel(SerializeModel(bad), "s.bpq");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(r.status().message()).find("'conv1': stride 0"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace bpnas
