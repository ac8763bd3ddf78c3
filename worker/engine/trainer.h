// The state of one run of the engine and the training steps every phase is built from.
// Engine-internal: RunJob (search.h) is the public entry point.
//
//   Trainer::Create(plan, data, options)     network, splits, samplers, optimizers; a resumed run
//                                            restores its checkpoint (TrainingState) here
//   RunWarmup / RunSearch / RunFinetune      (search.cc) advance trainer.sched, step by step
//   DeriveAndCheck                           (derive.cc) between the search and the fine-tune
//
// Every training step starts with BetweenSteps(): it stops the run when RunOptions::should_stop
// asks (throws StopRequested) and takes a checkpoint when one is due. A checkpoint is Save()'s
// bytes, a serialized bpnas.v1.TrainingState; Restore() puts a run back at exactly that step.
#ifndef BPNAS_WORKER_ENGINE_TRAINER_H_
#define BPNAS_WORKER_ENGINE_TRAINER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bpnas/v1/model.pb.h"
#include "bpnas/v1/training_state.pb.h"
#include "spec/progress.h"
#include "spec/spec.h"
#include "worker/engine/data.h"
#include "worker/engine/derive.h"
#include "worker/engine/run_options.h"
#include "worker/engine/supernet.h"

namespace bpnas {

using Clock = std::chrono::steady_clock;
inline double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Fixed-size batches over a shuffled index set; a new permutation each epoch.
class BatchSampler {
 public:
  BatchSampler(torch::Tensor indices, int batch_size, uint64_t seed);

  int64_t BatchesPerEpoch() const;
  void StartEpoch();
  // The next batch's sample indices; wraps into a new epoch when exhausted.
  torch::Tensor Next();

  // The position (shuffle RNG, this epoch's permutation, cursor). The permutation is of positions
  // in `indices`, not of samples, so it is the same on every rank (same seed, equal shard sizes):
  // rank 0's checkpoint restores every rank's position in its own shard.
  void Save(bpnas::v1::SamplerState* state) const;
  // DATA_LOSS if the state does not fit this sampler's index set.
  absl::Status Restore(const bpnas::v1::SamplerState& state);

 private:
  torch::Tensor indices_;
  int batch_size_;
  std::mt19937_64 rng_;
  torch::Tensor perm_;
  torch::Tensor order_;
  int64_t cursor_ = 0;
};

void SetRequiresGrad(const std::vector<torch::Tensor>& params, bool on);
void SetLearningRate(torch::optim::SGD& opt, double lr);
// Cosine decay from `base` to 0 over `total` steps.
double CosineLr(double base, int64_t step, int64_t total);
// SGD with the spec's momentum and weight decay (Nesterov).
torch::optim::SGD MakeSgd(const std::vector<torch::Tensor>& params, double lr,
                          const bpnas::v1::JobSpec& spec);

// Thrown between training steps when RunOptions::should_stop says so; RunJob turns it into
// CANCELLED.
struct StopRequested {};
void StopIfAsked(const RunOptions& options);

// Where a run stands. Every checkpoint saves it; a resumed run continues at exactly this step.
enum Phase : int {
  kWarmup = bpnas::v1::TrainingState::WARMUP,
  kSearch = bpnas::v1::TrainingState::SEARCH,
  kWeights = bpnas::v1::TrainingState::WEIGHTS,  // the fine-tune, or the uniform baseline's training
  kDone = bpnas::v1::TrainingState::DONE,
};
const char* PhaseName(int phase, bool uniform_train);

struct Schedule {
  int phase = kWarmup;
  int epoch = 1;               // 1-based, within the phase
  int64_t step = 1;            // the next step of the epoch to run
  bool epoch_started = false;  // the epoch's shuffle is drawn (it is part of the saved sampler)
  int64_t global = 0;          // warm-up + search weight steps so far (their cosine schedule)
  int64_t search_step = 0;
  int64_t weights_step = 0;  // steps of the fine-tune / uniform schedule so far
  int64_t job_step = 0;      // every training step of the job so far (keys progress reports)
};

// Runs at the top of every training step: stops if asked, checkpoints when one is due.
using BetweenSteps = std::function<void()>;

// The share of a weights phase's steps (at its end) that train with frozen batch-norm statistics
// when batch norm is folded (SupernetImpl::SetBatchNormFolding). A common choice, not yet measured
// on a validation split.
inline constexpr double kFrozenBatchNormShare = 0.2;

// Trains weights only for the rest of epoch sched->epoch, from step sched->step (warm-up,
// fine-tune, uniform baseline). With `sample_rng`, every step first pins each layer to a random
// bitwidth pair (the sampled warm-up) and the layers are unpinned at the end.
void TrainWeightsEpoch(Supernet& net, const Dataset& train, BatchSampler& sampler, torch::optim::SGD& opt,
                       double base_lr, int64_t* global_step, int64_t total_steps, std::mt19937_64* sample_rng,
                       ProgressEvent ev, Schedule* sched, const BetweenSteps& between,
                       const RunOptions& options);

// Trains weights only for `epochs` epochs over `indices` of `train` (SGD, cosine from `lr`, a
// sampler seeded with `sampler_seed`); no checkpoints. `event` carries the phase to report.
void TrainWeightsEpochs(Supernet& net, const bpnas::v1::JobSpec& spec, const Dataset& train,
                        const torch::Tensor& indices, int batch_size, uint64_t sampler_seed, int epochs,
                        double lr, ProgressEvent event, Clock::time_point since, const RunOptions& options);

// One run's state: the network, its splits, samplers and optimizers, where the schedule stands
// and the result so far. A plain aggregate that the phases (search.cc, derive.cc) read and
// advance; not thread-safe.
class Trainer {
 public:
  // Seeds LibTorch and the run's RNG from the spec, builds the network (from init_weights when
  // set) on options.device, draws the weight/architecture split and this rank's shards, and
  // restores options.resume_from when set. INVALID_ARGUMENT when the training set is too small
  // to split; DATA_LOSS when the checkpoint does not fit the job.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const JobPlan& plan, const DataSplits& data,
                                                         const RunOptions& options);

