#include "worker/engine/quant_ops.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace bpnas {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 16384;  // elements per parallel task
constexpr int kBlock = 256;        // elements per inner block (stays in L1; loops vectorize)
constexpr int kMaxBranches = 16;

struct Levels {
  int k = 0;
  float inv_step[kMaxBranches];
  float step[kMaxBranches];
  float prob[kMaxBranches];
};

Levels MakeLevels(const std::vector<int>& bits, const torch::Tensor& probs, double clip, bool weights) {
  TORCH_CHECK(!bits.empty() && bits.size() <= kMaxBranches, "1..16 bitwidths expected");
  TORCH_CHECK(probs.numel() == int64_t(bits.size()), "one probability per bitwidth expected");
  Levels l;
  l.k = int(bits.size());
  auto p = probs.detach().to(torch::kFloat).contiguous();
  const float* pp = p.data_ptr<float>();
  for (int j = 0; j < l.k; ++j) {
    const double s = weights ? WeightStep(bits[j], clip) : ActivationStep(bits[j], clip);
    l.step[j] = float(s);
    l.inv_step[j] = float(1.0 / s);
    l.prob[j] = pp[j];
  }
  return l;
}

// Number of reduction slots for a parallel pass over n elements (fixed chunking: deterministic).
int64_t NumChunks(int64_t n) { return std::max<int64_t>(1, (n + kGrain - 1) / kGrain); }

// ---- activations (unsigned; x clamped to [0, c]; floor(v + 0.5) == int truncation for v >= 0) ----

void ActForwardKernel(const float* x, float* out, int64_t n, float clip, const Levels& lv) {
  at::parallel_for(0, NumChunks(n), 1, [&](int64_t c0, int64_t c1) {
    float v[kBlock];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
      for (int64_t b = begin; b < end; b += kBlock) {
        const int m = int(std::min<int64_t>(kBlock, end - b));
        float* o = out + b;
        for (int e = 0; e < m; ++e) {
          v[e] = std::min(std::max(x[b + e], 0.0f), clip);
          o[e] = 0.0f;
        }
        for (int j = 0; j < lv.k; ++j) {
          const float inv = lv.inv_step[j], s = lv.step[j], p = lv.prob[j];
          for (int e = 0; e < m; ++e) o[e] = o[e] + p * (float(int32_t(v[e] * inv + 0.5f)) * s);
        }
      }
    }
  });
}

void ActBackwardKernel(const float* x, const float* g, float* gx, double* gp_chunks, int64_t n,
                       float clip, const Levels& lv, float prob_sum) {
  const bool want_gp = gp_chunks != nullptr;
  at::parallel_for(0, NumChunks(n), 1, [&](int64_t c0, int64_t c1) {
    float v[kBlock];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
      double acc[kMaxBranches] = {0};
      for (int64_t b = begin; b < end; b += kBlock) {
        const int m = int(std::min<int64_t>(kBlock, end - b));
        if (gx != nullptr) {
          for (int e = 0; e < m; ++e) {
            const float xe = x[b + e];
            gx[b + e] = (xe >= 0.0f && xe <= clip) ? g[b + e] * prob_sum : 0.0f;
          }
        }
        if (!want_gp) continue;
        for (int e = 0; e < m; ++e) v[e] = std::min(std::max(x[b + e], 0.0f), clip);
        for (int j = 0; j < lv.k; ++j) {
          const float inv = lv.inv_step[j], s = lv.step[j];
          float partial = 0.0f;
          for (int e = 0; e < m; ++e) partial += g[b + e] * (float(int32_t(v[e] * inv + 0.5f)) * s);
          acc[j] += partial;
        }
      }
      if (want_gp) {
        for (int j = 0; j < lv.k; ++j) gp_chunks[c * lv.k + j] = acc[j];
      }
    }
  });
}

// ---- weights (symmetric; small tensors, so a plain std::floor is fine) ----

void WeightForwardKernel(const float* w, float* out, int64_t n, float clip, const Levels& lv) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = std::min(std::max(w[i], -clip), clip);
      float acc = 0.0f;
      for (int j = 0; j < lv.k; ++j) acc = acc + lv.prob[j] * (std::floor(v * lv.inv_step[j] + 0.5f) * lv.step[j]);
      out[i] = acc;
    }
  });
}

void WeightBackwardKernel(const float* w, const float* g, float* gw, double* gp_chunks, int64_t n,
                          float clip, const Levels& lv, float prob_sum) {
  at::parallel_for(0, NumChunks(n), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
      double acc[kMaxBranches] = {0};
      for (int64_t i = begin; i < end; ++i) {
        const float wi = w[i];
        if (gw != nullptr) gw[i] = (wi >= -clip && wi <= clip) ? g[i] * prob_sum : 0.0f;
        if (gp_chunks == nullptr) continue;
        const float v = std::min(std::max(wi, -clip), clip);
        for (int j = 0; j < lv.k; ++j) acc[j] += double(g[i]) * (std::floor(v * lv.inv_step[j] + 0.5f) * lv.step[j]);
      }
      if (gp_chunks != nullptr) {
        for (int j = 0; j < lv.k; ++j) gp_chunks[c * lv.k + j] = acc[j];
      }
    }
  });
}

