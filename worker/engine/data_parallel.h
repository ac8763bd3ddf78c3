// The engine's data-parallel helpers: what every rank of a run does together (DESIGN.md §1, step
// 4). Engine-internal: RunJob (search.h) is the public entry point.
//
// With RunOptions::collective null (one rank) every helper is the plain single-process operation.
// Otherwise every rank must call the same helpers in the same order (the collective's rule). A
// failed collective throws CollectiveFailed, which RunJob turns back into its status: the
// training loops stay free of error plumbing on every step.
#ifndef BPNAS_WORKER_ENGINE_DATA_PARALLEL_H_
#define BPNAS_WORKER_ENGINE_DATA_PARALLEL_H_

#include <cstdint>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "worker/engine/data.h"
#include "worker/engine/run_options.h"
#include "worker/engine/supernet.h"

namespace bpnas {

// Thrown when a collective fails (a rank is gone, a timeout, an abort); RunJob returns `status`.
struct CollectiveFailed {
  absl::Status status;
};

int WorldSize(const RunOptions& options);
int Rank(const RunOptions& options);

// Averages the gradients of `params` and every floating-point buffer of `net` over the ranks, in
// one collective. Buffers are running statistics updated linearly (EMA), so their mean is the
// statistic of the union of the ranks' batches; averaging every step keeps them equal.
void SyncStep(Supernet& net, const std::vector<torch::Tensor>& params, const RunOptions& options);

// Every tensor of rank 0's network, on every rank (the start of a data-parallel run).
void BroadcastNetwork(Supernet& net, const RunOptions& options);

// This rank's share of `indices`: every world_size-th element from position rank, cut to the same
// length on every rank (so every rank runs the same number of steps).
torch::Tensor Shard(const torch::Tensor& indices, const RunOptions& options);

// The samples `idx` of `data` (images, labels), copied to `device`.
std::pair<torch::Tensor, torch::Tensor> Batch(const Dataset& data, const torch::Tensor& idx,
                                              torch::Device device);

// Accuracy in percent of `net` (eval mode) on all of `data`, on this process alone.
double Evaluate(Supernet& net, const Dataset& data, int batch_size = 500);

// Accuracy in percent over the ranks' shards of `data` (rank r counts every world_size-th sample).
double EvaluateAcrossRanks(Supernet& net, const Dataset& data, const RunOptions& options);

// Per sample of `idx` (this rank's shard of `data`): whether `net` (eval mode) classifies it
// correctly.
torch::Tensor CorrectOn(Supernet& net, const Dataset& data, const torch::Tensor& idx,
                        const RunOptions& options);

// Two networks scored on the same samples (the ranks' shards together): each one's accuracy and
// the standard error of their difference, all in percent. The error is the paired one (McNemar):
// sqrt(samples only one gets right) / samples.
struct PairedScore {
  double a = 0, b = 0, se = 0;
};
PairedScore PairedAcrossRanks(const torch::Tensor& a, const torch::Tensor& b, const RunOptions& options);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_DATA_PARALLEL_H_
