// artifact/ without LibTorch: the dyadic multipliers of integer inference, and what reading a model
// file from elsewhere refuses (ParseModel / ValidateModel) and how it says so.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "artifact/builder.h"
#include "artifact/dyadic.h"
#include "artifact/integer_inference.h"
#include "artifact/model_file.h"
#include "artifact/packing.h"
#include "artifact/validate.h"
#include "spec/graph.h"

namespace bpnas {
namespace {

using bpnas::v1::Node;
using bpnas::v1::QuantizedConv;
using bpnas::v1::QuantizedModel;

// ---- Dyadic multipliers -------------------------------------------------------------------------

// floor(x * m / 2^shift + 1/2) in 128-bit arithmetic: the definition, without the shortcuts.
int64_t ReferenceApply(int64_t x, const Dyadic& d) {
  const __int128 num = static_cast<__int128>(x) * d.multiplier + (static_cast<__int128>(1) << (d.shift - 1));
  // Floor division by 2^shift for a negative numerator too.
  const __int128 den = static_cast<__int128>(1) << d.shift;
  __int128 q = num / den;
  if (num % den != 0 && num < 0) --q;
  return int64_t(q);
}

TEST(Dyadic, DyadicValuesAreExact) {
  for (double v : {0.5, 0.375, 1.0, 3.0, std::ldexp(1.0, -40), std::ldexp(1.0, 29), 12345.0 / 1048576.0,
                   std::ldexp(1.0, -61)}) {
    auto d = MakeDyadic(v);
    ASSERT_TRUE(d.ok()) << v << ": " << d.status();
    EXPECT_EQ(d->value(), v);
    EXPECT_GE(d->shift, 1);
    EXPECT_LE(d->shift, kMaxDyadicShift);
  }
  auto zero = MakeDyadic(0.0);
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->multiplier, 0);
  EXPECT_EQ(ApplyDyadic(std::numeric_limits<int32_t>::max(), *zero), 0);
}

TEST(Dyadic, RelativeErrorIsAtMostTwoToTheMinus31WithA31BitMultiplier) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> log2v(-31.0, 29.99);
  for (int i = 0; i < 20000; ++i) {
    const double v = std::exp2(log2v(rng));
    auto d = MakeDyadic(v);
    ASSERT_TRUE(d.ok()) << v;
    EXPECT_LE(std::fabs(d->value() - v), v * std::ldexp(1.0, -31)) << v;
    EXPECT_GE(d->multiplier, int32_t{1} << 30) << v;
  }
}

TEST(Dyadic, BelowTwoToTheMinus31TheAbsoluteErrorIsAtMostTwoToTheMinus62) {
  for (double v : {1e-10, 3.3e-13, std::ldexp(1.0, -50), std::ldexp(1.0, -62) * 1.5, std::ldexp(1.0, -70)}) {
    auto d = MakeDyadic(v);
    ASSERT_TRUE(d.ok()) << v;
    EXPECT_LE(std::fabs(d->value() - v), std::ldexp(1.0, -62)) << v;
    EXPECT_EQ(d->shift, kMaxDyadicShift);
  }
  EXPECT_EQ(MakeDyadic(std::ldexp(1.0, -70))->multiplier, 0);
}

TEST(Dyadic, RefusesValuesOutsideItsRange) {
  for (double v : {-1.0, -1e-300, std::nan(""), std::numeric_limits<double>::infinity(), std::ldexp(1.0, 30),
                   std::ldexp(1.0, 31), std::nextafter(std::ldexp(1.0, 30), 0.0)}) {
    auto d = MakeDyadic(v);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kOutOfRange) << v;
  }
  EXPECT_TRUE(MakeDyadic(std::ldexp(1.0, 30) * (1 - std::ldexp(1.0, -20))).ok());
}

