// From the trained architecture to the network that is fine-tuned (DESIGN.md §2, "Derive"):
// argmax bits per layer, repaired into the budget (RepairToBudget) or raised into the band
// (RaiseToBand), then the uniform check against the best fitting uniform network.
#ifndef BPNAS_WORKER_ENGINE_DERIVE_H_
#define BPNAS_WORKER_ENGINE_DERIVE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bpnas/v1/model.pb.h"
#include "spec/cost_model.h"
#include "worker/engine/supernet.h"

namespace bpnas {

class Trainer;  // worker/engine/trainer.h

// Bit indices (into each layer's lists) and bitwidths per searchable layer.
struct DerivedConfig {
  std::vector<int> weight_index, activation_index;
  std::vector<int> weight_bits, activation_bits;
};

// Argmax bit indices per searchable layer (weight, activation).
DerivedConfig DeriveArgmax(const Supernet& net);
// The configuration with layer i at weight_bits[i] / activation_bits[i] (each in its layer's lists).
DerivedConfig ConfigForBits(const Supernet& net, const std::vector<int>& weight_bits,
                            const std::vector<int>& activation_bits);
// Exact cost of the argmax network / budget.
double ArgmaxRatio(const Supernet& net, const CostModel& cost, double budget);

void PinAll(Supernet& net, const DerivedConfig& config);
void UnpinAll(Supernet& net);

// Lowers the bits of the layer with the smallest probability margin until cost <= budget.
// Returns a note describing each change (empty if nothing changed).
std::string RepairToBudget(const Supernet& net, const CostModel& cost, double budget, DerivedConfig* config);
// The other side of the band: while cost < lower_band * budget, raises by one step the bits of the
// layer whose choice the architecture held least firmly against the next higher bitwidth, among
// steps that keep cost <= budget; stops when none fits. The argmax of a not quite one-hot
// distribution can land below the expected cost the lower barrier kept in the band. Returns a note
// describing each change (empty if nothing changed).
std::string RaiseToBand(const Supernet& net, const CostModel& cost, double budget, double lower_band,
                        DerivedConfig* config);

// Appends one LayerArchitecture per searchable layer: `wbits` / `abits`, the layer's size and, when
// `with_probs`, its architecture probabilities.
void AddLayers(const Supernet& net, const CostModel& cost, const std::vector<int>& wbits,
               const std::vector<int>& abits, bool with_probs,
               google::protobuf::RepeatedPtrField<bpnas::v1::LayerArchitecture>* out);

// After the search: records the expected cost and Prob-1 at derive, derives the argmax network,
// repairs or raises it (not for LINEAR_PENALTY, reported as it comes out), runs the uniform check
// when search.uniform_check is on, and leaves trainer.derived pinned and trainer.sched at the
// start of the weights phase. The check fine-tunes the derived network and the best fitting
// uniform one (raised to the band) for the fine-tune's epochs on the weight split, scores both on
// the architecture split, and keeps the derived one only when it leads by more than the paired
// standard error. A failed weight reload (finetune.from_init) is returned.
absl::Status DeriveAndCheck(Trainer& trainer);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_DERIVE_H_
