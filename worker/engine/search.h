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
//
// Where the pieces live: trainer.h (the run's state, checkpoints, weight training), search.cc (the
// phases and RunJob), derive.h (argmax, repair, raise, the uniform check), data_parallel.h (what
// the ranks do together), barrier.h (the penalty and Prob-1), artifact.h (the exported model).
#ifndef BPNAS_WORKER_ENGINE_SEARCH_H_
#define BPNAS_WORKER_ENGINE_SEARCH_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "bpnas/v1/model.pb.h"
#include "spec/progress.h"
#include "spec/spec.h"
#include "worker/engine/data.h"
#include "worker/engine/derive.h"
#include "worker/engine/run_options.h"
#include "worker/engine/supernet.h"

namespace bpnas {

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

// Trains the weights of `net` (as it is pinned/configured) on all of `train` for `epochs` epochs:
// SGD with the spec's momentum and weight decay, cosine from `lr`. Progress events carry `phase`.
// CANCELLED if options.should_stop asked it to stop; a failed collective's status.
absl::Status TrainWeightsOnly(Supernet& net, const bpnas::v1::JobSpec& spec, const Dataset& train, int epochs,
                              double lr, const std::string& phase, const RunOptions& options);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_SEARCH_H_
