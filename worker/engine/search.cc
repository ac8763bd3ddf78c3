#include "worker/engine/search.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/nn/functional.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <chrono>
#include <cmath>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/engine/collective.h"
#include "worker/engine/artifact.h"
#include "worker/engine/barrier.h"
#include "worker/engine/weights.h"

namespace bpnas {
namespace {

using Clock = std::chrono::steady_clock;
using bpnas::v1::JobSpec;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Fixed-size batches over a shuffled index set; a new permutation each epoch.
class BatchSampler {
 public:
  BatchSampler(torch::Tensor indices, int batch_size, uint64_t seed)
      : indices_(std::move(indices)), batch_size_(batch_size), rng_(seed) {}

  int64_t BatchesPerEpoch() const {
    return std::max<int64_t>(1, indices_.size(0) / batch_size_);
  }
  void StartEpoch() {
    std::vector<int64_t> perm(indices_.size(0));
    for (size_t i = 0; i < perm.size(); ++i) perm[i] = int64_t(i);
    std::shuffle(perm.begin(), perm.end(), rng_);
    perm_ = torch::tensor(perm, torch::kLong);
    order_ = indices_.index_select(0, perm_);
    cursor_ = 0;
  }
  // The next batch's sample indices; wraps into a new epoch when exhausted.
  torch::Tensor Next() {
    if (!order_.defined() || cursor_ + batch_size_ > order_.size(0)) {
      if (order_.defined() && cursor_ == 0 && order_.size(0) < batch_size_) return order_;
      StartEpoch();
      if (order_.size(0) < batch_size_) return order_;
    }
    auto b = order_.narrow(0, cursor_, batch_size_);
    cursor_ += batch_size_;
    return b;
  }

  // The position (shuffle RNG, this epoch's permutation, cursor). The permutation is of positions
  // in `indices`, not of samples, so it is the same on every rank (same seed, equal shard sizes):
  // rank 0's checkpoint restores every rank's position in its own shard.
  void Save(torch::serialize::OutputArchive& a, const std::string& key) const {
    std::ostringstream rng;
    rng << rng_;
    a.write(key + ".rng", c10::IValue(rng.str()));
    a.write(key + ".cursor", c10::IValue(cursor_));
    a.write(key + ".perm", perm_.defined() ? perm_ : torch::empty({0}, torch::kLong));
  }
  void Load(torch::serialize::InputArchive& a, const std::string& key) {
    c10::IValue rng, cursor;
    a.read(key + ".rng", rng);
    a.read(key + ".cursor", cursor);
    std::istringstream in(rng.toStringRef());
    in >> rng_;
    cursor_ = cursor.toInt();
    a.read(key + ".perm", perm_);
    if (perm_.numel() == 0) {
      perm_ = torch::Tensor();
      order_ = torch::Tensor();
    } else {
      order_ = indices_.index_select(0, perm_);
    }
  }

