#include "worker/engine/quant_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/autograd.h>

namespace bpnas {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 16384;  // elements per parallel task
constexpr int kBlock = 512;        // elements per inner block (stays in L1; loops vectorize)
constexpr int kMaxBranches = 16;

// One branch per bitwidth, each with its own clip (Scale-Clip's k depends on the bitwidth).
struct Levels {
  int k = 0;
  float inv_step[kMaxBranches];
  float step[kMaxBranches];
  float prob[kMaxBranches];
  float clip[kMaxBranches];
};

Levels MakeLevels(const std::vector<int>& bits, const torch::Tensor& probs, const std::vector<double>& clips,
                  bool weights) {
  TORCH_CHECK(!bits.empty() && bits.size() <= kMaxBranches, "1..16 bitwidths expected");
  TORCH_CHECK(probs.numel() == int64_t(bits.size()), "one probability per bitwidth expected");
  TORCH_CHECK(clips.size() == bits.size(), "one clip per bitwidth expected");
  Levels l;
  l.k = int(bits.size());
  auto p = probs.detach().to(torch::kFloat).contiguous();
  const float* pp = p.data_ptr<float>();
  for (int j = 0; j < l.k; ++j) {
    const double s = weights ? WeightStep(bits[j], clips[j]) : ActivationStep(bits[j], clips[j]);
    l.step[j] = float(s);
    l.inv_step[j] = float(1.0 / s);
    l.prob[j] = pp[j];
    l.clip[j] = float(clips[j]);
  }
  return l;
}

// The straight-through factor of one weight: sum of p_j over the branches with -c_j <= w <= c_j.
// (The activation kernels compute theirs block-wise: ActInputGradBlock.)
inline float WeightSteFactor(float w, const Levels& lv) {
  float f = 0.0f;
  for (int j = 0; j < lv.k; ++j) {
    const float c = lv.clip[j];
    f += (w >= -c && w <= c) ? lv.prob[j] : 0.0f;
  }
  return f;
}

// Number of reduction slots for a parallel pass over n elements (fixed chunking: deterministic).
int64_t NumChunks(int64_t n) { return std::max<int64_t>(1, (n + kGrain - 1) / kGrain); }

// ---- activations (unsigned; x clamped to [0, c]; floor(v + 0.5) == int truncation for v >= 0) ----
//
// The block functions hold the vectorizable loops; target_clones compiles them for AVX2 and for the
// x86-64 baseline and picks one at load time (no FMA: results stay bit-identical to the reference).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BPNAS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BPNAS_VECTOR_CLONES
#endif

// out[0..m) = sum_j p_j Q_j(x); returns the sum of max(x, 0) over the block (for the running mean).
BPNAS_VECTOR_CLONES
float ActForwardBlock(const float* x, float* out, int m, const Levels& lv) {
  float v[kBlock];
  for (int e = 0; e < m; ++e) {
    v[e] = std::max(x[e], 0.0f);
    out[e] = 0.0f;
  }
  // The running mean is of the clamped-below activation. 8 independent sums: one float sum would be a
  // chain of dependent additions (no vectorization without fast-math), the slowest part of the pass.
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int e8 = 0;
  for (; e8 + 8 <= m; e8 += 8) {
    for (int u = 0; u < 8; ++u) partial[u] += v[e8 + u];
  }
  for (; e8 < m; ++e8) partial[0] += v[e8];
  float sum = 0.0f;
  for (int u = 0; u < 8; ++u) sum += partial[u];
  for (int j = 0; j < lv.k; ++j) {
    const float inv = lv.inv_step[j], s = lv.step[j], p = lv.prob[j], c = lv.clip[j];
    for (int e = 0; e < m; ++e) out[e] = out[e] + p * (float(int32_t(std::min(v[e], c) * inv + 0.5f)) * s);
  }
  return sum;
}

// gx = g * sum_j p_j [0 <= x <= c_j].
BPNAS_VECTOR_CLONES
void ActInputGradBlock(const float* x, const float* g, float* gx, int m, const Levels& lv) {
  float f[kBlock];
  for (int e = 0; e < m; ++e) f[e] = 0.0f;
  for (int j = 0; j < lv.k; ++j) {
    const float c = lv.clip[j], p = lv.prob[j];
    for (int e = 0; e < m; ++e) f[e] += (x[e] >= 0.0f && x[e] <= c) ? p : 0.0f;
  }
  for (int e = 0; e < m; ++e) gx[e] = g[e] * f[e];
}

// acc[j] += sum_e g[e] * Q_j(x[e]).
BPNAS_VECTOR_CLONES
void ActProbGradBlock(const float* x, const float* g, int m, const Levels& lv, double* acc) {
  float v[kBlock];
  for (int e = 0; e < m; ++e) v[e] = std::max(x[e], 0.0f);
  for (int j = 0; j < lv.k; ++j) {
    const float inv = lv.inv_step[j], s = lv.step[j], c = lv.clip[j];
    float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 independent sums: vectorizes without fast-math
    int e = 0;
    for (; e + 8 <= m; e += 8) {
      for (int u = 0; u < 8; ++u)
        partial[u] += g[e + u] * (float(int32_t(std::min(v[e + u], c) * inv + 0.5f)) * s);
    }
    for (; e < m; ++e) partial[0] += g[e] * (float(int32_t(std::min(v[e], c) * inv + 0.5f)) * s);
    double total = 0;
    for (int u = 0; u < 8; ++u) total += partial[u];
    acc[j] += total;
  }
}

// Returns the sum of max(x, 0) (double, accumulated per chunk in a fixed order: deterministic).
double ActForwardKernel(const float* x, float* out, int64_t n, const Levels& lv) {
  const int64_t chunks = NumChunks(n);
  std::vector<double> sums(chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
      double sum = 0;
      for (int64_t b = begin; b < end; b += kBlock) {
        const int m = int(std::min<int64_t>(kBlock, end - b));
        sum += ActForwardBlock(x + b, out + b, m, lv);
      }
      sums[c] = sum;
    }
  });
  double total = 0;
  for (double v : sums) total += v;
  return total;
}