TEST(Dyadic, ApplyRoundsHalfUp) {
  const Dyadic half = *MakeDyadic(0.5), quarter = *MakeDyadic(0.25);
  EXPECT_EQ(ApplyDyadic(3, half), 2);       // 1.5
  EXPECT_EQ(ApplyDyadic(-3, half), -1);     // -1.5
  EXPECT_EQ(ApplyDyadic(5, quarter), 1);    // 1.25
  EXPECT_EQ(ApplyDyadic(7, quarter), 2);    // 1.75
  EXPECT_EQ(ApplyDyadic(-5, quarter), -1);  // -1.25
  EXPECT_EQ(ApplyDyadic(-7, quarter), -2);  // -1.75
  EXPECT_EQ(ApplyDyadic(-6, quarter), -1);  // -1.5
  EXPECT_EQ(ApplyDyadicWide(int64_t{3} << 40, half), int64_t{3} << 39);
  EXPECT_EQ(ApplyDyadicWide(-(int64_t{1} << 40) - 1, half), -(int64_t{1} << 39));  // -2^39 - 0.5
}

TEST(Dyadic, ApplyIsExactOverTheWholeInt32Range) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> log2v(-64.0, 29.99);
  std::uniform_int_distribution<int32_t> any(std::numeric_limits<int32_t>::min(),
                                             std::numeric_limits<int32_t>::max());
  const int32_t edges[] = {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), 0, 1,
                           -1};
  for (int i = 0; i < 2000; ++i) {
    const Dyadic d = *MakeDyadic(std::exp2(log2v(rng)));
    for (int32_t x : edges) ASSERT_EQ(ApplyDyadic(x, d), ReferenceApply(x, d)) << x << " * " << d.value();
    for (int j = 0; j < 50; ++j) {
      const int32_t x = any(rng);
      ASSERT_EQ(ApplyDyadic(x, d), ReferenceApply(x, d)) << x << " * " << d.value();
    }
    // The wide form, for int64 sums whose product stays below 2^62.
    const double bound = std::min(9e18, std::ldexp(1.0, 62) / std::max(d.value(), 1e-300));
    std::uniform_int_distribution<int64_t> wide(-int64_t(bound / 2), int64_t(bound / 2));
    const int64_t x = wide(rng);
    ASSERT_EQ(ApplyDyadicWide(x, d), ReferenceApply(x, d)) << x << " * " << d.value();
  }
}

// ---- Reading a model from elsewhere -------------------------------------------------------------