 private:
  torch::Tensor indices_;
  int batch_size_;
  std::mt19937_64 rng_;
  torch::Tensor perm_;
  torch::Tensor order_;
  int64_t cursor_ = 0;
};

void SetRequiresGrad(const std::vector<torch::Tensor>& params, bool on) {
  for (auto p : params) p.set_requires_grad(on);
}

void SetLearningRate(torch::optim::SGD& opt, double lr) {
  for (auto& group : opt.param_groups()) {
    static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
  }
}

double CosineLr(double base, int64_t step, int64_t total) {
  if (total <= 0) return base;
  return 0.5 * base * (1.0 + std::cos(M_PI * double(std::min(step, total)) / double(total)));
}

torch::optim::SGD MakeSgd(const std::vector<torch::Tensor>& params, double lr, const JobSpec& s) {
  return torch::optim::SGD(params, torch::optim::SGDOptions(lr)
                                       .momentum(s.search().momentum())
                                       .weight_decay(s.search().weight_decay())
                                       .nesterov(true));
}

struct StepLosses {
  double ce = 0, barrier = 0, prob1 = 0, ratio = 0;
};

double ArgmaxRatio(const Supernet& net, const CostModel& cost, double budget) {
  DerivedConfig d = DeriveArgmax(net);
  return cost.Exact(d.weight_bits, d.activation_bits) / budget;
}

void PinAll(Supernet& net, const DerivedConfig& d) {
  auto layers = net->searchable_layers();
  for (size_t i = 0; i < layers.size(); ++i) layers[i]->Pin(d.weight_index[i], d.activation_index[i]);
}

// The configuration with layer i at weight_bits[i] / activation_bits[i] (each in its layer's lists).
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

void UnpinAll(Supernet& net) {
  for (auto l : net->searchable_layers()) l->Unpin();
}

// Thrown between training steps when RunOptions::should_stop says so; RunJob turns it into CANCELLED.
struct StopRequested {};

void StopIfAsked(const RunOptions& options) {
  if (options.should_stop && options.should_stop()) throw StopRequested{};
}

// Thrown when a collective fails (a rank is gone, a timeout, an abort); RunJob returns its status.
struct CollectiveFailed {
  absl::Status status;
};

int WorldSize(const RunOptions& options) { return options.collective ? options.collective->world_size() : 1; }
int Rank(const RunOptions& options) { return options.collective ? options.collective->rank() : 0; }

// Data parallel: averages the gradients of `params` and every floating-point buffer of `net` over
// the ranks, in one collective. Buffers are running statistics updated linearly (EMA), so their
// mean is the statistic of the union of the ranks' batches; averaging every step keeps them equal.
void SyncStep(Supernet& net, const std::vector<torch::Tensor>& params, const RunOptions& options) {
  if (WorldSize(options) == 1) return;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : params) {
    if (!p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad() = torch::zeros_like(p);
    tensors.push_back(p.grad());
  }
  for (const auto& b : net->buffers()) {
    if (b.is_floating_point()) tensors.push_back(b);
  }
  absl::Status st = options.collective->AllReduceMean(tensors);
  if (!st.ok()) throw CollectiveFailed{st};
}

// Every tensor of rank 0's network, on every rank (the start of a data-parallel run).
void BroadcastNetwork(Supernet& net, const RunOptions& options) {
  if (WorldSize(options) == 1) return;
  torch::NoGradGuard guard;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : net->parameters()) tensors.push_back(p.detach());
  for (const auto& b : net->buffers()) tensors.push_back(b);
  absl::Status st = options.collective->Broadcast(tensors, 0);
  if (!st.ok()) throw CollectiveFailed{st};
}

// This rank's share of `indices`: every world_size-th element from position rank, cut to the same
// length on every rank (so every rank runs the same number of steps).
torch::Tensor Shard(const torch::Tensor& indices, const RunOptions& options) {
  const int world = WorldSize(options);
  if (world == 1) return indices;
  const int64_t per_rank = indices.size(0) / world;
  return indices.slice(0, Rank(options), indices.size(0), world).narrow(0, 0, per_rank);
}

torch::Device DeviceOf(Supernet& net) { return net->parameters().front().device(); }

// The samples `idx` of `data` (images, labels), copied to the training device.
std::pair<torch::Tensor, torch::Tensor> Batch(const Dataset& data, const torch::Tensor& idx, torch::Device device) {
  return {data.images.index_select(0, idx).to(device), data.labels.index_select(0, idx).to(device)};
}

// Correct predictions of `net` (eval mode) on every stride-th sample of `data` from `first`, and
// how many samples that is.
std::pair<int64_t, int64_t> CountCorrect(Supernet& net, const Dataset& data, int64_t first, int64_t stride,
                                         int batch_size) {
  torch::NoGradGuard guard;
  net->eval();
  auto images = data.images.slice(0, first, data.size(), stride);
  auto labels = data.labels.slice(0, first, data.size(), stride);
  const int64_t n = labels.size(0);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; i += batch_size) {
    const int64_t b = std::min<int64_t>(batch_size, n - i);
    auto logits = net->forward(images.narrow(0, i, b).to(DeviceOf(net)));
    correct += logits.argmax(1).cpu().eq(labels.narrow(0, i, b)).sum().item<int64_t>();
  }
  return {correct, n};
}

// `values` summed element-wise over the ranks.
std::vector<double> SumAcrossRanks(const std::vector<double>& values, const RunOptions& options) {
  if (WorldSize(options) == 1) return values;
  std::vector<torch::Tensor> t = {torch::tensor(values, torch::kDouble).to(options.device)};
  absl::Status st = options.collective->AllReduceSum(t);
  if (!st.ok()) throw CollectiveFailed{st};
  const auto c = t[0].cpu();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// 100 * correct / seen, with both counts summed over the ranks.
double PercentAcrossRanks(int64_t correct, int64_t seen, const RunOptions& options) {
  const auto c = SumAcrossRanks({double(correct), double(seen)}, options);
  return c[1] == 0 ? 0.0 : 100.0 * c[0] / c[1];
}

// Accuracy in percent over the ranks' shards of `data` (rank r counts every world_size-th sample).
double EvaluateAcrossRanks(Supernet& net, const Dataset& data, const RunOptions& options) {
  if (WorldSize(options) == 1) return Evaluate(net, data);
  const auto [correct, seen] = CountCorrect(net, data, Rank(options), WorldSize(options), 500);
  return PercentAcrossRanks(correct, seen, options);
}

// Per sample of `idx` (this rank's shard of `data`): whether `net` (eval mode) classifies it correctly.
torch::Tensor CorrectOn(Supernet& net, const Dataset& data, const torch::Tensor& idx, const RunOptions& options) {
  torch::NoGradGuard guard;
  net->eval();
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < idx.size(0); i += 500) {
    auto part = idx.narrow(0, i, std::min<int64_t>(500, idx.size(0) - i));
    auto [x, y] = Batch(data, part, options.device);
    parts.push_back(net->forward(x).argmax(1).eq(y).cpu());
  }
  return parts.empty() ? torch::zeros({0}, torch::kBool) : torch::cat(parts);
}