void ActBackwardKernel(const float* x, const float* g, float* gx, double* gp_chunks, int64_t n,
                       const Levels& lv) {
  at::parallel_for(0, NumChunks(n), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
      double acc[kMaxBranches] = {0};
      for (int64_t b = begin; b < end; b += kBlock) {
        const int m = int(std::min<int64_t>(kBlock, end - b));
        if (gx != nullptr) ActInputGradBlock(x + b, g + b, gx + b, m, lv);
        if (gp_chunks != nullptr) ActProbGradBlock(x + b, g + b, m, lv, acc);
      }
      if (gp_chunks != nullptr) {
        for (int j = 0; j < lv.k; ++j) gp_chunks[c * lv.k + j] = acc[j];
      }
    }
  });
}

// ---- weights (symmetric; small tensors, so a plain std::floor is fine) ----

inline float ClampSym(float w, float c) { return std::min(std::max(w, -c), c); }

void WeightForwardKernel(const float* w, float* out, int64_t n, const Levels& lv) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float acc = 0.0f;
      for (int j = 0; j < lv.k; ++j) {
        acc =
            acc + lv.prob[j] * (std::floor(ClampSym(w[i], lv.clip[j]) * lv.inv_step[j] + 0.5f) * lv.step[j]);
      }
      out[i] = acc;
    }
  });
}

void WeightBackwardKernel(const float* w, const float* g, float* gw, double* gp_chunks, int64_t n,
                          const Levels& lv) {
  at::parallel_for(0, NumChunks(n), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
      double acc[kMaxBranches] = {0};
      for (int64_t i = begin; i < end; ++i) {
        const float wi = w[i];
        if (gw != nullptr) gw[i] = g[i] * WeightSteFactor(wi, lv);
        if (gp_chunks == nullptr) continue;
        for (int j = 0; j < lv.k; ++j) {
          acc[j] +=
              double(g[i]) * (std::floor(ClampSym(wi, lv.clip[j]) * lv.inv_step[j] + 0.5f) * lv.step[j]);
        }
      }
      if (gp_chunks != nullptr) {
        for (int j = 0; j < lv.k; ++j) gp_chunks[c * lv.k + j] = acc[j];
      }
    }
  });
}

// The mean of the last activation-mixture input on this thread (the forward pass reads every element
// anyway; the layer's running mean takes it from here instead of a second pass over x).
double& LastInputMean() {
  thread_local double mean = 0;
  return mean;
}

