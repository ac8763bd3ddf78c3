#include "worker/engine/quant_ops.h"

#include <set>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/nn/functional.h>

namespace bpnas {
namespace {

const std::vector<int> kBits = {2, 3, 4, 8};

// One clip per bitwidth, all different (as the per-bitwidth Scale-Clip constants make them).
std::vector<double> Clips(double base) {
  std::vector<double> c;
  for (int b : kBits) c.push_back(base * DefaultActivationClipK(b) / DefaultActivationClipK(2));
  return c;
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(Quantizer, WeightEmitsAtMostTwoToTheBitsLevels) {
  torch::manual_seed(3);
  auto w = torch::randn({4096});
  for (int b : kBits) {
    auto q = QuantizeWeight(w, b, WeightClip(w, 2.5));
    auto levels = std::get<0>(torch::_unique(q));
    EXPECT_LE(levels.numel(), (1 << b)) << b << " bits";
    EXPECT_LE(levels.numel(), (1 << b) - 1) << b << " bits: a symmetric grid has 2^b - 1 levels";
    if (b <= 4) EXPECT_EQ(levels.numel(), (1 << b) - 1) << b << " bits: every level is used";
  }
}

TEST(Quantizer, ActivationEmitsAtMostTwoToTheBitsLevels) {
  torch::manual_seed(4);
  auto x = torch::rand({8192}) * 3.0;
  for (int b : kBits) {
    auto q = QuantizeActivation(x, b, 2.0);
    auto levels = std::get<0>(torch::_unique(q));
    EXPECT_EQ(levels.numel(), (1 << b)) << b << " bits";
    EXPECT_LE(q.max().item<double>(), 2.0 + 1e-6);
    EXPECT_GE(q.min().item<double>(), 0.0);
  }
}

TEST(Quantizer, WeightCodesTimesStepEqualQuantizedWeights) {
  torch::manual_seed(5);
  auto w = torch::randn({1000});
  for (int b : kBits) {
    const double clip = WeightClip(w, 2.5);
    auto codes = WeightCodes(w, b, clip);
    EXPECT_LE(codes.abs().max().item<int>(), (1 << (b - 1)) - 1);
    auto deq = codes.to(torch::kFloat) * float(WeightStep(b, clip));
    EXPECT_LT(MaxAbsDiff(deq, QuantizeWeight(w, b, clip)), 1e-6);
  }
}

// The fused kernels use ATen's parallel_for, a header template that silently runs on one thread in a
// translation unit compiled without OpenMP (which the engine once was: its kernels never used the
// second core).
TEST(FusedMixture, KernelsRunOnEveryIntraOpThread) {
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  EXPECT_EQ(FusedKernelThreads(), 2);
  at::set_num_threads(1);
  EXPECT_EQ(FusedKernelThreads(), 1);
  at::set_num_threads(before);
}

// The result does not depend on the number of threads (fixed chunking, sums in a fixed order).
TEST(FusedMixture, ActivationResultIsTheSameOnOneAndTwoThreads) {
  torch::manual_seed(11);
  auto x = torch::randn({8, 16, 24, 24}).requires_grad_(true);
  auto logits = torch::randn({4}).requires_grad_(true);
  auto gy = torch::randn({8, 16, 24, 24});
  const int before = at::get_num_threads();
  std::vector<torch::Tensor> out;
  std::vector<double> means;
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    double mean = 0;
    auto y = ActivationMixture(x, torch::softmax(logits, 0), kBits, Clips(1.0), &mean);
    auto g = torch::autograd::grad({y}, {x, logits}, {gy});
    out.push_back(y.detach());
    out.push_back(g[0]);
    out.push_back(g[1]);
    means.push_back(mean);
  }
  at::set_num_threads(before);
  EXPECT_TRUE(torch::equal(out[0], out[3]));
  EXPECT_TRUE(torch::equal(out[1], out[4]));
  EXPECT_TRUE(torch::equal(out[2], out[5]));
  EXPECT_EQ(means[0], means[1]);
}

TEST(FusedMixture, ActivationMatchesReferenceValuesAndGradients) {
  torch::manual_seed(6);
  auto x0 = torch::relu(torch::randn({3, 5, 17, 19}));  // exact zeros included, as after ReLU
  auto logits0 = torch::randn({4});
  const auto clip = Clips(1.2);
  auto x1 = x0.clone().requires_grad_(true), l1 = logits0.clone().requires_grad_(true);
  auto x2 = x0.clone().requires_grad_(true), l2 = logits0.clone().requires_grad_(true);
  auto y1 = ActivationMixture(x1, torch::softmax(l1, 0), kBits, clip);
  auto y2 = ActivationMixtureReference(x2, torch::softmax(l2, 0), kBits, clip);
  EXPECT_LT(MaxAbsDiff(y1, y2), 1e-5);
  auto g = torch::randn_like(y1);
  (y1 * g).sum().backward();
  (y2 * g).sum().backward();
  EXPECT_LT(MaxAbsDiff(x1.grad(), x2.grad()), 1e-5);
  EXPECT_LT(MaxAbsDiff(l1.grad(), l2.grad()), 1e-3 * (1 + l2.grad().abs().max().item<double>()));
}

TEST(FusedMixture, WeightMatchesReferenceValuesAndGradients) {
  torch::manual_seed(7);
  auto w0 = torch::randn({16, 8, 3, 3}) * 0.2;
  auto logits0 = torch::randn({4});
  const auto clip = Clips(WeightClip(w0, 1.5));
  auto w1 = w0.clone().requires_grad_(true), l1 = logits0.clone().requires_grad_(true);
  auto w2 = w0.clone().requires_grad_(true), l2 = logits0.clone().requires_grad_(true);
  auto y1 = WeightMixture(w1, torch::softmax(l1, 0), kBits, clip);
  auto y2 = WeightMixtureReference(w2, torch::softmax(l2, 0), kBits, clip);
  EXPECT_LT(MaxAbsDiff(y1, y2), 1e-6);
  auto g = torch::randn_like(y1);
  (y1 * g).sum().backward();
  (y2 * g).sum().backward();
  EXPECT_LT(MaxAbsDiff(w1.grad(), w2.grad()), 1e-6);
  EXPECT_LT(MaxAbsDiff(l1.grad(), l2.grad()), 1e-4);
}

// Without probability gradients (weight steps) the fused activation mixture computes only the input
// gradient; it must equal the reference's.
TEST(FusedMixture, InputGradientWithoutProbabilityGradientMatchesReference) {
  torch::manual_seed(9);
  auto x0 = torch::randn({2, 3, 33, 31}) * 2.0;  // negatives, inside, and beyond every clip
  auto probs = torch::softmax(torch::randn({4}), 0);
  const auto clip = Clips(1.0);
  auto x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
  auto y1 = ActivationMixture(x1, probs, kBits, clip);
  auto y2 = ActivationMixtureReference(x2, probs, kBits, clip);
  EXPECT_LT(MaxAbsDiff(y1, y2), 1e-5);
  auto g = torch::randn_like(y1);
  (y1 * g).sum().backward();
  (y2 * g).sum().backward();
  EXPECT_LT(MaxAbsDiff(x1.grad(), x2.grad()), 1e-5);
}

// Each branch passes the gradient inside its own clip: between two clips only the wider branch does.
TEST(FusedMixture, StraightThroughGradientFollowsEachBranchClip) {
  for (bool prob_grad : {false, true}) {
    auto x = torch::tensor({-1.0f, 0.5f, 1.5f, 3.0f}).requires_grad_(true);
    auto probs = torch::tensor({0.25f, 0.75f}).requires_grad_(prob_grad);
    auto y = ActivationMixture(x, probs, {2, 8}, {1.0, 2.0});
    y.sum().backward();
    EXPECT_FLOAT_EQ(x.grad()[0].item<float>(), 0.0f) << prob_grad;
    EXPECT_FLOAT_EQ(x.grad()[1].item<float>(), 1.0f) << prob_grad;
    EXPECT_FLOAT_EQ(x.grad()[2].item<float>(), 0.75f) << prob_grad;
    EXPECT_FLOAT_EQ(x.grad()[3].item<float>(), 0.0f) << prob_grad;
  }
  auto w = torch::tensor({-1.5f, -0.5f, 0.5f, 1.5f, 3.0f}).requires_grad_(true);
  auto y = WeightMixture(w, torch::tensor({0.25f, 0.75f}), {2, 8}, {1.0, 2.0});
  y.sum().backward();
  EXPECT_TRUE(torch::allclose(w.grad(), torch::tensor({0.75f, 1.0f, 1.0f, 0.75f, 0.0f})));
}

// The supernet skips a ReLU that only quantized layers read: both mixtures (fused and the reference the
// GPU path uses) must give relu(x)'s outputs and gradients on x directly.
TEST(FusedMixture, ActivationMixtureIncludesTheRelu) {
  torch::manual_seed(5);
  const auto clip = Clips(1.0);
  for (bool fused : {true, false}) {
    for (bool prob_grad : {false, true}) {
      auto x0 = torch::randn({2, 3, 17, 19}) * 2.0;
      auto probs = torch::softmax(torch::randn({4}), 0).requires_grad_(prob_grad);
      auto mix = [&](const torch::Tensor& in) {
        return fused ? ActivationMixture(in, probs, kBits, clip)
                     : ActivationMixtureReference(in, probs, kBits, clip);
      };
      auto x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
      auto y1 = mix(x1), y2 = mix(torch::relu(x2));
      EXPECT_EQ(MaxAbsDiff(y1, y2), 0.0) << fused << prob_grad;
      auto g = torch::randn_like(y1);
      (y1 * g).sum().backward();
      (y2 * g).sum().backward();
      EXPECT_EQ(MaxAbsDiff(x1.grad(), x2.grad()), 0.0) << fused << prob_grad;
      EXPECT_GT(x1.grad().abs().sum().item<double>(), 0.0);
    }
  }
}

TEST(FusedMixture, GradientIsZeroOutsideTheClipRange) {
  auto x = torch::tensor({-1.0f, 0.5f, 3.0f}).requires_grad_(true);
  auto y = ActivationMixture(x, torch::ones({1}), {4}, {2.0});
  y.sum().backward();
  EXPECT_FLOAT_EQ(x.grad()[0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(x.grad()[1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(x.grad()[2].item<float>(), 0.0f);
}

// The composite layer: conv(sum_j q_j Qa_j(x), sum_i p_i Qw_i(W)) equals the explicit sum over all
// |weight_bits| x |activation_bits| branches sum_ij p_i q_j conv(Qa_j(x), Qw_i(W)), outputs and
// gradients (to x, W, and both logit vectors).
TEST(CompositeLayer, EqualsExplicitSumOverAllBranches) {
  namespace F = torch::nn::functional;
  torch::manual_seed(8);
  auto x0 = torch::relu(torch::randn({2, 4, 9, 9}));
  auto w0 = torch::randn({6, 4, 3, 3}) * 0.3;
  auto a0 = torch::randn({4}), b0 = torch::randn({4});
  const auto clip_a = Clips(2.0), clip_w = Clips(WeightClip(w0, 1.5));
  auto conv = [](const torch::Tensor& x, const torch::Tensor& w) {
    return F::conv2d(x, w, F::Conv2dFuncOptions().padding(1));
  };

  auto x1 = x0.clone().requires_grad_(true), w1 = w0.clone().requires_grad_(true);
  auto a1 = a0.clone().requires_grad_(true), b1 = b0.clone().requires_grad_(true);
  auto y1 = conv(ActivationMixture(x1, torch::softmax(b1, 0), kBits, clip_a),
                 WeightMixture(w1, torch::softmax(a1, 0), kBits, clip_w));

  auto x2 = x0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
  auto a2 = a0.clone().requires_grad_(true), b2 = b0.clone().requires_grad_(true);
  auto p = torch::softmax(a2, 0), q = torch::softmax(b2, 0);
  torch::Tensor y2;
  for (size_t i = 0; i < kBits.size(); ++i) {
    for (size_t j = 0; j < kBits.size(); ++j) {
      auto wi = WeightMixtureReference(w2, torch::ones({1}), {kBits[i]}, {clip_w[i]});
      auto xj = ActivationMixtureReference(x2, torch::ones({1}), {kBits[j]}, {clip_a[j]});
      auto term = p[i] * q[j] * conv(xj, wi);
      y2 = y2.defined() ? y2 + term : term;
    }
  }
  EXPECT_LT(MaxAbsDiff(y1, y2), 1e-4);
  auto g = torch::randn_like(y1);
  (y1 * g).sum().backward();
  (y2 * g).sum().backward();
  EXPECT_LT(MaxAbsDiff(x1.grad(), x2.grad()), 1e-4);
  EXPECT_LT(MaxAbsDiff(w1.grad(), w2.grad()), 1e-4);
  EXPECT_LT(MaxAbsDiff(a1.grad(), a2.grad()), 1e-4);
  EXPECT_LT(MaxAbsDiff(b1.grad(), b2.grad()), 1e-4);
}

}  // namespace
}  // namespace bpnas
