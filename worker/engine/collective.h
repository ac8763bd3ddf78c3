// The channel between the data-parallel ranks of one run, as the search engine sees it.
//
// The engine averages gradients and running statistics over the ranks through this interface and
// knows nothing of how the ranks meet or which engine carries the tensors: the worker builds a
// Gloo (CPU) or NCCL (GPU) implementation (worker/collective.h) and hands it to RunJob.
#ifndef BPNAS_WORKER_ENGINE_COLLECTIVE_H_
#define BPNAS_WORKER_ENGINE_COLLECTIVE_H_

#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"

namespace bpnas {

// A group of ranks that reduce and broadcast tensors together.
//
// Every rank must call the collectives in the same order with tensors of the same shapes and
// dtypes; a mismatch is undefined behaviour of the engine underneath (usually a timeout). The
// collective calls of one rank must come from one thread at a time (they are serialized, but two
// threads racing would break the order rule across ranks). Abort() may be called from any thread.
//
// Tensors: any number per call, any shapes; CPU tensors (the NCCL implementation also takes CUDA
// tensors of a CUDA LibTorch). The tensors of one call are flattened into one contiguous buffer
// per dtype, so a call with one dtype is one collective on the wire, whatever the tensor count.
// A call reads its tensors when it starts and writes them only when it succeeds, before it
// returns: on failure they are unchanged, and nothing touches them after the call returns.
class Collective {
 public:
  virtual ~Collective() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // In place: every tensor becomes the mean over ranks (the sum, divided by world_size).
  // float and double tensors.
  virtual absl::Status AllReduceMean(std::vector<torch::Tensor>& tensors) = 0;
  // In place: every tensor becomes the sum over ranks. float, double, int32 and int64 tensors.
  virtual absl::Status AllReduceSum(std::vector<torch::Tensor>& tensors) = 0;
  // In place: every tensor becomes rank `root`'s value. float, double, half, int8, uint8, int32
  // and int64 tensors (so buffers such as batch norm's int64 counter can go along).
  virtual absl::Status Broadcast(std::vector<torch::Tensor>& tensors, int root) = 0;
  // Returns once every rank has entered the barrier.
  virtual absl::Status Barrier() = 0;

  // Thread-safe; idempotent. A call in flight on another thread returns ABORTED within
  // milliseconds, and every later call fails at once with ABORTED. The engine may still finish
  // (or time out on) the abandoned operation in the background, on buffers the collective owns;
  // see each implementation for what destruction then costs. Used when the coordinator ends the
  // attempt.
  virtual void Abort() = 0;
};

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_COLLECTIVE_H_
