// The BP-NAS search loop and the uniform baseline, in one process (DESIGN.md §2).
//
//   RunJob(plan, data):
//     BPNAS:   feasible start -> warm-up (weights only) -> alternating weight / architecture steps
//              -> derive (argmax; repair if the exact cost is over budget) -> fine-tune the fixed
//              network -> evaluate on the test split -> QuantizedModel (artifact.h).
//     UNIFORM: every searchable layer at uniform_bits, trained for the same total epochs
//              (warm-up + search + fine-tune), evaluated the same way; with finetune.from_init,
//              the fine-tune schedule from init_weights.
//     FIXED:   the same for the per-layer configuration in layer_bits.
//
// The engine knows nothing of gRPC or PostgreSQL: progress goes to a callback.
#ifndef BPNAS_WORKER_ENGINE_SEARCH_H_
#define BPNAS_WORKER_ENGINE_SEARCH_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "bpnas/v1/model.pb.h"
#include "worker/engine/data.h"
#include "worker/engine/progress.h"
#include "worker/engine/spec.h"
#include "worker/engine/supernet.h"

namespace bpnas {


class Collective;  // worker/collective.h

struct RunOptions {
  ProgressCallback progress;  // may be empty
  int report_every = 20;      // steps between progress events
  // Polled before every training step (may be empty). Once it returns true, RunJob stops at that
  // step and returns CANCELLED. Must be cheap and thread-safe (e.g. read an atomic flag).
  std::function<bool()> should_stop;
  // Called between steps when a checkpoint is due (spec.checkpoint_every_seconds /
  // checkpoint_every_steps) with the phase, the complete training state (network, optimizers,
  // samplers, RNG, schedule position: pass it back as resume_from to continue exactly there) and
  // the job step it was taken at. May be empty: no checkpoints.
  std::function<void(const std::string& phase, const std::string& state, int64_t job_step)> checkpoint;
  // A checkpoint's state: the run continues from it instead of starting afresh. DATA_LOSS if it
  // does not fit the job.
  std::string resume_from;
  // Data parallel (may be null: one rank). Rank r trains on every world_size-th sample of each
  // split; after every backward pass the gradients and the floating-point buffers (batch-norm and
  // Scale-Clip running statistics) are averaged over the ranks in one collective, so every rank
  // holds the same model; evaluation counts are summed. A failed collective ends the run with its
  // status. Every rank must run the same spec.
  Collective* collective = nullptr;
  // Where the network trains. The data stays on the CPU and each batch is copied over; on a CUDA
  // device the layers use the mixture's plain torch expressions (the fused kernels are CPU code),
  // and the network comes back to the CPU for export. Collectives then see CUDA tensors (NCCL).
  torch::Device device = torch::kCPU;
};

// Runs the job the plan describes on `data` and returns the finished artifact (result filled in).
// CANCELLED if options.should_stop asked it to stop.
absl::StatusOr<bpnas::v1::QuantizedModel> RunJob(const JobPlan& plan, const DataSplits& data,
                                                 const RunOptions& options);

// ---- pieces exposed for tests and benchmarks ----

QuantOptions QuantOptionsFor(const bpnas::v1::JobSpec& spec);

// Sets LibTorch's intra-op threads (spec.threads, or every core) and flushes denormals to zero.
// Call before training: without an explicit thread count LibTorch's CPU kernels ran 2x slower
// here, and denormal gradients slow FP32 training further.
void ConfigureTorchForTraining(const bpnas::v1::JobSpec& spec);

// E[cost] / budget as a differentiable expression of the architecture logits.
torch::Tensor ExpectedCostRatio(const Supernet& net, const CostModel& cost, double budget);

// Initial logits: for every searchable layer, a Gaussian over bitwidths (sigma = 1 bit) centred at
// a mean chosen by bisection so that E[cost] = start_ratio * budget (as close as reachable).
void SetFeasibleStart(Supernet& net, const CostModel& cost, double budget, double start_ratio);

// Argmax bit indices per searchable layer (weight, activation).
struct DerivedConfig {
  std::vector<int> weight_index, activation_index;
  std::vector<int> weight_bits, activation_bits;
};
DerivedConfig DeriveArgmax(const Supernet& net);
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

// Trains the weights of `net` (as it is pinned/configured) on all of `train` for `epochs` epochs:
// SGD with the spec's momentum and weight decay, cosine from `lr`. Progress events carry `phase`.
void TrainWeightsOnly(Supernet& net, const bpnas::v1::JobSpec& spec, const Dataset& train, int epochs,
                      double lr, const std::string& phase, const RunOptions& options);

// Accuracy in percent of `net` (eval mode) on `data`.
double Evaluate(Supernet& net, const Dataset& data, int batch_size = 500);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_SEARCH_H_