template <bool kWeights>
class MixtureFunction : public torch::autograd::Function<MixtureFunction<kWeights>> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& probs,
                               std::vector<int64_t> bits, double clip) {
    auto xc = x.contiguous();
    TORCH_CHECK(xc.scalar_type() == torch::kFloat, "mixture: float32 input expected");
    TORCH_CHECK(xc.device().is_cpu(), "mixture: the fused kernel runs on CPU tensors");
    std::vector<int> b(bits.begin(), bits.end());
    Levels lv = MakeLevels(b, probs, clip, kWeights);
    auto out = torch::empty_like(xc);
    if (kWeights) {
      WeightForwardKernel(xc.data_ptr<float>(), out.data_ptr<float>(), xc.numel(), float(clip), lv);
    } else {
      ActForwardKernel(xc.data_ptr<float>(), out.data_ptr<float>(), xc.numel(), float(clip), lv);
    }
    ctx->save_for_backward({xc, probs});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["clip"] = clip;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& probs = saved[1];
    auto bits64 = ctx->saved_data["bits"].toIntVector();
    const double clip = ctx->saved_data["clip"].toDouble();
    std::vector<int> bits(bits64.begin(), bits64.end());
    Levels lv = MakeLevels(bits, probs, clip, kWeights);
    float prob_sum = 0;
    for (int j = 0; j < lv.k; ++j) prob_sum += lv.prob[j];

    auto g = grad_outputs[0].contiguous();
    const bool want_gx = ctx->needs_input_grad(0);
    const bool want_gp = ctx->needs_input_grad(1);
    torch::Tensor gx, gp;
    if (want_gx) gx = torch::empty_like(x);
    const int64_t chunks = NumChunks(x.numel());
    std::vector<double> gp_chunks(want_gp ? chunks * lv.k : 0, 0.0);
    if (want_gx || want_gp) {
      auto kernel = kWeights ? WeightBackwardKernel : ActBackwardKernel;
      kernel(x.data_ptr<float>(), g.data_ptr<float>(), want_gx ? gx.data_ptr<float>() : nullptr,
             want_gp ? gp_chunks.data() : nullptr, x.numel(), float(clip), lv, prob_sum);
    }
    if (want_gp) {
      gp = torch::zeros({lv.k}, torch::kDouble);
      auto acc = gp.accessor<double, 1>();
      for (int64_t c = 0; c < chunks; ++c) {
        for (int j = 0; j < lv.k; ++j) acc[j] += gp_chunks[c * lv.k + j];
      }
      gp = gp.to(probs.scalar_type());
    }
    return {gx, gp, torch::Tensor(), torch::Tensor()};
  }
};

std::vector<int64_t> ToInt64(const std::vector<int>& bits) { return {bits.begin(), bits.end()}; }

}  // namespace

double WeightStep(int bits, double clip) { return clip / double((1 << (bits - 1)) - 1); }
double ActivationStep(int bits, double clip) { return clip / double((1 << bits) - 1); }

double WeightClip(const torch::Tensor& w, double k_w) {
  const double c = k_w * w.detach().abs().mean().item<double>();
  return std::max(c, 1e-8);
}

torch::Tensor QuantizeWeight(const torch::Tensor& w, int bits, double clip) {
  const float inv = float(1.0 / WeightStep(bits, clip));
  const float s = float(WeightStep(bits, clip));
  return torch::floor(w.clamp(-clip, clip).mul(inv).add(0.5f)).mul(s);
}

torch::Tensor WeightCodes(const torch::Tensor& w, int bits, double clip) {
  const float inv = float(1.0 / WeightStep(bits, clip));
  return torch::floor(w.detach().clamp(-clip, clip).mul(inv).add(0.5f)).to(torch::kInt8);
}

torch::Tensor QuantizeActivation(const torch::Tensor& x, int bits, double clip) {
  const float inv = float(1.0 / ActivationStep(bits, clip));
  const float s = float(ActivationStep(bits, clip));
  return torch::floor(x.clamp(0.0, clip).mul(inv).add(0.5f)).mul(s);
}

torch::Tensor WeightMixture(const torch::Tensor& w, const torch::Tensor& probs,
                            const std::vector<int>& bits, double clip) {
  return MixtureFunction<true>::apply(w, probs, ToInt64(bits), clip);
}

torch::Tensor ActivationMixture(const torch::Tensor& x, const torch::Tensor& probs,
                                const std::vector<int>& bits, double clip) {
  return MixtureFunction<false>::apply(x, probs, ToInt64(bits), clip);
}

torch::Tensor WeightMixtureReference(const torch::Tensor& w, const torch::Tensor& probs,
                                     const std::vector<int>& bits, double clip) {
  auto wc = w.clamp(-clip, clip);
  torch::Tensor out;
  for (size_t j = 0; j < bits.size(); ++j) {
    auto q = wc + (QuantizeWeight(wc.detach(), bits[j], clip) - wc).detach();
    auto term = probs[j] * q;
    out = out.defined() ? out + term : term;
  }
  return out;
}

torch::Tensor ActivationMixtureReference(const torch::Tensor& x, const torch::Tensor& probs,
                                         const std::vector<int>& bits, double clip) {
  auto xc = x.clamp(0.0, clip);
  torch::Tensor out;
  for (size_t j = 0; j < bits.size(); ++j) {
    auto q = xc + (QuantizeActivation(xc.detach(), bits[j], clip) - xc).detach();
    auto term = probs[j] * q;
    out = out.defined() ? out + term : term;
  }
  return out;
}

}  // namespace bpnas
