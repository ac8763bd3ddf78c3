#include "worker/engine/trainer.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include <torch/nn/functional.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/engine/data_parallel.h"
#include "worker/engine/search.h"
#include "worker/engine/weights.h"

namespace bpnas {

using bpnas::v1::JobSpec;
using bpnas::v1::TrainingState;

// The format this build writes and reads (TrainingState.format_version).
constexpr uint32_t kTrainingStateFormat = 1;

// ---- BatchSampler ----

BatchSampler::BatchSampler(torch::Tensor indices, int batch_size, uint64_t seed)
    : indices_(std::move(indices)), batch_size_(batch_size), rng_(seed) {}

int64_t BatchSampler::BatchesPerEpoch() const { return std::max<int64_t>(1, indices_.size(0) / batch_size_); }

void BatchSampler::StartEpoch() {
  std::vector<int64_t> perm(indices_.size(0));
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = int64_t(i);
  std::shuffle(perm.begin(), perm.end(), rng_);
  perm_ = torch::tensor(perm, torch::kLong);
  order_ = indices_.index_select(0, perm_);
  cursor_ = 0;
}

torch::Tensor BatchSampler::Next() {
  if (!order_.defined() || cursor_ + batch_size_ > order_.size(0)) {
    if (order_.defined() && cursor_ == 0 && order_.size(0) < batch_size_) return order_;
    StartEpoch();
    if (order_.size(0) < batch_size_) return order_;
  }
  auto b = order_.narrow(0, cursor_, batch_size_);
  cursor_ += batch_size_;
  return b;
}

void BatchSampler::Save(bpnas::v1::SamplerState* state) const {
  std::ostringstream rng;
  rng << rng_;
  state->set_rng(rng.str());
  state->set_cursor(cursor_);
  state->clear_permutation();
  if (perm_.defined()) {
    const auto p = perm_.contiguous();
    state->mutable_permutation()->Add(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
  }
}

absl::Status BatchSampler::Restore(const bpnas::v1::SamplerState& state) {
  const int64_t n = indices_.size(0);
  if (state.permutation_size() != 0 && state.permutation_size() != n) {
    return absl::DataLossError(absl::StrCat("checkpoint: a sampler's permutation has ",
                                            state.permutation_size(), " positions, this shard ", n));
  }
  if (state.cursor() < 0 || state.cursor() > n) {
    return absl::DataLossError(
        absl::StrCat("checkpoint: a sampler's cursor ", state.cursor(), " is outside 0..", n));
  }
  for (int64_t p : state.permutation()) {
    if (p < 0 || p >= n) return absl::DataLossError("checkpoint: a sampler's permutation is out of range");
  }
  std::istringstream in(state.rng());
  in >> rng_;
  if (in.fail()) return absl::DataLossError("checkpoint: a sampler's RNG state is malformed");
  cursor_ = state.cursor();
  if (state.permutation_size() == 0) {
    perm_ = torch::Tensor();
    order_ = torch::Tensor();
  } else {
    perm_ = torch::tensor(std::vector<int64_t>(state.permutation().begin(), state.permutation().end()),
                          torch::kLong);
    order_ = indices_.index_select(0, perm_);
  }
  return absl::OkStatus();
}

// ---- optimizer helpers ----

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

void StopIfAsked(const RunOptions& options) {
  if (options.should_stop && options.should_stop()) throw StopRequested{};
}

const char* PhaseName(int phase, bool uniform_train) {
  switch (phase) {
    case kWarmup:
      return "warmup";
    case kSearch:
      return "search";
    case kWeights:
      return uniform_train ? "train" : "finetune";
    default:
      return "evaluate";
  }
}

// ---- weight training ----

void TrainWeightsEpoch(Supernet& net, const Dataset& train, BatchSampler& sampler, torch::optim::SGD& opt,
                       double base_lr, int64_t* global_step, int64_t total_steps, std::mt19937_64* sample_rng,
                       ProgressEvent ev, Schedule* sched, const BetweenSteps& between,
                       const RunOptions& options) {
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
    // Folded batch norms train on batch statistics, then on frozen ones for the last
    // kFrozenBatchNormShare of the phase: the network the artifact holds.
    if (net->batch_norm_folding()) {
      net->SetBatchNormFrozen(double(*global_step) >= (1.0 - kFrozenBatchNormShare) * double(total_steps));
    }
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

// ---- Trainer ----

Trainer::Trainer(const JobPlan& p, const DataSplits& d, const RunOptions& o)
    : plan(p),
      spec(p.spec),
      data(d),
      options(o),
      uniform(p.spec.method() == bpnas::v1::UNIFORM || p.spec.method() == bpnas::v1::FIXED),
      linear(p.spec.method() == bpnas::v1::LINEAR_PENALTY),
      uniform_train(uniform && !p.spec.finetune().from_init()),
      budget(p.has_budget ? p.budget : 0.0),
      net(nullptr) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const JobPlan& plan, const DataSplits& data,
                                                         const RunOptions& options) {
  std::unique_ptr<Trainer> t(new Trainer(plan, data, options));
  const JobSpec& s = plan.spec;
  const auto& sp = s.search();
  torch::manual_seed(s.seed());
  ConfigureTorchForTraining(s);
  t->rng.seed(s.seed());

  t->net = Supernet(plan.graph, QuantOptionsFor(s));
  if (!s.init_weights().empty()) BPNAS_RETURN_IF_ERROR(LoadWeights(t->net, s.init_weights()));
  t->net->to(options.device);

  auto& result = t->result;
  result.set_method(s.method());
  result.set_metric(plan.metric == CostMetricKind::kSize ? bpnas::v1::SIZE : bpnas::v1::BITOPS);
  result.set_budget(t->budget);
  result.set_uniform_cost_lo(plan.min_cost);
  result.set_uniform_cost_hi(plan.max_cost);
  t->started = Clock::now();

  // Train/arch split (the arch part is only used by the search methods). Every rank draws the
  // same permutation (same seed) and trains on its own shard of each part.
  t->n_train = data.train.size();
  std::vector<int64_t> perm(t->n_train);
  for (int64_t i = 0; i < t->n_train; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), t->rng);
  auto all_idx = torch::tensor(perm);
  t->n_arch =
      t->uniform ? 0 : std::max<int64_t>(1, int64_t(std::lround(t->n_train * s.dataset().arch_fraction())));
  t->arch_idx = Shard(all_idx.narrow(0, 0, t->n_arch), options);
  t->weight_idx = Shard(all_idx.narrow(0, t->n_arch, t->n_train - t->n_arch), options);
  t->all_idx = Shard(all_idx, options);
  if (t->weight_idx.size(0) < 2 || (!t->uniform && t->arch_idx.size(0) < 1)) {
    return absl::InvalidArgumentError("dataset: too few training samples for a weight/architecture split");
  }

  t->weight_params = t->net->WeightParameters();
  t->arch_params = t->net->ArchitectureParameters();
  if (!t->uniform) {
    t->wsampler = std::make_unique<BatchSampler>(t->weight_idx, int(sp.batch_size()), s.seed() + 1);
    t->asampler = std::make_unique<BatchSampler>(t->arch_idx, int(sp.batch_size()), s.seed() + 2);
    t->steps_per_epoch = t->wsampler->BatchesPerEpoch();
    t->total_weight_steps = t->steps_per_epoch * (sp.warmup_epochs() + sp.epochs());
    t->wopt = std::make_unique<torch::optim::SGD>(MakeSgd(t->weight_params, sp.weight_lr(), s));
    t->aopt = std::make_unique<torch::optim::Adam>(
        t->arch_params, torch::optim::AdamOptions(sp.arch_lr()).betas({0.5, 0.999}));
  } else {
    t->sched.phase = kWeights;
  }
  // Every method that fine-tunes uses the same sampler seed, so equal configurations get equal
  // fine-tunes.
  t->weights_epochs = t->uniform_train ? int(sp.warmup_epochs() + sp.epochs() + s.finetune().epochs())
                                       : int(s.finetune().epochs());
  t->weights_lr = t->uniform_train ? sp.weight_lr() : s.finetune().lr();
  if (t->uniform) {
    // UNIFORM: each layer's lists hold the one bitwidth; FIXED: layer_bits, per layer.
    const size_t n = t->net->searchable_layers().size();
    std::vector<int> wbits(n, int(s.uniform_bits())), abits(n, int(s.uniform_bits()));
    for (size_t i = 0; s.method() == bpnas::v1::FIXED && i < n; ++i) {
      wbits[i] = int(s.layer_bits(int(i)).weight_bits());
      abits[i] = int(s.layer_bits(int(i)).activation_bits());
    }
    t->derived = ConfigForBits(t->net, wbits, abits);
    PinAll(t->net, t->derived);
  }

  t->resumed = !options.resume_from.empty();
  if (t->resumed) {
    try {
      BPNAS_RETURN_IF_ERROR(t->Restore(options.resume_from));
    } catch (const c10::Error& e) {
      return absl::DataLossError(
          absl::StrCat("checkpoint does not fit this job: ", e.what_without_backtrace()));
    }
  }
  BroadcastNetwork(t->net, options);
  t->last_checkpoint_ = Clock::now();
  t->last_checkpoint_step_ = t->sched.job_step;
  return t;
}

void Trainer::StartWeightsPhase() {
  net->SetBatchNormFolding(true);
  const auto& sp = spec.search();
  fsampler = std::make_unique<BatchSampler>(
      all_idx, int(uniform_train ? sp.batch_size() : spec.finetune().batch_size()),
      spec.seed() + (uniform_train ? 1 : 3));
  fopt = std::make_unique<torch::optim::SGD>(MakeSgd(weight_params, weights_lr, spec));
}

void Trainer::BetweenSteps() {
  StopIfAsked(options);
  if (!options.checkpoint) return;
  const bool by_time =
      spec.checkpoint_every_seconds() > 0 && Seconds(last_checkpoint_) >= spec.checkpoint_every_seconds();
  const bool by_steps = spec.checkpoint_every_steps() > 0 &&
                        sched.job_step - last_checkpoint_step_ >= int64_t(spec.checkpoint_every_steps());
  if (!by_time && !by_steps) return;
  last_checkpoint_ = Clock::now();
  last_checkpoint_step_ = sched.job_step;
  options.checkpoint(PhaseName(sched.phase, uniform_train), Save(), sched.job_step);
}

void Trainer::AddPhaseTime(const std::string& phase, double seconds) {
  auto* pt = result.add_phase_times();
  pt->set_phase(phase);
  pt->set_seconds(seconds);
}

std::string Trainer::Save() const {
  torch::NoGradGuard guard;
  TrainingState state;
  state.set_format_version(kTrainingStateFormat);
  state.set_phase(TrainingState::Phase(sched.phase));
  state.set_epoch(sched.epoch);
  state.set_step(sched.step);
  state.set_epoch_started(sched.epoch_started);
  state.set_global_step(sched.global);
  state.set_search_step(sched.search_step);
  state.set_weights_step(sched.weights_step);
  state.set_job_step(sched.job_step);
  std::ostringstream r;
  r << rng;
  state.set_rng(r.str());
  if (wsampler) wsampler->Save(state.mutable_weight_sampler());
  if (asampler) asampler->Save(state.mutable_architecture_sampler());
  if (fsampler) fsampler->Save(state.mutable_weights_phase_sampler());
  state.mutable_derived_weight_index()->Add(derived.weight_index.begin(), derived.weight_index.end());
  state.mutable_derived_activation_index()->Add(derived.activation_index.begin(),
                                                derived.activation_index.end());
  *state.mutable_result() = result;

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
  std::ostringstream out;
  a.save_to(out);
  state.set_tensors(out.str());
  return state.SerializeAsString();
}

absl::Status Trainer::Restore(const std::string& bytes) {
  torch::NoGradGuard guard;
  TrainingState state;
  if (!state.ParseFromString(bytes) || state.format_version() != kTrainingStateFormat) {
    return absl::DataLossError(absl::StrCat("checkpoint: not a training state of format ",
                                            kTrainingStateFormat, " (written by another version of bpnas?)"));
  }
  if (state.phase() < kWarmup || state.phase() > kDone || (uniform && state.phase() < kWeights)) {
    return absl::DataLossError(
        absl::StrCat("checkpoint: phase ", int(state.phase()), " does not fit this job"));
  }
  torch::serialize::InputArchive a;
  std::istringstream in(state.tensors());
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
  sched.phase = int(state.phase());
  sched.epoch = state.epoch();
  sched.step = state.step();
  sched.epoch_started = state.epoch_started();
  sched.global = state.global_step();
  sched.search_step = state.search_step();
  sched.weights_step = state.weights_step();
  sched.job_step = state.job_step();
  std::istringstream rs(state.rng());
  rs >> rng;
  if (rs.fail()) return absl::DataLossError("checkpoint: the run's RNG state is malformed");
  auto read_optimizer = [&](const std::string& key, torch::optim::Optimizer* opt) {
    if (opt == nullptr) return;
    torch::serialize::InputArchive o;
    if (a.try_read(key, o)) opt->load(o);
  };
  read_optimizer("wopt", wopt.get());
  read_optimizer("aopt", aopt.get());
  if (wsampler) BPNAS_RETURN_IF_ERROR(wsampler->Restore(state.weight_sampler()));
  if (asampler) BPNAS_RETURN_IF_ERROR(asampler->Restore(state.architecture_sampler()));
  if (sched.phase >= kWeights) {
    StartWeightsPhase();
    read_optimizer("fopt", fopt.get());
    BPNAS_RETURN_IF_ERROR(fsampler->Restore(state.weights_phase_sampler()));
    const auto layers = net->searchable_layers();
    if (state.derived_weight_index_size() != int(layers.size()) ||
        state.derived_activation_index_size() != int(layers.size())) {
      return absl::DataLossError("checkpoint: derived configuration does not fit the model");
    }
    derived = DerivedConfig();
    for (size_t i = 0; i < layers.size(); ++i) {
      const int wi = state.derived_weight_index(int(i)), ai = state.derived_activation_index(int(i));
      if (wi < 0 || wi >= int(layers[i]->weight_bits().size()) || ai < 0 ||
          ai >= int(layers[i]->activation_bits().size())) {
        return absl::DataLossError("checkpoint: derived configuration does not fit the model");
      }
      derived.weight_index.push_back(wi);
      derived.activation_index.push_back(ai);
      derived.weight_bits.push_back(layers[i]->weight_bits()[wi]);
      derived.activation_bits.push_back(layers[i]->activation_bits()[ai]);
    }
    PinAll(net, derived);
  }
  // The position must lie inside the schedule: a checkpoint is uploaded from outside, and a step
  // far out of range would run the loops for as long as it says.
  const auto& sp = spec.search();
  const int64_t phase_epochs = sched.phase == kWarmup   ? sp.warmup_epochs()
                               : sched.phase == kSearch ? sp.epochs()
                                                        : weights_epochs;
  const BatchSampler* sampler = sched.phase >= kWeights ? fsampler.get() : wsampler.get();
  const int64_t steps = sampler != nullptr ? sampler->BatchesPerEpoch() : 1;
  if (sched.phase != kDone &&
      (sched.epoch < 1 || sched.epoch > phase_epochs + 1 || sched.step < 1 || sched.step > steps + 1)) {
    return absl::DataLossError(absl::StrCat("checkpoint: epoch ", sched.epoch, " step ", sched.step,
                                            " is outside the schedule of phase ",
                                            PhaseName(sched.phase, uniform_train)));
  }
  if (sched.global < 0 || sched.search_step < 0 || sched.weights_step < 0 || sched.job_step < 0) {
    return absl::DataLossError("checkpoint: a negative step count");
  }
  result = state.result();
  return absl::OkStatus();
}

}  // namespace bpnas