template <bool kWeights>
class MixtureFunction : public torch::autograd::Function<MixtureFunction<kWeights>> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& probs,
                               std::vector<int64_t> bits, std::vector<double> clips) {
    auto xc = x.contiguous();
    TORCH_CHECK(xc.scalar_type() == torch::kFloat, "mixture: float32 input expected");
    TORCH_CHECK(xc.device().is_cpu(), "mixture: the fused kernel runs on CPU tensors");
    std::vector<int> b(bits.begin(), bits.end());
    Levels lv = MakeLevels(b, probs, clips, kWeights);
    auto out = torch::empty_like(xc);
    if (kWeights) {
      WeightForwardKernel(xc.data_ptr<float>(), out.data_ptr<float>(), xc.numel(), lv);
    } else {
      // Backward keeps x itself: a one-byte mask would save memory only where nothing else keeps x
      // alive, and costs more time (measured) than reading x again.
      const double sum = ActForwardKernel(xc.data_ptr<float>(), out.data_ptr<float>(), xc.numel(), lv);
      LastInputMean() = xc.numel() > 0 ? sum / double(xc.numel()) : 0.0;
    }
    ctx->save_for_backward({xc, probs});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["clips"] = clips;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& probs = saved[1];
    auto bits64 = ctx->saved_data["bits"].toIntVector();
    auto clips_list = ctx->saved_data["clips"].toDoubleList();
    std::vector<double> clips(clips_list.begin(), clips_list.end());
    std::vector<int> bits(bits64.begin(), bits64.end());
    Levels lv = MakeLevels(bits, probs, clips, kWeights);

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
             want_gp ? gp_chunks.data() : nullptr, x.numel(), lv);
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

// Scale-Clip constants per bitwidth (index = bits, 2..8). Chosen by fine-tuning uniform b-bit resnet20
// (width 0.5) on Fashion-MNIST from one FP32 start with each candidate k (docs/results.md, "Scale-Clip
// constants"): few levels want a tight clip (a small step), many levels want the tails kept.
constexpr double kWeightClipK[9] = {0, 0, 1.2, 3.0, 3.0, 3.5, 4.0, 4.0, 4.0};
constexpr double kActivationClipK[9] = {0, 0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0};

double DefaultWeightClipK(int bits) { return kWeightClipK[std::min(std::max(bits, 2), 8)]; }
double DefaultActivationClipK(int bits) { return kActivationClipK[std::min(std::max(bits, 2), 8)]; }

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

torch::Tensor WeightMixture(const torch::Tensor& w, const torch::Tensor& probs, const std::vector<int>& bits,
                            const std::vector<double>& clips) {
  return MixtureFunction<true>::apply(w, probs, ToInt64(bits), clips);
}

torch::Tensor ActivationMixture(const torch::Tensor& x, const torch::Tensor& probs,
                                const std::vector<int>& bits, const std::vector<double>& clips,
                                double* input_mean) {
  auto out = MixtureFunction<false>::apply(x, probs, ToInt64(bits), clips);
  if (input_mean != nullptr) *input_mean = LastInputMean();
  return out;
}

int FusedKernelThreads(int tasks) {
  std::vector<int> used(size_t(std::max(at::get_num_threads(), 1)), 0);
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    const int t = at::get_thread_num();
    if (t >= 0 && t < int(used.size())) used[size_t(t)] = 1;
  });
  return int(std::count(used.begin(), used.end(), 1));
}

torch::Tensor WeightMixtureReference(const torch::Tensor& w, const torch::Tensor& probs,
                                     const std::vector<int>& bits, const std::vector<double>& clips) {
  torch::Tensor out;
  for (size_t j = 0; j < bits.size(); ++j) {
    auto wc = w.clamp(-clips[j], clips[j]);
    auto q = wc + (QuantizeWeight(wc.detach(), bits[j], clips[j]) - wc).detach();
    auto term = probs[j] * q;
    out = out.defined() ? out + term : term;
  }
  return out;
}

torch::Tensor ActivationMixtureReference(const torch::Tensor& x, const torch::Tensor& probs,
                                         const std::vector<int>& bits, const std::vector<double>& clips) {
  torch::Tensor out;
  for (size_t j = 0; j < bits.size(); ++j) {
    auto xc = x.clamp(0.0, clips[j]);
    auto q = xc + (QuantizeActivation(xc.detach(), bits[j], clips[j]) - xc).detach();
    auto term = probs[j] * q;
    out = out.defined() ? out + term : term;
  }
  return out;
}

}  // namespace bpnas