QuantizedModel BaseModel() {
  auto g = BuildModelGraph({.name = "resnet20", .width_multiplier = 0.25});
  EXPECT_TRUE(g.ok());
  auto m = MakeRandomModel(*g, {.weight_bits = 4, .activation_bits = 4, .per_channel = true, .seed = 2});
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

Node* NodeNamed(QuantizedModel* m, const std::string& name) {
  for (Node& n : *m->mutable_nodes()) {
    if (n.name() == name) return &n;
  }
  ADD_FAILURE() << "no node " << name;
  return m->mutable_nodes(0);
}

// Re-packs a conv's weights for its current shape (random codes of its bits), so that only the
// change under test is wrong.
void Repack(QuantizedConv* c) {
  const int64_t count = int64_t(c->out_channels()) * c->in_channels() * c->kernel() * c->kernel();
  std::vector<int8_t> codes(size_t(count), 1);
  c->set_weight_packed(PackCodes(codes.data(), count, int(c->weight_bits())));
}

struct Mutation {
  std::string what;
  std::function<void(QuantizedModel*)> mutate;
  std::vector<std::string> message;  // each must appear in the error
};

std::vector<Mutation> Mutations() {
  const std::string conv = "layer1.0.conv1";
  return {
      {"stride 0",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->set_stride(0); },
       {conv, "stride 0"}},
      {"a weight shape that does not match its input",
       [=](QuantizedModel* m) {
         QuantizedConv* c = NodeNamed(m, conv)->mutable_conv();
         c->set_in_channels(c->in_channels() + 3);
         Repack(c);
       },
       {conv, "in_channels 7 but its input has 4 channels"}},
      {"a packed weight stream one byte short",
       [=](QuantizedModel* m) {
         std::string* w = NodeNamed(m, conv)->mutable_conv()->mutable_weight_packed();
         w->pop_back();
       },
       {conv, "weight_packed holds"}},
      {"a weight code outside the symmetric range",
       [=](QuantizedModel* m) {
         std::string* w = NodeNamed(m, conv)->mutable_conv()->mutable_weight_packed();
         (*w)[0] = char((uint8_t((*w)[0]) & 0xF0) | 0x08);  // code 0 = 4-bit 1000 = -8
       },
       {conv, "weight code -8 outside [-7, 7]"}},
      {"a NaN weight scale",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->set_weight_scales(1, std::nanf("")); },
       {conv, "weight scale is not finite and positive"}},
      {"a NaN activation scale",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->set_activation_scale(std::nanf("")); },
       {conv, "activation_scale must be finite and positive"}},
      {"a node reading a later node",
       [](QuantizedModel* m) { m->mutable_nodes(1)->set_inputs(0, m->nodes(m->nodes_size() - 1).name()); },
       {"node 1 'relu1'", "input 'fc' is not an earlier node"}},
      {"wrong num_classes", [](QuantizedModel* m) { m->set_num_classes(11); }, {"num_classes (11)"}},
      {"a kernel larger than its padded input",
       [](QuantizedModel* m) {
         QuantizedConv* c = NodeNamed(m, "layer3.2.conv2")->mutable_conv();
         c->set_kernel(17);
         c->set_padding(1);
         Repack(c);
       },
       {"layer3.2.conv2", "kernel larger than its padded input"}},
      {"padding larger than the kernel",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->set_padding(4); },
       {conv, "padding 4 > kernel"}},
      {"weight bits 9",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->set_weight_bits(9); },
       {conv, "weight_bits 9 not in [2, 8]"}},
      {"activation bits 1",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->set_activation_bits(1); },
       {conv, "activation_bits 1 not in [2, 8]"}},
      {"an activation scale that is not clip / levels",
       [=](QuantizedModel* m) {
         QuantizedConv* c = NodeNamed(m, conv)->mutable_conv();
         c->set_activation_scale(c->activation_scale() * 1.01f);
       },
       {conv, "activation_scale is not activation_clip"}},
      {"a bias of the wrong length",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->add_bias(0.5f); },
       {conv, "bias values"}},
      {"an infinite bias",
       [=](QuantizedModel* m) {
         NodeNamed(m, conv)->mutable_conv()->set_bias(0, std::numeric_limits<float>::infinity());
       },
       {conv, "bias value is not finite"}},
      {"a nonzero zero point",
       [=](QuantizedModel* m) { NodeNamed(m, conv)->mutable_conv()->set_weight_zero_point(3); },
       {conv, "zero points must be 0"}},
      {"three weight scales",
       [=](QuantizedModel* m) {
         auto* s = NodeNamed(m, conv)->mutable_conv()->mutable_weight_scales();
         s->Truncate(3);
       },
       {conv, "3 weight_scales"}},
      {"a duplicate node name",
       [](QuantizedModel* m) { m->mutable_nodes(2)->set_name("conv1"); },
       {"node 2 'conv1'", "duplicate node name"}},
      {"an unknown op",
       [](QuantizedModel* m) { m->mutable_nodes(1)->set_op(Node::Op(3)); },
       {"node 1 'relu1'", "unknown op 3"}},
      {"an add of two shapes",
       [](QuantizedModel* m) { NodeNamed(m, "layer2.0.add")->set_inputs(1, "layer1.2.relu2"); },
       {"layer2.0.add", "differ in shape"}},
      {"an add with one input",
       [](QuantizedModel* m) { NodeNamed(m, "layer1.0.add")->mutable_inputs()->RemoveLast(); },
       {"layer1.0.add", "1 inputs; this op takes 2"}},
      {"a shortcut narrower than its input",
       [](QuantizedModel* m) { NodeNamed(m, "layer2.0.shortcut")->mutable_shortcut()->set_out_channels(3); },
       {"layer2.0.shortcut", "shortcut out_channels smaller"}},
      {"a shortcut stride 0",
       [](QuantizedModel* m) { NodeNamed(m, "layer2.0.shortcut")->mutable_shortcut()->set_stride(0); },
       {"layer2.0.shortcut", "shortcut stride 0"}},
      {"a linear layer of the wrong width",
       [](QuantizedModel* m) {
         QuantizedConv* c = NodeNamed(m, "fc")->mutable_conv();
         c->set_in_channels(c->in_channels() * 2);
         Repack(c);
       },
       {"fc", "in_channels 32 but its input has 16 values"}},
      {"an input of 0 channels",
       [](QuantizedModel* m) { m->set_input_channels(0); },
       {"input shape 0x28x28"}},
      {"a pixel scale of 0",
       [](QuantizedModel* m) { m->mutable_input()->set_pixel_scale(0); },
       {"input.pixel_scale"}},
      {"a std of 0",
       [](QuantizedModel* m) {
         m->mutable_input()->add_mean(0);
         m->mutable_input()->add_std(0);
       },
       {"input.std"}},
      {"no nodes", [](QuantizedModel* m) { m->clear_nodes(); }, {"no nodes"}},
  };
}

