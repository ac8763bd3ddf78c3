// How a run is driven from outside the engine: progress, stopping, checkpoints, resuming, the
// data-parallel collective and the device. Shared by RunJob (search.h) and Pretrain (weights.h).
#ifndef BPNAS_WORKER_ENGINE_RUN_OPTIONS_H_
#define BPNAS_WORKER_ENGINE_RUN_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <string>

#include <torch/types.h>

#include "spec/progress.h"

namespace bpnas {

class Collective;  // worker/engine/collective.h

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

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_RUN_OPTIONS_H_
