// Network weights on disk (LibTorch archives), for shared starting points: `bpnas pretrain` trains
// the unquantized network once and every search and baseline can start from it (init_weights).
#ifndef BPNAS_WORKER_ENGINE_WEIGHTS_H_
#define BPNAS_WORKER_ENGINE_WEIGHTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spec/spec.h"
#include "worker/engine/data.h"
#include "worker/engine/run_options.h"
#include "worker/engine/supernet.h"

namespace bpnas {

// Writes every parameter and buffer except the architecture logits.
absl::Status SaveWeights(const Supernet& net, const std::string& path);
// Loads parameters and buffers by name; the architecture logits are left alone. NOT_FOUND if the
// file cannot be read, DATA_LOSS if it is not a weights archive, INVALID_ARGUMENT if a tensor is
// missing or has another shape (a different model or width).
absl::Status LoadWeights(Supernet& net, const std::string& path);

// Trains the unquantized (FP32) network of the plan for `epochs` epochs (SGD, cosine from `lr`)
// on the whole training split and returns its test accuracy in percent.
absl::StatusOr<double> PretrainFp32(const JobPlan& plan, const DataSplits& data, int epochs, double lr,
                                    Supernet* net, const RunOptions& options);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_WEIGHTS_H_