TEST(ValidateModel, AcceptsTheUnmutatedModel) {
  const QuantizedModel m = BaseModel();
  EXPECT_TRUE(ValidateModel(m).ok()) << ValidateModel(m).status();
  EXPECT_TRUE(ParseModel(SerializeModel(m), "base.bpq").ok());
}

TEST(ValidateModel, NamesTheNodeAndFieldOfEachInconsistency) {
  for (const Mutation& mu : Mutations()) {
    SCOPED_TRACE(mu.what);
    QuantizedModel m = BaseModel();
    mu.mutate(&m);
    absl::Status s = ValidateModel(m).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    for (const std::string& part : mu.message) EXPECT_NE(s.message().find(part), std::string::npos) << s;
  }
}

// A file whose checksum is right but whose contents are not: only validation can refuse it, as
// DATA_LOSS (the file is corrupt) with the file's name first.
TEST(ParseModel, RefusesAValidlyChecksummedFileWithInconsistentContents) {
  for (const Mutation& mu : Mutations()) {
    SCOPED_TRACE(mu.what);
    QuantizedModel m = BaseModel();
    mu.mutate(&m);
    m.set_checksum(ModelChecksum(m));
    absl::Status s = ParseModel(SerializeModel(m), "mutated.bpq").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_EQ(s.message().rfind("mutated.bpq: ", 0), 0u) << s;
    EXPECT_EQ(s.message().find("checksum"), std::string::npos) << "validation, not the checksum: " << s;
    for (const std::string& part : mu.message) EXPECT_NE(s.message().find(part), std::string::npos) << s;
  }
}

void ExpectRefused(const std::string& bytes, const std::string& what) {
  auto m = ParseModel(bytes, "bad.bpq");
  ASSERT_FALSE(m.ok()) << what;
  // FAILED_PRECONDITION only for format_version 1 (a flipped byte can make one).
  EXPECT_TRUE(m.status().code() == absl::StatusCode::kDataLoss ||
              m.status().code() == absl::StatusCode::kFailedPrecondition)
      << what << ": " << m.status();
  EXPECT_EQ(m.status().message().rfind("bad.bpq: ", 0), 0u) << what << ": " << m.status();
}

