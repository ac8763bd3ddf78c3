#include "worker/engine/barrier.h"

#include <algorithm>
#include <cmath>

namespace bpnas {

torch::Tensor BarrierPenalty(const torch::Tensor& z, double t) {
  const double z0 = -1.0 / (t * t);
  // log of a clamped argument: the unused branch of where() must not produce NaN gradients.
  auto inside = -(1.0 / t) * torch::log(torch::clamp(-z, 1.0 / (t * t)));
  auto outside = t * z - (1.0 / t) * std::log(1.0 / (t * t)) + 1.0 / t;
  return torch::where(z <= z0, inside, outside);
}

torch::Tensor BudgetBarrier(const torch::Tensor& ratio, double t, double lower_band, double target) {
  auto upper = BarrierPenalty(ratio - 1.0, t);
  if (lower_band <= 0) return upper;
  TORCH_CHECK(target > lower_band && target < 1, "BudgetBarrier: target must be in (lower_band, 1)");
  const double w = (target - lower_band) / (1.0 - target);
  return upper + w * BarrierPenalty(lower_band - ratio, t);
}

double BarrierPenaltyValue(double z, double t) {
  if (z <= -1.0 / (t * t)) return -(1.0 / t) * std::log(-z);
  return t * z - (1.0 / t) * std::log(1.0 / (t * t)) + 1.0 / t;
}

double BarrierPenaltyGradient(double z, double t) {
  if (z <= -1.0 / (t * t)) return -1.0 / (t * z);
  return t;
}

torch::Tensor Prob1Regularizer(const std::vector<torch::Tensor>& weight_probs,
                               const std::vector<torch::Tensor>& activation_probs) {
  TORCH_CHECK(weight_probs.size() == activation_probs.size() && !weight_probs.empty(),
              "Prob1Regularizer: one weight and one activation distribution per layer");
  return Prob1RegularizerStacked(torch::stack(weight_probs), torch::stack(activation_probs));
}

torch::Tensor Prob1RegularizerStacked(const torch::Tensor& weight_probs,
                                      const torch::Tensor& activation_probs) {
  TORCH_CHECK(weight_probs.dim() == 2 && activation_probs.dim() == 2 &&
                  weight_probs.size(0) == activation_probs.size(0) && weight_probs.size(0) > 0,
              "Prob1RegularizerStacked: [layers, bitwidths] weight and activation distributions expected");
  auto per_layer = (2 - weight_probs.square().sum(1)) - activation_probs.square().sum(1);
  return per_layer.sum() / double(weight_probs.size(0));
}

double BarrierT(double progress, double t_start, double t_end) {
  progress = std::clamp(progress, 0.0, 1.0);
  return t_start * std::pow(t_end / t_start, progress);
}

double Prob1Lambda(double progress, double start, double lambda_max) {
  if (progress <= start) return 0.0;
  if (start >= 1.0) return lambda_max;
  return lambda_max * std::min(1.0, (progress - start) / (1.0 - start));
}

}  // namespace bpnas