  // Creates the weights phase's sampler and optimizer (on entering it, or on restoring into it).
  void StartWeightsPhase();
  // Stops if asked; takes a checkpoint through options.checkpoint when one is due.
  void BetweenSteps();
  void AddPhaseTime(const std::string& phase, double seconds);

  // The whole training state as a serialized bpnas.v1.TrainingState.
  std::string Save() const;
  // Puts the run at the state `bytes` holds. DATA_LOSS if it is not a TrainingState of this
  // format or does not fit the job.
  absl::Status Restore(const std::string& bytes);

  const JobPlan& plan;
  const bpnas::v1::JobSpec& spec;
  const DataSplits& data;
  const RunOptions& options;
  // UNIFORM and FIXED train one given configuration: no search.
  const bool uniform;
  const bool linear;         // LINEAR_PENALTY: the EdMIPS-style baseline
  const bool uniform_train;  // uniform without finetune.from_init: the same total epochs as a search
  const double budget;       // 0 when the plan has none

  Supernet net;
  std::mt19937_64 rng;
  std::vector<torch::Tensor> weight_params, arch_params;
  // This rank's shards of the training set: all of it, the weight part, the architecture part.
  torch::Tensor all_idx, weight_idx, arch_idx;
  int64_t n_train = 0, n_arch = 0;  // sizes before sharding

  Schedule sched;
  std::unique_ptr<BatchSampler> wsampler, asampler;  // search phases (BPNAS, LINEAR_PENALTY)
  std::unique_ptr<torch::optim::SGD> wopt;
  std::unique_ptr<torch::optim::Adam> aopt;
  int64_t steps_per_epoch = 0, total_weight_steps = 0;
  // The weights phase: the uniform baseline's training, or the fine-tune of the derived network.
  int weights_epochs = 0;
  double weights_lr = 0;
  std::unique_ptr<BatchSampler> fsampler;
  std::unique_ptr<torch::optim::SGD> fopt;

  DerivedConfig derived;
  bpnas::v1::SearchResult result;
  Clock::time_point started = Clock::now();
  bool resumed = false;

 private:
  Trainer(const JobPlan& plan, const DataSplits& data, const RunOptions& options);

  Clock::time_point last_checkpoint_ = Clock::now();
  int64_t last_checkpoint_step_ = 0;
};

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_TRAINER_H_