TEST(ParseModel, RefusesEmptyTruncatedFlippedAndRandomBytes) {
  const std::string good = SerializeModel(BaseModel());
  ASSERT_TRUE(ParseModel(good, "good.bpq").ok());
  ExpectRefused("", "empty");
  EXPECT_NE(ParseModel("", "bad.bpq").status().message().find("empty"), std::string::npos);
  for (size_t len = 1; len < good.size(); len += 1 + len / 8) ExpectRefused(good.substr(0, len), "truncated");
  std::mt19937_64 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::string bytes = good;
    const size_t at = size_t(rng() % bytes.size());
    const char was = bytes[at];
    bytes[at] = char(rng() & 0xFF);
    if (bytes[at] == was) bytes[at] = char(~was);
    ExpectRefused(bytes, "byte " + std::to_string(at) + " changed");
  }
  for (int i = 0; i < 300; ++i) {
    std::string bytes(size_t(rng() % 4096), '\0');
    for (char& c : bytes) c = char(rng() & 0xFF);
    if (bytes.empty()) continue;
    ExpectRefused(bytes, "random");
  }
}

// ---- The integer engine's own refusals and promises (its agreement with the float semantics is in
// integer_inference_test.cc, which needs LibTorch) -------------------------------------------------

TEST(IntegerModel, RefusesInputNormalizationAsUnimplemented) {
  QuantizedModel m = BaseModel();
  m.mutable_input()->add_mean(0.5f);
  m.mutable_input()->add_std(1.0f);
  EXPECT_EQ(IntegerModel::Build(m).status().code(), absl::StatusCode::kUnimplemented);
  QuantizedModel ones = BaseModel();
  ones.mutable_input()->add_mean(0.0f);
  ones.mutable_input()->add_std(1.0f);
  EXPECT_TRUE(IntegerModel::Build(ones).ok()) << "mean 0 and std 1 spelled out are the identity";
}

TEST(IntegerModel, ABiasBeyondInt32IsOutOfRangeAndNamesTheNode) {
  QuantizedModel m = BaseModel();
  NodeNamed(&m, "layer1.0.conv1")->mutable_conv()->set_bias(0, 1e30f);
  auto net = IntegerModel::Build(m);
  EXPECT_EQ(net.status().code(), absl::StatusCode::kOutOfRange) << net.status();
  EXPECT_NE(net.status().message().find("layer1.0.conv1"), std::string::npos) << net.status();
}

TEST(IntegerModel, PassesOnValidationErrors) {
  QuantizedModel m = BaseModel();
  NodeNamed(&m, "layer1.0.conv1")->mutable_conv()->set_stride(0);
  EXPECT_EQ(IntegerModel::Build(m).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IntegerModel, EveryTensorBoundFitsInt32AndTheThreadCountDoesNotChangeTheLogits) {
  for (int bits : {2, 5, 8}) {
    auto g = BuildModelGraph({.name = "resnet20", .width_multiplier = 0.5});
    ASSERT_TRUE(g.ok());
    auto m = MakeRandomModel(*g, {.weight_bits = bits, .activation_bits = bits, .per_channel = bits != 5});
    ASSERT_TRUE(m.ok());
    auto net = IntegerModel::Build(*m);
    ASSERT_TRUE(net.ok()) << net.status();
    for (const auto& t : net->tensor_ranges()) {
      EXPECT_GT(t.scale, 0);
      EXPECT_LE(t.bound, std::numeric_limits<int32_t>::max());
    }
    // Random pixels, and the two extremes.
    const int64_t n = 9;
    std::vector<uint8_t> px(size_t(n * net->input_size()));
    std::mt19937 rng{uint32_t(bits)};
    for (auto& p : px) p = uint8_t(rng());
    std::fill(px.begin(), px.begin() + net->input_size(), uint8_t{255});
    std::fill(px.begin() + net->input_size(), px.begin() + 2 * net->input_size(), uint8_t{0});
    std::vector<int32_t> one(size_t(n * net->num_classes())), three(one.size());
    net->Run(px.data(), n, one.data(), 1);
    net->Run(px.data(), n, three.data(), 3);
    EXPECT_EQ(one, three) << bits << " bits";
    int32_t largest = 0;
    for (int32_t v : one) largest = std::max(largest, std::abs(v));
    EXPECT_GT(largest, 1 << 10) << "the logits use the integer range (" << bits << " bits)";
  }
}

}  // namespace
}  // namespace bpnas
