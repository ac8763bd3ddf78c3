// Quantizers and the fused bit-mixture operators of the composite layer (DESIGN.md §2).
//
// Weights:     clip c = k_w(b) * mean|W|;  Q_b(w) = floor(clamp(w, -c, c) / s + 0.5) * s,
//              s = c / (2^(b-1) - 1)  (symmetric; at most 2^b - 1 levels).
// Activations: clip c = k_a(b) * m;       Q_b(x) = floor(clamp(x, 0, c) / s + 0.5) * s,
//              s = c / (2^b - 1)      (unsigned; at most 2^b levels).
// Rounding uses the straight-through estimator: d Q / d x = 1 inside [lo, c] (inclusive, as
// torch::clamp), 0 outside.
//
// Scale-Clip's k depends on the bitwidth (DefaultWeightClipK / DefaultActivationClipK): a clip that
// suits 2 bits (few levels: clip hard, keep the step small) costs a high bitwidth most of its range,
// and the other way round.
//
// Mixture(x, p) = sum_j p_j * Q_{b_j}(x), each branch with its own clip c_j; the straight-through
// gradient to x is sum_j p_j * [lo_j <= x <= c_j]. The fused versions compute it in one pass over x and, in
// backward, return the input gradient and all K probability gradients in one more pass; the
// *Reference versions are plain torch expressions with the same semantics (tests, naive bench).
//
// Thread-safety: all functions are pure; the fused kernels parallelize with ATen's thread pool.
#ifndef BPNAS_WORKER_ENGINE_QUANT_OPS_H_
#define BPNAS_WORKER_ENGINE_QUANT_OPS_H_

#include <vector>

#include <torch/types.h>

namespace bpnas {

// Single-bitwidth quantizers (no gradient semantics; used for export and references).
torch::Tensor QuantizeWeight(const torch::Tensor& w, int bits, double clip);
torch::Tensor QuantizeActivation(const torch::Tensor& x, int bits, double clip);
// Integer weight codes in [-(2^(b-1)-1), 2^(b-1)-1] (int8), such that QuantizeWeight = codes * step.
torch::Tensor WeightCodes(const torch::Tensor& w, int bits, double clip);
double WeightStep(int bits, double clip);
double ActivationStep(int bits, double clip);

// Weight clip of Scale-Clip: k_w * mean|W| (a plain number; no gradient flows through it).
double WeightClip(const torch::Tensor& w, double k_w);

// The default Scale-Clip constants for a bitwidth (measured: see the table in quant_ops.cc).
double DefaultWeightClipK(int bits);
double DefaultActivationClipK(int bits);

// Fused mixtures (autograd-aware: gradients to x and to probs).
// `clips` holds one clip per bitwidth.
torch::Tensor WeightMixture(const torch::Tensor& w, const torch::Tensor& probs, const std::vector<int>& bits,
                            const std::vector<double>& clips);
// If `input_mean` is set, it receives mean(max(x, 0)), computed in the same pass. The mixture
// includes the ReLU: negative inputs give 0 and no gradient.
torch::Tensor ActivationMixture(const torch::Tensor& x, const torch::Tensor& probs,
                                const std::vector<int>& bits, const std::vector<double>& clips,
                                double* input_mean = nullptr);

// How many of ATen's intra-op threads the fused kernels' parallel loops run on (a loop over
// `tasks` tasks, counted inside this library's code). 1 whatever at::get_num_threads() says means
// the library was compiled without OpenMP: ATen's parallel_for is a header template and runs
// serially then.
int FusedKernelThreads(int tasks = 64);

// The same mixtures as K separate torch expressions with STE (the naive composite layer).
torch::Tensor WeightMixtureReference(const torch::Tensor& w, const torch::Tensor& probs,
                                     const std::vector<int>& bits, const std::vector<double>& clips);
torch::Tensor ActivationMixtureReference(const torch::Tensor& x, const torch::Tensor& probs,
                                         const std::vector<int>& bits, const std::vector<double>& clips);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_QUANT_OPS_H_
