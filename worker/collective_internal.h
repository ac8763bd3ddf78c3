// Internals shared by the Gloo and NCCL collectives (collective.cc, gloo_collective.cc,
// nccl_collective.cc). Not for callers: include worker/collective.h instead.
#ifndef BPNAS_WORKER_COLLECTIVE_INTERNAL_H_
#define BPNAS_WORKER_COLLECTIVE_INTERNAL_H_

#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/collective.h"

namespace bpnas {
namespace collective_internal {

// The engine's message without LibTorch's backtrace, first line only.
std::string EngineMessage(const std::exception& e);

std::chrono::milliseconds ToChrono(absl::Duration d);

// The tensors of one call that share a dtype and device, in call order.
struct Bucket {
  torch::ScalarType dtype = torch::kFloat;
  torch::Device device = torch::kCPU;
  std::vector<size_t> indices;  // into the call's tensor vector
  int64_t numel = 0;
};

enum class Reduction { kNone, kSum, kMean };

// Groups `tensors` into buckets. INVALID_ARGUMENT for an undefined tensor or a dtype the
// reduction does not take (see Collective's methods).
absl::StatusOr<std::vector<Bucket>> GroupIntoBuckets(const std::vector<torch::Tensor>& tensors,
                                                     Reduction reduction);
// A new contiguous 1-D tensor holding the bucket's tensors one after another.
torch::Tensor Flatten(const std::vector<torch::Tensor>& tensors, const Bucket& bucket);
// Copies `flat` back into the bucket's tensors (under NoGradGuard, so parameters may be passed).
void Unflatten(const torch::Tensor& flat, const Bucket& bucket, std::vector<torch::Tensor>& tensors);

// Checks the options every implementation shares (ranks, port, timeout). INVALID_ARGUMENT.
absl::Status ValidateOptions(const CollectiveOptions& options);

// "60 s", "2.5 s": durations in messages.
std::string FormatSeconds(absl::Duration d);

// The status of a failed rendezvous: StatusFromEngineError, with a timeout saying that not every
// rank joined, and the rank and prefix appended.
absl::Status RendezvousError(std::exception_ptr error, const CollectiveOptions& options);

// The status for an exception from the engine during `operation` ("all-reduce", "rendezvous",
// ...): DEADLINE_EXCEEDED for a timeout, UNAVAILABLE for a lost or refused connection, INTERNAL
// otherwise. The message names the operation and keeps the engine's first line.
absl::Status StatusFromEngineError(std::exception_ptr error, const std::string& operation,
                                   absl::Duration timeout);

// Refuses calls after Abort() or after a failure. Thread-safe.
class CallGate {
 public:
  // OK, or the status every call gets from now on: ABORTED after Abort(), else
  // FAILED_PRECONDITION after a failure.
  absl::Status Check() const;
  // Remembers the first failure (the ranks may be out of step after it) and returns `status`.
  absl::Status Fail(absl::Status status);
  void Abort();
  static absl::Status AbortedStatus();

 private:
  mutable absl::Mutex mu_;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace collective_internal
}  // namespace bpnas

#endif  // BPNAS_WORKER_COLLECTIVE_INTERNAL_H_
