#include "worker/engine/derive.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/engine/barrier.h"
#include "worker/engine/data_parallel.h"
#include "worker/engine/search.h"
#include "worker/engine/trainer.h"
#include "worker/engine/weights.h"

namespace bpnas {

using bpnas::v1::JobSpec;

DerivedConfig DeriveArgmax(const Supernet& net) {
  DerivedConfig d;
  for (auto l : net->searchable_layers()) {
    torch::NoGradGuard guard;
    const int wi = int(l->WeightProbs().argmax().item<int64_t>());
    const int ai = int(l->ActivationProbs().argmax().item<int64_t>());
    d.weight_index.push_back(wi);
    d.activation_index.push_back(ai);
    d.weight_bits.push_back(l->weight_bits()[wi]);
    d.activation_bits.push_back(l->activation_bits()[ai]);
  }
  return d;
}

DerivedConfig ConfigForBits(const Supernet& net, const std::vector<int>& weight_bits,
                            const std::vector<int>& activation_bits) {
  DerivedConfig d;
  const auto layers = net->searchable_layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& wb = layers[i]->weight_bits();
    const auto& ab = layers[i]->activation_bits();
    d.weight_index.push_back(int(std::find(wb.begin(), wb.end(), weight_bits[i]) - wb.begin()));
    d.activation_index.push_back(int(std::find(ab.begin(), ab.end(), activation_bits[i]) - ab.begin()));
  }
  d.weight_bits = weight_bits;
  d.activation_bits = activation_bits;
  return d;
}

double ArgmaxRatio(const Supernet& net, const CostModel& cost, double budget) {
  DerivedConfig d = DeriveArgmax(net);
  return cost.Exact(d.weight_bits, d.activation_bits) / budget;
}

void PinAll(Supernet& net, const DerivedConfig& d) {
  auto layers = net->searchable_layers();
  for (size_t i = 0; i < layers.size(); ++i) layers[i]->Pin(d.weight_index[i], d.activation_index[i]);
}

void UnpinAll(Supernet& net) {
  for (auto l : net->searchable_layers()) l->Unpin();
}