// Two networks scored on the same samples (the ranks' shards together): each one's accuracy and
// the standard error of their difference, all in percent. The error is the paired one (McNemar):
// sqrt(samples only one gets right) / samples.
struct PairedScore {
  double a = 0, b = 0, se = 0;
};
PairedScore PairedAcrossRanks(const torch::Tensor& a, const torch::Tensor& b, const RunOptions& options) {
  const auto c = SumAcrossRanks({a.sum().item<double>(), b.sum().item<double>(), (a != b).sum().item<double>(),
                                 double(a.size(0))},
                                options);
  const double n = c[3];
  if (n == 0) return {};
  return {100.0 * c[0] / n, 100.0 * c[1] / n, 100.0 * std::sqrt(c[2]) / n};
}

// Where a run stands. Every checkpoint saves it; a resumed run continues at exactly this step.
enum Phase : int {
  kWarmup = 0,
  kSearch = 1,
  kWeights = 2,  // the fine-tune, or the uniform baseline's training
  kDone = 3,
};
const char* PhaseName(int phase, bool uniform_train) {
  switch (phase) {
    case kWarmup: return "warmup";
    case kSearch: return "search";
    case kWeights: return uniform_train ? "train" : "finetune";
    default: return "evaluate";
  }
}

struct Schedule {
  int phase = kWarmup;
  int epoch = 1;               // 1-based, within the phase
  int64_t step = 1;            // the next step of the epoch to run
  bool epoch_started = false;  // the epoch's shuffle is drawn (it is part of the saved sampler)
  int64_t global = 0;          // warm-up + search weight steps so far (their cosine schedule)
  int64_t search_step = 0;
  int64_t weights_step = 0;    // steps of the fine-tune / uniform schedule so far
  int64_t job_step = 0;        // every training step of the job so far (keys progress reports)
};

// Runs at the top of every training step: stops if asked, checkpoints when one is due.
using BetweenSteps = std::function<void()>;

// Trains weights only for the rest of epoch sched->epoch, from step sched->step (warm-up,
// fine-tune, uniform baseline).
void TrainWeightsEpoch(Supernet& net, const Dataset& train, BatchSampler& sampler, torch::optim::SGD& opt,
                       double base_lr, int64_t* global_step, int64_t total_steps, std::mt19937_64* sample_rng,
                       ProgressEvent ev, Schedule* sched, const BetweenSteps& between, const RunOptions& options) {
  net->train();
  const int64_t steps = sampler.BatchesPerEpoch();
  if (!sched->epoch_started) {
    sampler.StartEpoch();
    sched->epoch_started = true;
  }
  auto t0 = Clock::now();
  const double elapsed_at_start = ev.elapsed_seconds;
  double ce_sum = 0;
  int64_t ce_n = 0, samples = 0;
  auto layers = net->searchable_layers();
  for (; sched->step <= steps; ++sched->step) {
    between();
    if (sample_rng != nullptr) {  // sampled warm-up: every branch gets trained
      for (auto l : layers) {
        std::uniform_int_distribution<int> wi(0, int(l->weight_bits().size()) - 1);
        std::uniform_int_distribution<int> ai(0, int(l->activation_bits().size()) - 1);
        l->Pin(wi(*sample_rng), ai(*sample_rng));
      }
    }
    auto idx = sampler.Next();
    auto [x, y] = Batch(train, idx, options.device);
    SetLearningRate(opt, CosineLr(base_lr, *global_step, total_steps));
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    SyncStep(net, net->WeightParameters(), options);
    opt.step();
    ++*global_step;
    ++sched->job_step;
    ce_sum += loss.item<double>();
    ++ce_n;
    samples += idx.size(0);
    const int64_t step = sched->step;
    if (options.progress && (step % options.report_every == 0 || step == steps)) {
      ev.step = step;
      ev.steps = steps;
      ev.job_step = sched->job_step;
      ev.cross_entropy = ce_sum / double(ce_n);
      ev.samples_per_second = samples / std::max(1e-9, Seconds(t0));
      ev.elapsed_seconds = elapsed_at_start + Seconds(t0);
      ev.epoch_end = step == steps;
      options.progress(ev);
      ce_sum = 0;
      ce_n = 0;
    }
  }
  sched->epoch_started = false;
  if (sample_rng != nullptr) UnpinAll(net);
}

// Trains weights only for `epochs` epochs over `indices` of `train` (SGD, cosine from `lr`, a
// sampler seeded with `sampler_seed`); no checkpoints. `event` carries the phase to report.
void TrainWeightsEpochs(Supernet& net, const JobSpec& s, const Dataset& train, const torch::Tensor& indices,
                        int batch_size, uint64_t sampler_seed, int epochs, double lr, ProgressEvent event,
                        Clock::time_point since, const RunOptions& options) {
  if (epochs <= 0) return;
  BatchSampler sampler(indices, batch_size, sampler_seed);
  auto opt = MakeSgd(net->WeightParameters(), lr, s);
  const int64_t total = sampler.BatchesPerEpoch() * epochs;
  Schedule sched;
  int64_t step = 0;
  BetweenSteps between = [&] { StopIfAsked(options); };
  event.epochs = epochs;
  for (sched.epoch = 1; sched.epoch <= epochs; ++sched.epoch, sched.step = 1) {
    event.epoch = sched.epoch;
    event.elapsed_seconds = Seconds(since);
    TrainWeightsEpoch(net, train, sampler, opt, lr, &step, total, nullptr, event, &sched, between, options);
  }
}

}  // namespace

