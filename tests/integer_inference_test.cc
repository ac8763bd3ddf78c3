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
  double agreement = 0;       // percent
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
  int64_t same = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t bi = 0, bf = 0;
    for (int64_t j = 0; j < k; ++j) {
      const double a = logits[size_t(i * k + j)] * net->logit_scale(), b = fl[i * k + j];
      out.max_difference = std::max(out.max_difference, std::fabs(a - b));
      out.max_logit = std::max(out.max_logit, std::fabs(b));
      if (logits[size_t(i * k + j)] > logits[size_t(i * k + bi)]) bi = j;
      if (fl[i * k + j] > fl[i * k + bf]) bf = j;
    }
    same += bi == bf;
  }
  out.agreement = 100.0 * double(same) / double(n);
  return out;
}

TEST(IntegerInference, DebugPrefix) {
  auto g = BuildModelGraph({.name = "tiny", .width_multiplier = 0.25});
  auto m = MakeRandomModel(*g, {.weight_bits = 2, .activation_bits = 2, .per_channel = true, .seed = 3});
  auto layout = ValidateModel(*m);
  for (int k = 1; k <= m->nodes_size(); ++k) {
    QuantizedModel p = *m;
    while (p.nodes_size() > k) p.mutable_nodes()->RemoveLast();
    if (layout->outputs[size_t(k - 1)].height > 1) {
      auto* pool = p.add_nodes();
      pool->set_name("dbgpool");
      pool->set_op(bpnas::v1::Node::GLOBAL_AVG_POOL);
      pool->add_inputs(p.nodes(k - 1).name());
    }
    p.set_num_classes(uint32_t(layout->outputs[size_t(k - 1)].channels));
    Outcome o = Compare(p, 4, 5);
    auto net = IntegerModel::Build(p);
    std::printf("prefix %d %s: max diff %.4g, max value %.4g scale %g bound %lld\n", k,
                p.nodes(k - 1).name().c_str(), o.max_difference, o.max_logit,
                net->tensor_ranges().back().scale, (long long)net->tensor_ranges().back().bound);
  }
}

TEST(IntegerInference, Debug) {
  for (const char* name : {"tiny", "resnet20"}) {
    for (int bits : {8, 4, 2}) {
      auto g = BuildModelGraph({.name = name, .width_multiplier = 0.25});
      ASSERT_TRUE(g.ok());
      auto m =
          MakeRandomModel(*g, {.weight_bits = bits, .activation_bits = bits, .per_channel = true, .seed = 3});
      ASSERT_TRUE(m.ok());
      Outcome o = Compare(*m, 64, 5);
      std::printf("%s bits %d: agreement %.1f, max diff %.4g, max logit %.4g\n", name, bits, o.agreement,
                  o.max_difference, o.max_logit);
    }
  }
}

}  // namespace
}  // namespace bpnas
