// The integer-only engine (artifact/integer_inference.h) against the fake-quantized interpreter
// (worker/engine/artifact.h), the float semantics of model.proto.
#include "artifact/integer_inference.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "artifact/builder.h"
#include "artifact/model_file.h"
#include "spec/graph.h"
#include "worker/engine/artifact.h"

namespace bpnas {
namespace {

using bpnas::v1::Node;
using bpnas::v1::QuantizedConv;
using bpnas::v1::QuantizedModel;

// Smooth random images (a few random blobs), as 8-bit pixels.
std::vector<uint8_t> RandomImages(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<uint8_t> px(size_t(n * c * h * w));
  for (int64_t i = 0; i < n * c; ++i) {
    const double cx = u(rng) * w, cy = u(rng) * h, r = 2 + u(rng) * w / 2, amp = u(rng);
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        const double d = std::hypot(x - cx, y - cy) / r;
        const double v = 255 * (amp * std::exp(-d * d) + 0.3 * u(rng));
        px[size_t((i * h + y) * w + x)] = uint8_t(std::min(255.0, std::round(v)));
      }
    }
  }
  return px;
}

struct Outcome {
  double agreement = 0;       // percent of images with the same top-1 class
  double close = 0;           // percent of images whose logits all agree to 1e-5 * max_logit
  double max_difference = 0;  // largest |integer - float| logit
  double max_logit = 0;       // largest |float| logit
};

Outcome Compare(const QuantizedModel& model, int64_t n, uint64_t seed) {
  Outcome out;
  auto net = IntegerModel::Build(model);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return out;
  const int64_t c = model.input_channels(), h = model.input_height(), w = model.input_width();
  const int64_t k = model.num_classes();
  std::vector<uint8_t> px = RandomImages(n, c, h, w, seed);
  std::vector<int32_t> logits(size_t(n * k));
  net->Run(px.data(), n, logits.data(), 2);
  torch::Tensor images = torch::from_blob(px.data(), {n, c, h, w}, torch::kUInt8).to(torch::kFloat) *
                         model.input().pixel_scale();
  auto ref = RunQuantizedModel(model, images);
  EXPECT_TRUE(ref.ok()) << ref.status();
  if (!ref.ok()) return out;
  torch::Tensor f = ref->contiguous();
  const float* fl = f.data_ptr<float>();
  for (int64_t i = 0; i < n * k; ++i) out.max_logit = std::max(out.max_logit, std::fabs(double(fl[i])));
  int64_t same = 0, close = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t bi = 0, bf = 0;
    double diff = 0;
    for (int64_t j = 0; j < k; ++j) {
      const double a = logits[size_t(i * k + j)] * net->logit_scale(), b = fl[i * k + j];
      diff = std::max(diff, std::fabs(a - b));
      if (logits[size_t(i * k + j)] > logits[size_t(i * k + bi)]) bi = j;
      if (fl[i * k + j] > fl[i * k + bf]) bf = j;
    }
    out.max_difference = std::max(out.max_difference, diff);
    same += bi == bf;
    close += diff <= 1e-5 * out.max_logit;
  }
  out.agreement = 100.0 * double(same) / double(n);
  out.close = 100.0 * double(close) / double(n);
  return out;
}

// Random models of the built-in graphs at several bitwidths, per-channel and per-tensor scales: the
// top-1 classes agree, and most images' logits agree to float32 precision. An image one of whose
// activations lands on a quantizer's rounding boundary (more often at 8 bits, where the steps are
// fine) may take the other code there, in either engine, from float32 rounding: a small logit
// difference, never a systematic one.
TEST(IntegerInference, AgreesWithTheFakeQuantizedInterpreterOnRandomModels) {
  struct Case {
    ModelOptions graph;
    int weight_bits, activation_bits;
  };
  const Case cases[] = {
      {{.name = "tiny"}, 8, 8},
      {{.name = "tiny", .width_multiplier = 0.5}, 2, 2},
      {{.name = "resnet20", .width_multiplier = 0.25}, 8, 8},
      {{.name = "resnet20", .width_multiplier = 0.25}, 4, 4},
      {{.name = "resnet20", .width_multiplier = 0.25}, 2, 2},
      {{.name = "resnet20", .width_multiplier = 0.25}, 3, 6},
      {{.name = "resnet20", .width_multiplier = 0.25}, 8, 2},
      {{.name = "resnet20",
        .width_multiplier = 0.5,
        .input_channels = 3,
        .input_height = 32,
        .input_width = 32},
       5,
       4},
  };
  int index = 0;
  for (const Case& c : cases) {
    for (bool per_channel : {true, false}) {
      SCOPED_TRACE(::testing::Message()
                   << c.graph.name << " width " << c.graph.width_multiplier << ", w" << c.weight_bits << "a"
                   << c.activation_bits << (per_channel ? " per channel" : " per tensor"));
      auto g = BuildModelGraph(c.graph);
      ASSERT_TRUE(g.ok()) << g.status();
      auto m = MakeRandomModel(*g, {.weight_bits = c.weight_bits,
                                    .activation_bits = c.activation_bits,
                                    .per_channel = per_channel,
                                    .seed = uint64_t(++index)});
      ASSERT_TRUE(m.ok()) << m.status();
      const Outcome o = Compare(*m, 48, uint64_t(index));
      EXPECT_GE(o.agreement, 97.0);
      EXPECT_GE(o.close, 75.0) << "images whose logits all agree to 1e-5 of the largest";
      EXPECT_LE(o.max_difference, 0.05 * o.max_logit) << "one code's difference, not a systematic one";
      EXPECT_GT(o.max_logit, 1e-3) << "a network whose logits vanish would agree trivially";
    }
  }
}

