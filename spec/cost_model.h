// Cost model: exact and expected BitOPs or model size of a network's bit configuration.
// Torch-free; the engine mirrors Expected() as a differentiable torch expression (search.cc) and a
// test pins the two together.
//
//   BitOPs_l = MACs_l * b_w * b_a          Size_l = params_l * b_w  (bits)
// Fixed (non-searchable) layers always count at `fixed_bits` for weights and activations.
#ifndef BPNAS_SPEC_COST_MODEL_H_
#define BPNAS_SPEC_COST_MODEL_H_

#include <string>
#include <vector>

#include "spec/graph.h"

namespace bpnas {

enum class CostMetricKind { kBitOps, kSize };

const char* CostMetricName(CostMetricKind metric);

class CostModel {
 public:
  CostModel(std::vector<LayerInfo> layers, CostMetricKind metric, int fixed_bits);

  CostMetricKind metric() const { return metric_; }
  // The searchable layers, in execution order; the bit vectors below follow this order.
  const std::vector<LayerInfo>& searchable() const { return searchable_; }
  const std::vector<LayerInfo>& all_layers() const { return layers_; }

  // Cost of the fixed layers alone.
  double Fixed() const { return fixed_cost_; }
  // Cost of one searchable layer at the given bits.
  double LayerCost(size_t i, double weight_bits, double activation_bits) const;
  // The per-layer multiplier of E[b_w]*E[b_a] (BitOPs: MACs) or of E[b_w] (size: params).
  double LayerCoefficient(size_t i) const;
  // Exact cost of a configuration (one entry per searchable layer).
  double Exact(const std::vector<int>& weight_bits, const std::vector<int>& activation_bits) const;
  // Expected cost with independent per-layer choices, given E[b_w] and E[b_a] per layer.
  double Expected(const std::vector<double>& mean_weight_bits,
                  const std::vector<double>& mean_activation_bits) const;
  // Cost of the network with every searchable layer at `bits` for weights and activations.
  double Uniform(double bits) const;
  // Cost of the network with every searchable layer at the given (possibly different) bits.
  double UniformPair(double weight_bits, double activation_bits) const;

 private:
  std::vector<LayerInfo> layers_;
  std::vector<LayerInfo> searchable_;
  CostMetricKind metric_;
  int fixed_bits_;
  double fixed_cost_ = 0;
};

}  // namespace bpnas

#endif  // BPNAS_SPEC_COST_MODEL_H_