namespace {

// One step of `dir` (-1 down, +1 up) in the weight or activation bits of one layer: the step whose
// current choice the architecture held least firmly against the neighbouring bitwidth (smallest
// probability margin), among steps that keep the cost at or under `cap`. Activations are not
// stepped under SIZE (they cost nothing there). Appends the step to `note`; false if none fits.
bool StepLeastFirm(const Supernet& net, const CostModel& cost, int dir, double cap, DerivedConfig* d,
                   std::string* note) {
  torch::NoGradGuard guard;
  const auto layers = net->searchable_layers();
  double best_margin = 1e9;
  int best_layer = -1;
  bool best_is_weight = true;
  for (size_t i = 0; i < layers.size(); ++i) {
    for (int kind = 0; kind < 2; ++kind) {
      const bool is_weight = kind == 0;
      if (!is_weight && cost.metric() == CostMetricKind::kSize) continue;
      const auto& bits = is_weight ? layers[i]->weight_bits() : layers[i]->activation_bits();
      const int cur = is_weight ? d->weight_index[i] : d->activation_index[i];
      const int next = cur + dir;
      if (next < 0 || next >= int(bits.size())) continue;
      std::vector<int> wb = d->weight_bits, ab = d->activation_bits;
      (is_weight ? wb : ab)[i] = bits[next];
      if (cost.Exact(wb, ab) > cap) continue;
      auto probs = is_weight ? layers[i]->WeightProbs() : layers[i]->ActivationProbs();
      const double margin = probs[cur].item<double>() - probs[next].item<double>();
      if (margin < best_margin) {
        best_margin = margin;
        best_layer = int(i);
        best_is_weight = is_weight;
      }
    }
  }
  if (best_layer < 0) return false;
  const auto& l = layers[best_layer];
  auto& index = best_is_weight ? d->weight_index : d->activation_index;
  auto& bits = best_is_weight ? d->weight_bits : d->activation_bits;
  const int from = bits[best_layer];
  index[best_layer] += dir;
  bits[best_layer] = (best_is_weight ? l->weight_bits() : l->activation_bits())[index[best_layer]];
  absl::StrAppend(note, note->empty() ? "" : "; ", l->name(), best_is_weight ? " weights " : " activations ",
                  from, "->", bits[best_layer], " bits");
  return true;
}

// The largest bitwidth in both of the first layer's lists whose uniform network fits the budget
// (0: none fits).
int BestFittingUniformBits(const Supernet& net, const CostModel& cost, double budget) {
  const auto layers = net->searchable_layers();
  const auto& wb = layers[0]->weight_bits();
  const auto& ab = layers[0]->activation_bits();
  int ub = 0;
  for (int b : wb) {
    if (std::find(ab.begin(), ab.end(), b) != ab.end() && cost.Uniform(b) <= budget) ub = b;
  }
  return ub;
}

// The uniform check (see DeriveAndCheck). Replaces trainer.derived by the uniform candidate when
// the derived network does not lead by more than the paired standard error.
absl::Status UniformCheck(Trainer& t) {
  const JobSpec& s = t.spec;
  const auto& sp = s.search();
  const CostModel& cost = t.plan.cost_model;
  Supernet& net = t.net;
  const int ub = BestFittingUniformBits(net, cost, t.budget);
  if (ub == 0) return absl::OkStatus();
  const size_t n_layers = net->searchable_layers().size();
  const std::vector<int> all_ub(n_layers, ub);
  DerivedConfig u = ConfigForBits(net, all_ub, all_ub);
  // Between grid points the uniform network leaves budget unused: raised to the band the way the
  // derived network is, it keeps at least uniform's bits in every layer and uses the budget.
  const std::string raised = sp.lower_band() > 0 ? RaiseToBand(net, cost, t.budget, sp.lower_band(), &u) : "";
  if (u.weight_bits == t.derived.weight_bits && u.activation_bits == t.derived.activation_bits) {
    return absl::OkStatus();  // nothing to choose between
  }
  auto t0 = Clock::now();
  std::vector<torch::Tensor> state, saved;
  {
    torch::NoGradGuard g;
    for (auto& p : net->parameters()) state.push_back(p);
    for (auto& b : net->buffers()) state.push_back(b);
    for (auto& x : state) saved.push_back(x.clone());
  }
  auto restore_state = [&] {
    torch::NoGradGuard g;
    for (size_t i = 0; i < state.size(); ++i) state[i].copy_(saved[i]);
  };
  RunOptions quiet = t.options;  // no progress events: their job steps would run backwards
  quiet.progress = nullptr;
  auto score = [&](const DerivedConfig& c) -> absl::StatusOr<torch::Tensor> {
    restore_state();
    if (s.finetune().from_init()) BPNAS_RETURN_IF_ERROR(LoadWeights(net, s.init_weights()));
    PinAll(net, c);
    net->SetBatchNormFolding(true);  // as the fine-tune trains
    SetRequiresGrad(t.weight_params, true);
    ProgressEvent ev;
    ev.phase = "check";
    // As long as the fine-tune (its epochs, over the weight split): a shorter pass favours the
    // network that recovers fastest, which is not the one that ends best (docs/results.md).
    TrainWeightsEpochs(net, s, t.data.train, t.weight_idx, int(s.finetune().batch_size()), s.seed() + 4,
                       int(s.finetune().epochs()), s.finetune().lr(), ev, Clock::now(), quiet);
    return CorrectOn(net, t.data.train, t.arch_idx, t.options);
  };
  BPNAS_ASSIGN_OR_RETURN(const torch::Tensor correct_derived, score(t.derived));
  BPNAS_ASSIGN_OR_RETURN(const torch::Tensor correct_uniform, score(u));
  restore_state();
  net->SetBatchNormFolding(false);
  UnpinAll(net);
  const PairedScore check = PairedAcrossRanks(correct_derived, correct_uniform, t.options);
  auto& result = t.result;
  result.set_check_uniform_bits(uint32_t(ub));
  result.set_check_derived_accuracy(check.a);
  result.set_check_uniform_accuracy(check.b);
  result.set_check_margin(check.se);
  result.set_check_train_samples(uint64_t(t.n_train - t.n_arch) * s.finetune().epochs());
  // The derived network must lead by more than the standard error of the paired difference: a
  // lead within the check's noise is no evidence, and then the simpler network is returned.
  if (check.a - check.b <= check.se) {
    AddLayers(net, cost, t.derived.weight_bits, t.derived.activation_bits, /*with_probs=*/true,
              result.mutable_check_derived_layers());
    result.set_check_derived_cost(cost.Exact(t.derived.weight_bits, t.derived.activation_bits));
    t.derived = u;
    result.set_returned_uniform(true);
    result.set_repaired(!raised.empty());
    result.set_repair_note(
        raised.empty() ? "" : absl::StrCat("uniform ", ub, "-bit raised to the band: ", raised));
  }
  t.AddPhaseTime("check", Seconds(t0));
  return absl::OkStatus();
}

}  // namespace

