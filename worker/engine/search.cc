#include "worker/engine/search.h"

#include <algorithm>
#include <memory>
#include <set>
#include <thread>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/nn/functional.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/engine/artifact.h"
#include "worker/engine/barrier.h"
#include "worker/engine/data_parallel.h"
#include "worker/engine/derive.h"
#include "worker/engine/trainer.h"
#include "worker/engine/weights.h"

namespace bpnas {

using bpnas::v1::JobSpec;

void ConfigureTorchForTraining(const JobSpec& s) {
  const int threads =
      s.threads() > 0 ? int(s.threads()) : int(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  at::globalContext().setFlushDenormal(true);
}

QuantOptions QuantOptionsFor(const JobSpec& s) {
  QuantOptions q;
  q.weight_bits.assign(s.search_space().weight_bits().begin(), s.search_space().weight_bits().end());
  q.activation_bits.assign(s.search_space().activation_bits().begin(),
                           s.search_space().activation_bits().end());
  if (s.method() == bpnas::v1::UNIFORM) {
    q.weight_bits = {int(s.uniform_bits())};
    q.activation_bits = {int(s.uniform_bits())};
  }
  if (s.method() == bpnas::v1::FIXED) {  // the bitwidths the configuration uses, ascending
    std::set<int> w, a;
    for (const auto& l : s.layer_bits()) {
      w.insert(int(l.weight_bits()));
      a.insert(int(l.activation_bits()));
    }
    q.weight_bits.assign(w.begin(), w.end());
    q.activation_bits.assign(a.begin(), a.end());
  }
  q.fixed_bits = int(s.model().fixed_bits());
  q.clip_weight_k = s.search().has_clip_weight_k() ? s.search().clip_weight_k() : 0.0;
  q.clip_activation_k = s.search().has_clip_activation_k() ? s.search().clip_activation_k() : 0.0;
  q.per_channel_weights = s.finetune().per_channel_weights();
  return q;
}

torch::Tensor ExpectedCostRatio(const Supernet& net, const CostModel& cost, double budget) {
  const auto on = net->parameters().front().options();
  const auto& layers = net->searchable_layers();
  if (layers.empty()) return torch::full({}, cost.Fixed() / budget, on);
  // Stacked over layers: E[bits] per layer is a product with the bitwidth vector, and the total one
  // weighted sum (a few operators, not a dozen per layer).
  std::vector<float> wb(layers[0]->weight_bits().begin(), layers[0]->weight_bits().end());
  std::vector<float> coef;
  for (size_t i = 0; i < layers.size(); ++i) coef.push_back(float(cost.LayerCoefficient(i) / budget));
  auto ew = net->StackedWeightProbs().matmul(torch::tensor(wb).to(on.device()));
  auto per_layer = torch::tensor(coef).to(on.device()) * ew;
  if (cost.metric() == CostMetricKind::kBitOps) {
    std::vector<float> ab(layers[0]->activation_bits().begin(), layers[0]->activation_bits().end());
    per_layer = per_layer * net->StackedActivationProbs().matmul(torch::tensor(ab).to(on.device()));
  }
  return per_layer.sum() + cost.Fixed() / budget;
}

namespace {

std::vector<float> GaussianLogits(const std::vector<int>& bits, double mean) {
  std::vector<float> logits;
  for (int b : bits) logits.push_back(float(-0.5 * (b - mean) * (b - mean)));
  return logits;
}

}  // namespace

void SetFeasibleStart(Supernet& net, const CostModel& cost, double budget, double start_ratio) {
  auto layers = net->searchable_layers();
  if (layers.empty()) return;
  const auto& wb = layers[0]->weight_bits();
  const auto& ab = layers[0]->activation_bits();
  const bool size_metric = cost.metric() == CostMetricKind::kSize;
  auto apply = [&](double mean) {
    // For SIZE the activations cost nothing: start them at the top of their range.
    const double act_mean = size_metric ? ab.back() + 1.0 : mean;
    for (auto l : layers) l->SetLogits(GaussianLogits(wb, mean), GaussianLogits(ab, act_mean));
    torch::NoGradGuard guard;
    return ExpectedCostRatio(net, cost, budget).item<double>();
  };
  double lo = std::min(wb.front(), ab.front()) - 4.0, hi = std::max(wb.back(), ab.back()) + 4.0;
  for (int it = 0; it < 60; ++it) {  // E[cost] grows with the mean: bisect
    const double mid = 0.5 * (lo + hi);
    if (apply(mid) > start_ratio)
      hi = mid;
    else
      lo = mid;
  }
  apply(lo);
}

absl::Status TrainWeightsOnly(Supernet& net, const JobSpec& s, const Dataset& train, int epochs, double lr,
                              const std::string& phase, const RunOptions& options) {
  ProgressEvent event;
  event.phase = phase;
  try {
    TrainWeightsEpochs(net, s, train, torch::arange(train.size(), torch::kLong),
                       int(s.finetune().batch_size()), s.seed() + 3, epochs, lr, event, Clock::now(),
                       options);
  } catch (const StopRequested&) {
    return absl::CancelledError("stopped on request");
  } catch (const CollectiveFailed& e) {
    return e.status;
  }
  return absl::OkStatus();
}

namespace {

// The loss terms summed over the steps since the last report; the ratio and the schedule's t and
// lambda are the last step's.
struct StepLosses {
  double ce = 0, barrier = 0, prob1 = 0, ratio = 0, barrier_t = 0, lambda = 0;
};

// Warm-up: weights only, on sampled bit configurations (DESIGN.md §2, "Schedule").
void RunWarmup(Trainer& t) {
  const auto& sp = t.spec.search();
  if (!t.resumed) SetFeasibleStart(t.net, t.plan.cost_model, t.budget, sp.start_ratio());
  auto t0 = Clock::now();
  SetRequiresGrad(t.arch_params, false);
  const BetweenSteps between = [&t] { t.BetweenSteps(); };
  for (; t.sched.epoch <= int(sp.warmup_epochs()); ++t.sched.epoch, t.sched.step = 1) {
    ProgressEvent ev;
    ev.phase = "warmup";
    ev.epoch = t.sched.epoch;
    ev.epochs = int(sp.warmup_epochs());
    {
      torch::NoGradGuard g;
      ev.expected_ratio = ExpectedCostRatio(t.net, t.plan.cost_model, t.budget).item<double>();
    }
    ev.argmax_ratio = ArgmaxRatio(t.net, t.plan.cost_model, t.budget);
    ev.feasible = ev.expected_ratio <= 1.0;
    ev.elapsed_seconds = Seconds(t.started);
    TrainWeightsEpoch(t.net, t.data.train, *t.wsampler, *t.wopt, sp.weight_lr(), &t.sched.global,
                      t.total_weight_steps, sp.sampled_warmup() ? &t.rng : nullptr, ev, &t.sched, between,
                      t.options);
  }
  t.AddPhaseTime("warmup", Seconds(t0));
  t.sched.phase = kSearch;
  t.sched.epoch = 1;
  t.sched.step = 1;
}

// One weight step (cross-entropy on a weight batch) and one architecture step (cross-entropy +
// barrier + Prob-1 on an architecture batch), at the search's progress `progress` in [0, 1].
// Adds the step's loss terms to `acc` and returns the samples it used.
int64_t SearchStep(Trainer& t, double progress, StepLosses* acc) {
  const auto& sp = t.spec.search();
  const double barrier_t = BarrierT(progress, sp.barrier_t_start(), sp.barrier_t_end());
  const double lambda = Prob1Lambda(progress, sp.prob1_start(), sp.prob1_lambda());
  Supernet& net = t.net;

  // Weight step.
  SetRequiresGrad(t.arch_params, false);
  SetRequiresGrad(t.weight_params, true);
  auto widx = t.wsampler->Next();
  SetLearningRate(*t.wopt, CosineLr(sp.weight_lr(), t.sched.global, t.total_weight_steps));
  t.wopt->zero_grad();
  auto [wx, wy] = Batch(t.data.train, widx, t.options.device);
  auto wloss = torch::nn::functional::cross_entropy(net->forward(wx), wy);
  wloss.backward();
  SyncStep(net, t.weight_params, t.options);
  t.wopt->step();
  ++t.sched.global;

  // Architecture step.
  SetRequiresGrad(t.weight_params, false);
  SetRequiresGrad(t.arch_params, true);
  auto aidx = t.asampler->Next();
  t.aopt->zero_grad();
  auto [ax, ay] = Batch(t.data.train, aidx, t.options.device);
  auto ce = torch::nn::functional::cross_entropy(net->forward(ax), ay);
  auto ratio = ExpectedCostRatio(net, t.plan.cost_model, t.budget);
  torch::Tensor barrier;
  if (t.linear) {
    // The EdMIPS-style baseline: a fixed linear price on the expected cost, nothing else.
    barrier = sp.linear_gamma() * ratio;
  } else {
    barrier = sp.barrier_mu() * BudgetBarrier(ratio, barrier_t, sp.lower_band(), sp.budget_target());
  }
  auto prob1 = Prob1RegularizerStacked(net->StackedWeightProbs(), net->StackedActivationProbs());
  auto aloss = t.linear ? ce + barrier : ce + barrier + lambda * prob1;
  aloss.backward();
  SyncStep(net, t.arch_params, t.options);
  t.aopt->step();
  ++t.sched.job_step;

  acc->ce += wloss.item<double>();
  acc->barrier += barrier.item<double>();
  acc->prob1 += prob1.item<double>();
  acc->ratio = ratio.item<double>();
  acc->barrier_t = barrier_t;
  acc->lambda = lambda;
  return widx.size(0) + aidx.size(0);
}

// The search: alternating weight and architecture steps, with progress every report_every steps.
void RunSearch(Trainer& t) {
  const auto& sp = t.spec.search();
  auto t0 = Clock::now();
  const int64_t search_steps = t.steps_per_epoch * sp.epochs();
  for (; t.sched.epoch <= int(sp.epochs()); ++t.sched.epoch, t.sched.step = 1) {
    t.net->train();
    if (!t.sched.epoch_started) {
      t.wsampler->StartEpoch();
      t.sched.epoch_started = true;
    }
    auto te = Clock::now();
    StepLosses acc;
    int64_t acc_n = 0, samples = 0;
    for (; t.sched.step <= t.steps_per_epoch; ++t.sched.step, ++t.sched.search_step) {
      t.BetweenSteps();
      const int64_t step = t.sched.step;
      const double progress = double(t.sched.search_step) / double(std::max<int64_t>(1, search_steps - 1));
      samples += SearchStep(t, progress, &acc);
      ++acc_n;
      if (t.options.progress && (step % t.options.report_every == 0 || step == t.steps_per_epoch)) {
        ProgressEvent ev;
        ev.phase = "search";
        ev.epoch = t.sched.epoch;
        ev.epochs = int(sp.epochs());
        ev.step = step;
        ev.steps = t.steps_per_epoch;
        ev.job_step = t.sched.job_step;
        ev.cross_entropy = acc.ce / double(acc_n);
        ev.barrier = acc.barrier / double(acc_n);
        ev.prob1 = acc.prob1 / double(acc_n);
        ev.prob1_lambda = acc.lambda;
        ev.barrier_t = acc.barrier_t;
        ev.expected_ratio = acc.ratio;
        ev.argmax_ratio = ArgmaxRatio(t.net, t.plan.cost_model, t.budget);
        ev.feasible = acc.ratio <= 1.0;
        ev.samples_per_second = samples / std::max(1e-9, Seconds(te));
        ev.elapsed_seconds = Seconds(t.started);
        ev.epoch_end = step == t.steps_per_epoch;
        t.options.progress(ev);
        acc = StepLosses();
        acc_n = 0;
      }
    }
    t.sched.epoch_started = false;
  }
  SetRequiresGrad(t.weight_params, true);
  SetRequiresGrad(t.arch_params, false);
  t.AddPhaseTime("search", Seconds(t0));
}

// The weights phase: the fine-tune of the derived network, or the uniform baseline's training.
absl::Status RunFinetune(Trainer& t) {
  auto t0 = Clock::now();
  if (t.fsampler == nullptr) {  // entering it now (not resumed inside it)
    if (t.spec.finetune().from_init()) BPNAS_RETURN_IF_ERROR(LoadWeights(t.net, t.spec.init_weights()));
    t.StartWeightsPhase();
  }
  ProgressEvent event;
  event.phase = PhaseName(kWeights, t.uniform_train);
  if (t.plan.has_budget) {
    event.expected_ratio = event.argmax_ratio =
        t.plan.cost_model.Exact(t.derived.weight_bits, t.derived.activation_bits) / t.budget;
    event.feasible = event.expected_ratio <= 1.0;
  }
  event.epochs = t.weights_epochs;
  const int64_t total = t.fsampler->BatchesPerEpoch() * t.weights_epochs;
  const BetweenSteps between = [&t] { t.BetweenSteps(); };
  for (; t.sched.epoch <= t.weights_epochs; ++t.sched.epoch, t.sched.step = 1) {
    event.epoch = t.sched.epoch;
    event.elapsed_seconds = Seconds(t.started);
    TrainWeightsEpoch(t.net, t.data.train, *t.fsampler, *t.fopt, t.weights_lr, &t.sched.weights_step, total,
                      nullptr, event, &t.sched, between, t.options);
  }
  t.AddPhaseTime(event.phase, Seconds(t0));
  t.sched.phase = kDone;
  return absl::OkStatus();
}

// Test accuracy, the final cost and layer table, the last progress event, and the artifact.
absl::StatusOr<bpnas::v1::QuantizedModel> EvaluateAndExport(Trainer& t) {
  auto t0 = Clock::now();
  if (t.data.validation.size() > 0) {
    t.result.set_validation_accuracy(EvaluateAcrossRanks(t.net, t.data.validation, t.options));
    t.result.set_validation_samples(uint64_t(t.data.validation.size()));
  }
  const double accuracy = EvaluateAcrossRanks(t.net, t.data.test, t.options);
  t.AddPhaseTime("evaluate", Seconds(t0));
  auto& result = t.result;
  result.set_test_accuracy(accuracy);

  std::vector<int> wbits, abits;
  for (auto l : t.net->searchable_layers()) {
    wbits.push_back(l->weight_bits()[l->pinned_weight_index()]);
    abits.push_back(l->activation_bits()[l->pinned_activation_index()]);
  }
  result.set_cost(t.plan.cost_model.Exact(wbits, abits));
  result.set_within_budget(!t.plan.has_budget || result.cost() <= t.budget);
  AddLayers(t.net, t.plan.cost_model, wbits, abits, /*with_probs=*/!t.uniform, result.mutable_layers());
  if (t.options.progress) {
    ProgressEvent ev;
    ev.phase = "evaluate";
    ev.epoch = ev.epochs = 1;
    ev.job_step = t.sched.job_step + 1;
    ev.elapsed_seconds = Seconds(t.started);
    ev.expected_ratio = ev.argmax_ratio = t.plan.has_budget ? result.cost() / t.budget : 0;
    ev.feasible = result.within_budget();
    ev.epoch_end = true;
    t.options.progress(ev);
  }
  t.net->to(torch::kCPU);  // export reads the tensors' memory
  return ExportQuantizedModel(t.net, t.plan, result);
}

// RunJob without its exception edge: stops, failed collectives and LibTorch errors propagate.
absl::StatusOr<bpnas::v1::QuantizedModel> RunJobUnchecked(const JobPlan& plan, const DataSplits& data,
                                                          const RunOptions& options) {
  BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(plan, data, options));
  Trainer& t = *trainer;
  if (t.sched.phase == kWarmup) RunWarmup(t);
  if (t.sched.phase == kSearch) {
    RunSearch(t);
    BPNAS_RETURN_IF_ERROR(DeriveAndCheck(t));
  }
  if (t.sched.phase == kWeights) BPNAS_RETURN_IF_ERROR(RunFinetune(t));
  return EvaluateAndExport(t);
}

}  // namespace

absl::StatusOr<bpnas::v1::QuantizedModel> RunJob(const JobPlan& plan, const DataSplits& data,
                                                 const RunOptions& options) {
  try {
    return RunJobUnchecked(plan, data, options);
  } catch (const StopRequested&) {
    return absl::CancelledError("stopped on request");
  } catch (const CollectiveFailed& e) {
    return e.status;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("search failed in LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("search failed: ", e.what()));
  }
}

}  // namespace bpnas