// A model whose every scale is a power of two and whose biases are multiples of their accumulator's
// unit: every multiplier is exact, no ADD coarsens its scale, and no pool divides, so the integer
// logits times their scale equal the float ones exactly.
QuantizedModel PowerOfTwoModel() {
  QuantizedModel m;
  m.set_format_version(kModelFormatVersion);
  m.set_model_name("pow2");
  m.set_input_channels(1);
  m.set_input_height(8);
  m.set_input_width(8);
  m.set_num_classes(10);
  m.mutable_input()->set_pixel_scale(1.0f / 256);
  std::mt19937 rng(5);
  auto conv = [&](const std::string& name, const std::string& input, Node::Op op, int in, int out, int kernel,
                  int stride, int wbits, int abits, int step_log2, std::vector<int> scale_log2) {
    Node* n = m.add_nodes();
    n->set_name(name);
    n->set_op(op);
    n->add_inputs(input);
    QuantizedConv* c = n->mutable_conv();
    c->set_in_channels(uint32_t(in));
    c->set_out_channels(uint32_t(out));
    c->set_kernel(uint32_t(kernel));
    c->set_stride(uint32_t(stride));
    c->set_padding(uint32_t(kernel / 2));
    const int qmax = (1 << (wbits - 1)) - 1;
    std::vector<int8_t> codes(size_t(out * in * kernel * kernel));
    for (auto& q : codes) q = int8_t(int(rng() % uint32_t(2 * qmax + 1)) - qmax);
    std::vector<float> scales;
    for (int e : scale_log2) scales.push_back(std::ldexp(1.0f, e));
    SetWeights(codes, wbits, scales, c);
    SetActivation(abits, std::ldexp(double((1 << abits) - 1), step_log2), c);
    for (int o = 0; o < out; ++o) {
      const float unit = std::ldexp(1.0f, step_log2) * scales[scales.size() == 1 ? 0 : size_t(o)];
      c->add_bias(float(int(rng() % 41) - 20) * unit);
    }
  };
  auto op = [&](const std::string& name, Node::Op o, std::vector<std::string> inputs) {
    Node* n = m.add_nodes();
    n->set_name(name);
    n->set_op(o);
    for (const auto& in : inputs) n->add_inputs(in);
    return n;
  };
  conv("c1", "input", Node::CONV2D, 1, 4, 3, 1, 4, 8, -8, {-3, -4, -2, -3});
  op("r1", Node::RELU, {"c1"});
  conv("c2", "r1", Node::CONV2D, 4, 8, 3, 2, 3, 4, -4, {-2});
  auto* sc = op("sc", Node::PAD_SHORTCUT, {"r1"})->mutable_shortcut();
  sc->set_stride(2);
  sc->set_out_channels(8);
  sc->set_pad_before(2);
  op("a", Node::ADD, {"c2", "sc"});
  op("r2", Node::RELU, {"a"});
  conv("fc", "r2", Node::LINEAR, 8 * 4 * 4, 10, 1, 1, 8, 8, -6, {-9, -8, -9, -10, -9, -9, -8, -9, -9, -9});
  m.mutable_nodes(m.nodes_size() - 1)->mutable_conv()->set_padding(0);
  m.set_checksum(ModelChecksum(m));
  return m;
}

TEST(IntegerInference, IsExactWhereEveryScaleIsAPowerOfTwo) {
  const QuantizedModel m = PowerOfTwoModel();
  ASSERT_TRUE(ValidateModel(m).ok()) << ValidateModel(m).status();
  auto net = IntegerModel::Build(m);
  ASSERT_TRUE(net.ok()) << net.status();
  // The premise: the add (node 4, tensor 5) keeps the finer input scale.
  const auto& r = net->tensor_ranges();
  ASSERT_EQ(r[5].scale, std::min(r[3].scale, r[4].scale));
  const int64_t n = 32;
  std::vector<uint8_t> px = RandomImages(n, 1, 8, 8, 9);
  std::vector<int32_t> logits(size_t(n * 10));
  net->Run(px.data(), n, logits.data(), 2);
  torch::Tensor images = torch::from_blob(px.data(), {n, 1, 8, 8}, torch::kUInt8).to(torch::kFloat) / 256.0f;
  auto ref = RunQuantizedModel(m, images);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const torch::Tensor f = ref->contiguous();
  double largest = 0;
  for (int64_t i = 0; i < n * 10; ++i) {
    ASSERT_EQ(double(logits[size_t(i)]) * net->logit_scale(), double(f.data_ptr<float>()[i]))
        << "logit " << i;
    largest = std::max(largest, std::fabs(double(f.data_ptr<float>()[i])));
  }
  EXPECT_GT(largest, 0.1);
}

}  // namespace
}  // namespace bpnas
