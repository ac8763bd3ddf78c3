#include "spec/cost_model.h"

namespace bpnas {

const char* CostMetricName(CostMetricKind metric) {
  return metric == CostMetricKind::kBitOps ? "BITOPS" : "SIZE";
}

CostModel::CostModel(std::vector<LayerInfo> layers, CostMetricKind metric, int fixed_bits)
    : layers_(std::move(layers)), metric_(metric), fixed_bits_(fixed_bits) {
  for (const LayerInfo& l : layers_) {
    if (l.searchable) {
      searchable_.push_back(l);
    } else {
      fixed_cost_ +=
          metric_ == CostMetricKind::kBitOps ? l.macs * fixed_bits_ * fixed_bits_ : l.params * fixed_bits_;
    }
  }
}

double CostModel::LayerCoefficient(size_t i) const {
  return metric_ == CostMetricKind::kBitOps ? searchable_[i].macs : searchable_[i].params;
}

double CostModel::LayerCost(size_t i, double weight_bits, double activation_bits) const {
  return metric_ == CostMetricKind::kBitOps ? searchable_[i].macs * weight_bits * activation_bits
                                            : searchable_[i].params * weight_bits;
}

double CostModel::Exact(const std::vector<int>& weight_bits, const std::vector<int>& activation_bits) const {
  double c = fixed_cost_;
  for (size_t i = 0; i < searchable_.size(); ++i) c += LayerCost(i, weight_bits[i], activation_bits[i]);
  return c;
}

double CostModel::Expected(const std::vector<double>& mean_weight_bits,
                           const std::vector<double>& mean_activation_bits) const {
  double c = fixed_cost_;
  for (size_t i = 0; i < searchable_.size(); ++i) {
    c += LayerCost(i, mean_weight_bits[i], mean_activation_bits[i]);
  }
  return c;
}

double CostModel::Uniform(double bits) const { return UniformPair(bits, bits); }

double CostModel::UniformPair(double weight_bits, double activation_bits) const {
  double c = fixed_cost_;
  for (size_t i = 0; i < searchable_.size(); ++i) c += LayerCost(i, weight_bits, activation_bits);
  return c;
}

}  // namespace bpnas