void ConfigureTorchForTraining(const JobSpec& s) {
  const int threads = s.threads() > 0 ? int(s.threads()) : int(std::max(1u, std::thread::hardware_concurrency()));
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
    if (apply(mid) > start_ratio) hi = mid; else lo = mid;
  }
  apply(lo);
}

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

double Evaluate(Supernet& net, const Dataset& data, int batch_size) {
  const auto [correct, seen] = CountCorrect(net, data, 0, 1, batch_size);
  return seen == 0 ? 0.0 : 100.0 * double(correct) / double(seen);
}

void TrainWeightsOnly(Supernet& net, const JobSpec& s, const Dataset& train, int epochs, double lr,
                      const std::string& phase, const RunOptions& options) {
  ProgressEvent event;
  event.phase = phase;
  TrainWeightsEpochs(net, s, train, torch::arange(train.size(), torch::kLong), int(s.finetune().batch_size()),
                     s.seed() + 3, epochs, lr, event, Clock::now(), options);
}

namespace {

// Appends one LayerArchitecture per searchable layer: `wbits` / `abits`, the layer's size and, when
// `with_probs`, its architecture probabilities.
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

absl::StatusOr<bpnas::v1::QuantizedModel> RunJobUnchecked(const JobPlan& plan, const DataSplits& data,
                                                          const RunOptions& options) {
  const JobSpec& s = plan.spec;
  const auto& sp = s.search();
  torch::manual_seed(s.seed());
  ConfigureTorchForTraining(s);
  std::mt19937_64 rng(s.seed());

  Supernet net(plan.graph, QuantOptionsFor(s));
  if (!s.init_weights().empty()) BPNAS_RETURN_IF_ERROR(LoadWeights(net, s.init_weights()));
  net->to(options.device);
  // UNIFORM and FIXED train one given configuration: no search.
  const bool uniform = s.method() == bpnas::v1::UNIFORM || s.method() == bpnas::v1::FIXED;
  const bool linear = s.method() == bpnas::v1::LINEAR_PENALTY;
  const bool uniform_train = uniform && !s.finetune().from_init();  // same total epochs as a search
  const double budget = plan.has_budget ? plan.budget : 0.0;

  bpnas::v1::SearchResult result;
  result.set_method(s.method());
  result.set_metric(plan.metric == CostMetricKind::kSize ? bpnas::v1::SIZE : bpnas::v1::BITOPS);
  result.set_budget(budget);
  result.set_uniform_cost_lo(plan.min_cost);
  result.set_uniform_cost_hi(plan.max_cost);
  auto add_phase_time = [&](const std::string& phase, double seconds) {
    auto* pt = result.add_phase_times();
    pt->set_phase(phase);
    pt->set_seconds(seconds);
  };
  auto t_job = Clock::now();

  // Train/arch split (the arch part is only used by BPNAS).
  const int64_t n_train = data.train.size();
  std::vector<int64_t> perm(n_train);
  for (int64_t i = 0; i < n_train; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  auto all_idx = torch::tensor(perm);
  const int64_t n_arch = uniform ? 0 : std::max<int64_t>(1, int64_t(std::lround(n_train * s.dataset().arch_fraction())));
  // Every rank draws the same permutation (same seed) and trains on its own shard of each part.
  auto arch_idx = Shard(all_idx.narrow(0, 0, n_arch), options);
  auto weight_idx = Shard(all_idx.narrow(0, n_arch, n_train - n_arch), options);
  all_idx = Shard(all_idx, options);
  if (weight_idx.size(0) < 2 || (!uniform && arch_idx.size(0) < 1)) {
    return absl::InvalidArgumentError("dataset: too few training samples for a weight/architecture split");
  }

  auto weight_params = net->WeightParameters();
  auto arch_params = net->ArchitectureParameters();

  // Training state: the search's samplers and optimizers, and those of the weights phase (created
  // when it starts). All of it goes into checkpoints.
  Schedule sched;
  std::unique_ptr<BatchSampler> wsampler, asampler;
  std::unique_ptr<torch::optim::SGD> wopt;
  std::unique_ptr<torch::optim::Adam> aopt;
  int64_t steps_per_epoch = 0, total_weight_steps = 0;
  if (!uniform) {
    wsampler = std::make_unique<BatchSampler>(weight_idx, int(sp.batch_size()), s.seed() + 1);
    asampler = std::make_unique<BatchSampler>(arch_idx, int(sp.batch_size()), s.seed() + 2);
    steps_per_epoch = wsampler->BatchesPerEpoch();
    total_weight_steps = steps_per_epoch * (sp.warmup_epochs() + sp.epochs());
    wopt = std::make_unique<torch::optim::SGD>(MakeSgd(weight_params, sp.weight_lr(), s));
    aopt = std::make_unique<torch::optim::Adam>(arch_params,
                                                torch::optim::AdamOptions(sp.arch_lr()).betas({0.5, 0.999}));
  } else {
    sched.phase = kWeights;
  }
  // The weights phase: the uniform baseline's training, or the fine-tune of the derived network.
  // Every method that fine-tunes uses the same sampler seed, so equal configurations get equal
  // fine-tunes.
  const int weights_epochs = uniform_train ? int(sp.warmup_epochs() + sp.epochs() + s.finetune().epochs())
                                           : int(s.finetune().epochs());
  const double weights_lr = uniform_train ? sp.weight_lr() : s.finetune().lr();
  std::unique_ptr<BatchSampler> fsampler;
  std::unique_ptr<torch::optim::SGD> fopt;
  auto make_weights_phase = [&] {
    fsampler = std::make_unique<BatchSampler>(all_idx,
                                              int(uniform_train ? sp.batch_size() : s.finetune().batch_size()),
                                              s.seed() + (uniform_train ? 1 : 3));
    fopt = std::make_unique<torch::optim::SGD>(MakeSgd(weight_params, weights_lr, s));
  };
  DerivedConfig derived;
  if (uniform) {
    // UNIFORM: each layer's lists hold the one bitwidth; FIXED: layer_bits, per layer.
    const size_t n = net->searchable_layers().size();
    std::vector<int> wbits(n, int(s.uniform_bits())), abits(n, int(s.uniform_bits()));
    for (size_t i = 0; s.method() == bpnas::v1::FIXED && i < n; ++i) {
      wbits[i] = int(s.layer_bits(int(i)).weight_bits());
      abits[i] = int(s.layer_bits(int(i)).activation_bits());
    }
    derived = ConfigForBits(net, wbits, abits);
    PinAll(net, derived);
  }

  // ---- checkpoints ----
  auto save = [&]() -> std::string {
    torch::NoGradGuard guard;
    torch::serialize::OutputArchive a;
    // Network tensors are stored as CPU tensors whatever the device, so any worker can read them.
    for (const auto& p : net->named_parameters()) a.write("net." + p.key(), p.value().detach().cpu());
    for (const auto& b : net->named_buffers()) a.write("net." + b.key(), b.value().cpu(), /*is_buffer=*/true);
    auto write_optimizer = [&](const std::string& key, torch::optim::Optimizer* opt) {
      if (opt == nullptr) return;
      torch::serialize::OutputArchive o;
      opt->save(o);
      a.write(key, o);
    };
    write_optimizer("wopt", wopt.get());
    write_optimizer("aopt", aopt.get());
    write_optimizer("fopt", fopt.get());
    if (wsampler) wsampler->Save(a, "wsampler");
    if (asampler) asampler->Save(a, "asampler");
    if (fsampler) fsampler->Save(a, "fsampler");
    std::ostringstream r;
    r << rng;
    a.write("rng", c10::IValue(r.str()));
    a.write("sched", torch::tensor({int64_t(sched.phase), int64_t(sched.epoch), sched.step,
                                    int64_t(sched.epoch_started), sched.global, sched.search_step,
                                    sched.weights_step, sched.job_step},
                                   torch::kLong));
    a.write("derived.w", torch::tensor(std::vector<int64_t>(derived.weight_index.begin(), derived.weight_index.end()),
                                       torch::kLong));
    a.write("derived.a", torch::tensor(std::vector<int64_t>(derived.activation_index.begin(),
                                                            derived.activation_index.end()),
                                       torch::kLong));
    a.write("result", c10::IValue(result.SerializeAsString()));
    std::ostringstream out;
    a.save_to(out);
    return out.str();
  };
  auto restore = [&](const std::string& bytes) -> absl::Status {
    torch::NoGradGuard guard;
    torch::serialize::InputArchive a;
    std::istringstream in(bytes);
    a.load_from(in);
    for (auto& p : net->named_parameters()) {
      torch::Tensor v;
      a.read("net." + p.key(), v);
      p.value().copy_(v);
    }
    for (auto& b : net->named_buffers()) {
      torch::Tensor v;
      a.read("net." + b.key(), v, /*is_buffer=*/true);
      b.value().copy_(v);
    }
    torch::Tensor sv;
    a.read("sched", sv);
    if (sv.numel() != 8) return absl::DataLossError("checkpoint: malformed schedule");
    auto sa = sv.accessor<int64_t, 1>();
    sched.phase = int(sa[0]);
    sched.epoch = int(sa[1]);
    sched.step = sa[2];
    sched.epoch_started = sa[3] != 0;
    sched.global = sa[4];
    sched.search_step = sa[5];
    sched.weights_step = sa[6];
    sched.job_step = sa[7];
    c10::IValue r;
    a.read("rng", r);
    std::istringstream rs(r.toStringRef());
    rs >> rng;
    auto read_optimizer = [&](const std::string& key, torch::optim::Optimizer* opt) {
      if (opt == nullptr) return;
      torch::serialize::InputArchive o;
      if (a.try_read(key, o)) opt->load(o);
    };
    read_optimizer("wopt", wopt.get());
    read_optimizer("aopt", aopt.get());
    if (wsampler) wsampler->Load(a, "wsampler");
    if (asampler) asampler->Load(a, "asampler");
    if (sched.phase >= kWeights) {
      make_weights_phase();
      read_optimizer("fopt", fopt.get());
      fsampler->Load(a, "fsampler");
      torch::Tensor dw, da;
      a.read("derived.w", dw);
      a.read("derived.a", da);
      derived = DerivedConfig();
      auto layers = net->searchable_layers();
      if (dw.numel() != int64_t(layers.size()) || da.numel() != int64_t(layers.size())) {
        return absl::DataLossError("checkpoint: derived configuration does not fit the model");
      }
      for (size_t i = 0; i < layers.size(); ++i) {
        derived.weight_index.push_back(int(dw[i].item<int64_t>()));
        derived.activation_index.push_back(int(da[i].item<int64_t>()));
        derived.weight_bits.push_back(layers[i]->weight_bits()[derived.weight_index[i]]);
        derived.activation_bits.push_back(layers[i]->activation_bits()[derived.activation_index[i]]);
      }
      PinAll(net, derived);
    }
    c10::IValue res;
    a.read("result", res);
    if (!result.ParseFromString(res.toStringRef())) return absl::DataLossError("checkpoint: malformed result");
    return absl::OkStatus();
  };
  const bool resumed = !options.resume_from.empty();
  if (resumed) {
    try {
      BPNAS_RETURN_IF_ERROR(restore(options.resume_from));
    } catch (const c10::Error& e) {
      return absl::DataLossError(absl::StrCat("checkpoint does not fit this job: ", e.what_without_backtrace()));
    }
  }
  BroadcastNetwork(net, options);

  auto last_checkpoint = Clock::now();
  int64_t last_checkpoint_step = sched.job_step;
  BetweenSteps between = [&] {
    StopIfAsked(options);
    if (!options.checkpoint) return;
    const bool by_time = s.checkpoint_every_seconds() > 0 && Seconds(last_checkpoint) >= s.checkpoint_every_seconds();
    const bool by_steps = s.checkpoint_every_steps() > 0 &&
                          sched.job_step - last_checkpoint_step >= int64_t(s.checkpoint_every_steps());
    if (!by_time && !by_steps) return;
    last_checkpoint = Clock::now();
    last_checkpoint_step = sched.job_step;
    options.checkpoint(PhaseName(sched.phase, uniform_train), save(), sched.job_step);
  };

  // ---- warm-up: weights only, sampled bit configurations ----
  if (sched.phase == kWarmup) {
    if (!resumed) SetFeasibleStart(net, plan.cost_model, budget, sp.start_ratio());
    auto t0 = Clock::now();
    SetRequiresGrad(arch_params, false);
    for (; sched.epoch <= int(sp.warmup_epochs()); ++sched.epoch, sched.step = 1) {
      ProgressEvent ev;
      ev.phase = "warmup";
      ev.epoch = sched.epoch;
      ev.epochs = int(sp.warmup_epochs());
      {
        torch::NoGradGuard g;
        ev.expected_ratio = ExpectedCostRatio(net, plan.cost_model, budget).item<double>();
      }
      ev.argmax_ratio = ArgmaxRatio(net, plan.cost_model, budget);
      ev.feasible = ev.expected_ratio <= 1.0;
      ev.elapsed_seconds = Seconds(t_job);
      TrainWeightsEpoch(net, data.train, *wsampler, *wopt, sp.weight_lr(), &sched.global, total_weight_steps,
                        sp.sampled_warmup() ? &rng : nullptr, ev, &sched, between, options);
    }
    add_phase_time("warmup", Seconds(t0));
    sched.phase = kSearch;
    sched.epoch = 1;
    sched.step = 1;
  }

  // ---- search: alternate weight and architecture steps ----
  if (sched.phase == kSearch) {
    auto t0 = Clock::now();
    const int64_t search_steps = steps_per_epoch * sp.epochs();
    for (; sched.epoch <= int(sp.epochs()); ++sched.epoch, sched.step = 1) {
      net->train();
      if (!sched.epoch_started) {
        wsampler->StartEpoch();
        sched.epoch_started = true;
      }
      auto te = Clock::now();
      StepLosses acc;
      int64_t acc_n = 0, samples = 0;
      for (; sched.step <= steps_per_epoch; ++sched.step, ++sched.search_step) {
        between();
        const int64_t step = sched.step;
        const double progress = double(sched.search_step) / double(std::max<int64_t>(1, search_steps - 1));
        const double t = BarrierT(progress, sp.barrier_t_start(), sp.barrier_t_end());
        const double lambda = Prob1Lambda(progress, sp.prob1_start(), sp.prob1_lambda());

        // Weight step.
        SetRequiresGrad(arch_params, false);
        SetRequiresGrad(weight_params, true);
        auto widx = wsampler->Next();
        SetLearningRate(*wopt, CosineLr(sp.weight_lr(), sched.global, total_weight_steps));
        wopt->zero_grad();
        auto [wx, wy] = Batch(data.train, widx, options.device);
        auto wloss = torch::nn::functional::cross_entropy(net->forward(wx), wy);
        wloss.backward();
        SyncStep(net, weight_params, options);
        wopt->step();
        ++sched.global;

        // Architecture step.
        SetRequiresGrad(weight_params, false);
        SetRequiresGrad(arch_params, true);
        auto aidx = asampler->Next();
        aopt->zero_grad();
        auto [ax, ay] = Batch(data.train, aidx, options.device);
        auto ce = torch::nn::functional::cross_entropy(net->forward(ax), ay);
        auto ratio = ExpectedCostRatio(net, plan.cost_model, budget);
        torch::Tensor barrier;
        if (linear) {
          // The EdMIPS-style baseline: a fixed linear price on the expected cost, nothing else.
          barrier = sp.linear_gamma() * ratio;
        } else {
          barrier = sp.barrier_mu() * BudgetBarrier(ratio, t, sp.lower_band(), sp.budget_target());
        }
        auto prob1 = Prob1RegularizerStacked(net->StackedWeightProbs(), net->StackedActivationProbs());
        auto aloss = linear ? ce + barrier : ce + barrier + lambda * prob1;
        aloss.backward();
        SyncStep(net, arch_params, options);
        aopt->step();
        ++sched.job_step;

        acc.ce += wloss.item<double>();
        acc.barrier += barrier.item<double>();
        acc.prob1 += prob1.item<double>();
        acc.ratio = ratio.item<double>();
        ++acc_n;
        samples += widx.size(0) + aidx.size(0);
        if (options.progress && (step % options.report_every == 0 || step == steps_per_epoch)) {
          ProgressEvent ev;
          ev.phase = "search";
          ev.epoch = sched.epoch;
          ev.epochs = int(sp.epochs());
          ev.step = step;
          ev.steps = steps_per_epoch;
          ev.job_step = sched.job_step;
          ev.cross_entropy = acc.ce / double(acc_n);
          ev.barrier = acc.barrier / double(acc_n);
          ev.prob1 = acc.prob1 / double(acc_n);
          ev.prob1_lambda = lambda;
          ev.barrier_t = t;
          ev.expected_ratio = acc.ratio;
          ev.argmax_ratio = ArgmaxRatio(net, plan.cost_model, budget);
          ev.feasible = acc.ratio <= 1.0;
          ev.samples_per_second = samples / std::max(1e-9, Seconds(te));
          ev.elapsed_seconds = Seconds(t_job);
          ev.epoch_end = step == steps_per_epoch;
          options.progress(ev);
          acc = StepLosses();
          acc_n = 0;
        }
      }
      sched.epoch_started = false;
    }
    SetRequiresGrad(weight_params, true);
    SetRequiresGrad(arch_params, false);
    add_phase_time("search", Seconds(t0));

    // Derive.
    {
      torch::NoGradGuard g;
      result.set_expected_cost_at_derive(ExpectedCostRatio(net, plan.cost_model, budget).item<double>() * budget);
      result.set_prob1_at_derive(
          Prob1RegularizerStacked(net->StackedWeightProbs(), net->StackedActivationProbs()).item<double>());
    }
    derived = DeriveArgmax(net);
    result.set_argmax_cost_at_derive(plan.cost_model.Exact(derived.weight_bits, derived.activation_bits));
    // The linear-penalty baseline is reported as it comes out: no repair.
    std::string note;
    if (!linear) {
      note = RepairToBudget(net, plan.cost_model, budget, &derived);
      if (note.empty() && sp.lower_band() > 0) {
        note = RaiseToBand(net, plan.cost_model, budget, sp.lower_band(), &derived);
        if (!note.empty()) note = "raised to the band: " + note;
      }
    }
    result.set_repaired(!note.empty());
    result.set_repair_note(note);
    if (!linear && sp.uniform_check()) {
      // The best fitting uniform network against the derived one, each fine-tuned from the
      // fine-tune's starting weights on the weight split and scored on the architecture split.
      // The supernet's own weights cannot rank them: trained for the derived network, they prefer
      // it even where uniform is better after the fine-tune (docs/results.md).
      auto layers = net->searchable_layers();
      const auto& wb = layers[0]->weight_bits();
      const auto& ab = layers[0]->activation_bits();
      int ub = 0;
      for (int b : wb) {
        if (std::find(ab.begin(), ab.end(), b) != ab.end() && plan.cost_model.Uniform(b) <= budget) ub = b;
      }
      const std::vector<int> all_ub(layers.size(), ub);
      DerivedConfig u = ub > 0 ? ConfigForBits(net, all_ub, all_ub) : DerivedConfig();
      // Between grid points the uniform network leaves budget unused: raised to the band the way
      // the derived network is, it keeps at least uniform's bits in every layer and uses the budget.
      const std::string raised =
          ub > 0 && sp.lower_band() > 0 ? RaiseToBand(net, plan.cost_model, budget, sp.lower_band(), &u) : "";
      if (ub > 0 && (u.weight_bits != derived.weight_bits || u.activation_bits != derived.activation_bits)) {
        auto t0 = Clock::now();
        std::vector<torch::Tensor> state, saved;
        {
          torch::NoGradGuard g;
          for (auto& p : net->parameters()) state.push_back(p);
          for (auto& b : net->buffers()) state.push_back(b);
          for (auto& t : state) saved.push_back(t.clone());
        }
        auto restore_state = [&] {
          torch::NoGradGuard g;
          for (size_t i = 0; i < state.size(); ++i) state[i].copy_(saved[i]);
        };
        RunOptions quiet = options;  // no progress events: their job steps would run backwards
        quiet.progress = nullptr;
        auto score = [&](const DerivedConfig& c) -> absl::StatusOr<torch::Tensor> {
          restore_state();
          if (s.finetune().from_init()) BPNAS_RETURN_IF_ERROR(LoadWeights(net, s.init_weights()));
          PinAll(net, c);
          SetRequiresGrad(weight_params, true);
          ProgressEvent ev;
          ev.phase = "check";
          // As long as the fine-tune (its epochs, over the weight split): a shorter pass favours the
          // network that recovers fastest, which is not the one that ends best (docs/results.md).
          TrainWeightsEpochs(net, s, data.train, weight_idx, int(s.finetune().batch_size()), s.seed() + 4,
                             int(s.finetune().epochs()), s.finetune().lr(), ev, Clock::now(), quiet);
          return CorrectOn(net, data.train, arch_idx, options);
        };
        BPNAS_ASSIGN_OR_RETURN(const torch::Tensor correct_derived, score(derived));
        BPNAS_ASSIGN_OR_RETURN(const torch::Tensor correct_uniform, score(u));
        restore_state();
        UnpinAll(net);
        const PairedScore check = PairedAcrossRanks(correct_derived, correct_uniform, options);
        result.set_check_uniform_bits(uint32_t(ub));
        result.set_check_derived_accuracy(check.a);
        result.set_check_uniform_accuracy(check.b);
        result.set_check_margin(check.se);
        result.set_check_train_samples(uint64_t(n_train - n_arch) * s.finetune().epochs());
        // The derived network must lead by more than the standard error of the paired difference:
        // a lead within the check's noise is no evidence, and then the simpler network is returned.
        if (check.a - check.b <= check.se) {
          AddLayers(net, plan.cost_model, derived.weight_bits, derived.activation_bits, /*with_probs=*/true,
                    result.mutable_check_derived_layers());
          result.set_check_derived_cost(plan.cost_model.Exact(derived.weight_bits, derived.activation_bits));
          derived = u;
          result.set_returned_uniform(true);
          result.set_repaired(!raised.empty());
          result.set_repair_note(raised.empty() ? "" : absl::StrCat("uniform ", ub, "-bit raised to the band: ", raised));
        }
        add_phase_time("check", Seconds(t0));
      }
    }
    PinAll(net, derived);
    sched.phase = kWeights;
    sched.epoch = 1;
    sched.step = 1;
  }

  // ---- weights phase: fine-tune the fixed network (or train the uniform baseline) ----
  if (sched.phase == kWeights) {
    auto t0 = Clock::now();
    if (fsampler == nullptr) {  // entering it now (not resumed inside it)
      if (s.finetune().from_init()) BPNAS_RETURN_IF_ERROR(LoadWeights(net, s.init_weights()));
      make_weights_phase();
    }
    ProgressEvent event;
    event.phase = PhaseName(kWeights, uniform_train);
    if (plan.has_budget) {
      event.expected_ratio = event.argmax_ratio =
          plan.cost_model.Exact(derived.weight_bits, derived.activation_bits) / budget;
      event.feasible = event.expected_ratio <= 1.0;
    }
    event.epochs = weights_epochs;
    const int64_t total = fsampler->BatchesPerEpoch() * weights_epochs;
    for (; sched.epoch <= weights_epochs; ++sched.epoch, sched.step = 1) {
      event.epoch = sched.epoch;
      event.elapsed_seconds = Seconds(t_job);
      TrainWeightsEpoch(net, data.train, *fsampler, *fopt, weights_lr, &sched.weights_step, total, nullptr, event,
                        &sched, between, options);
    }
    add_phase_time(event.phase, Seconds(t0));
    sched.phase = kDone;
  }

  // Evaluate.
  auto t0 = Clock::now();
  const double accuracy = EvaluateAcrossRanks(net, data.test, options);
  add_phase_time("evaluate", Seconds(t0));
  result.set_test_accuracy(accuracy);

  std::vector<int> wbits, abits;
  for (auto l : net->searchable_layers()) {
    wbits.push_back(l->weight_bits()[l->pinned_weight_index()]);
    abits.push_back(l->activation_bits()[l->pinned_activation_index()]);
  }
  result.set_cost(plan.cost_model.Exact(wbits, abits));
  result.set_within_budget(!plan.has_budget || result.cost() <= budget);
  AddLayers(net, plan.cost_model, wbits, abits, /*with_probs=*/!uniform, result.mutable_layers());
  if (options.progress) {
    ProgressEvent ev;
    ev.phase = "evaluate";
    ev.epoch = ev.epochs = 1;
    ev.job_step = sched.job_step + 1;
    ev.elapsed_seconds = Seconds(t_job);
    ev.expected_ratio = ev.argmax_ratio = plan.has_budget ? result.cost() / budget : 0;
    ev.feasible = result.within_budget();
    ev.epoch_end = true;
    options.progress(ev);
  }
  net->to(torch::kCPU);  // export reads the tensors' memory
  return ExportQuantizedModel(net, plan, result);
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
