// The soft barrier penalty, the Prob-1 regularizer and their schedules (DESIGN.md §2).
//
// psi_t(z) = -(1/t) log(-z)                      for z <= -1/t^2
//          =  t z - (1/t) log(1/t^2) + 1/t        otherwise
// with z = E[C]/C_max - 1 (feasible iff z <= 0). psi is C1-continuous at z = -1/t^2 (value
// -(1/t) log(1/t^2), slope t), near zero deep inside, steep at the edge, finite and linear outside.
#ifndef BPNAS_WORKER_ENGINE_BARRIER_H_
#define BPNAS_WORKER_ENGINE_BARRIER_H_

#include <vector>

#include <torch/types.h>

namespace bpnas {

// psi_t(z) as a differentiable torch expression (z: any shape).
torch::Tensor BarrierPenalty(const torch::Tensor& z, double t);
// The constraint term of the architecture loss on r = E[cost]/budget: psi_t(r - 1), plus, when
// lower_band > 0, w * psi_t(lower_band - r) with w = (target - lower_band) / (1 - target), so that the
// sum is smallest at r = target for every t. (Two equal barriers balance at the middle of the band:
// measured, every search then held E[cost] at 0.95 of the budget from start to derive.)
torch::Tensor BudgetBarrier(const torch::Tensor& ratio, double t, double lower_band, double target);
// The same in plain doubles, and its derivative (tests, reporting).
double BarrierPenaltyValue(double z, double t);
double BarrierPenaltyGradient(double z, double t);

// Mean over the given distributions of (1 - sum p^2); zero iff every one is one-hot.
// DESIGN.md defines R per layer as (1 - sum p^2) + (1 - sum q^2): pass both p and q of every layer
// and multiply by 2, or use Prob1Regularizer below.
torch::Tensor Prob1Regularizer(const std::vector<torch::Tensor>& weight_probs,
                               const std::vector<torch::Tensor>& activation_probs);
// The same for distributions stacked by row ([layers, bitwidths] each): a handful of operators instead
// of several per layer (the architecture step is small operators only apart from the network).
torch::Tensor Prob1RegularizerStacked(const torch::Tensor& weight_probs,
                                      const torch::Tensor& activation_probs);

// t grows geometrically from t_start (progress 0) to t_end (progress 1).
double BarrierT(double progress, double t_start, double t_end);
// lambda is 0 until `start`, then ramps linearly to lambda_max at progress 1.
double Prob1Lambda(double progress, double start, double lambda_max);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_BARRIER_H_