std::string RepairToBudget(const Supernet& net, const CostModel& cost, double budget, DerivedConfig* d) {
  std::string note;
  // Every step down lowers the cost: no cap. Stops only if all are at the lowest bits (cannot
  // happen for a feasible budget).
  while (cost.Exact(d->weight_bits, d->activation_bits) > budget &&
         StepLeastFirm(net, cost, -1, std::numeric_limits<double>::infinity(), d, &note)) {
  }
  return note;
}

std::string RaiseToBand(const Supernet& net, const CostModel& cost, double budget, double lower_band,
                        DerivedConfig* d) {
  std::string note;
  while (cost.Exact(d->weight_bits, d->activation_bits) < lower_band * budget &&
         StepLeastFirm(net, cost, +1, budget, d, &note)) {
  }
  return note;
}

void AddLayers(const Supernet& net, const CostModel& cost, const std::vector<int>& wbits,
               const std::vector<int>& abits, bool with_probs,
               google::protobuf::RepeatedPtrField<bpnas::v1::LayerArchitecture>* out) {
  torch::NoGradGuard g;
  const auto layers = net->searchable_layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    auto* la = out->Add();
    la->set_name(layers[i]->name());
    la->set_weight_bits(wbits[i]);
    la->set_activation_bits(abits[i]);
    la->set_macs(cost.searchable()[i].macs);
    la->set_params(cost.searchable()[i].params);
    if (with_probs) {
      auto p = layers[i]->WeightProbs();
      auto q = layers[i]->ActivationProbs();
      for (int64_t j = 0; j < p.numel(); ++j) la->add_weight_probs(p[j].item<double>());
      for (int64_t j = 0; j < q.numel(); ++j) la->add_activation_probs(q[j].item<double>());
    }
  }
}

absl::Status DeriveAndCheck(Trainer& t) {
  const auto& sp = t.spec.search();
  const CostModel& cost = t.plan.cost_model;
  {
    torch::NoGradGuard g;
    t.result.set_expected_cost_at_derive(ExpectedCostRatio(t.net, cost, t.budget).item<double>() * t.budget);
    t.result.set_prob1_at_derive(
        Prob1RegularizerStacked(t.net->StackedWeightProbs(), t.net->StackedActivationProbs()).item<double>());
  }
  t.derived = DeriveArgmax(t.net);
  t.result.set_argmax_cost_at_derive(cost.Exact(t.derived.weight_bits, t.derived.activation_bits));
  // The linear-penalty baseline is reported as it comes out: no repair.
  std::string note;
  if (!t.linear) {
    note = RepairToBudget(t.net, cost, t.budget, &t.derived);
    if (note.empty() && sp.lower_band() > 0) {
      note = RaiseToBand(t.net, cost, t.budget, sp.lower_band(), &t.derived);
      if (!note.empty()) note = "raised to the band: " + note;
    }
  }
  t.result.set_repaired(!note.empty());
  t.result.set_repair_note(note);
  // The supernet's own weights cannot rank the derived and the uniform network: trained for the
  // derived one, they prefer it even where uniform is better after the fine-tune (docs/results.md).
  if (!t.linear && sp.uniform_check()) BPNAS_RETURN_IF_ERROR(UniformCheck(t));
  PinAll(t.net, t.derived);
  t.sched.phase = kWeights;
  t.sched.epoch = 1;
  t.sched.step = 1;
  return absl::OkStatus();
}

}  // namespace bpnas
