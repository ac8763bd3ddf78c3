// The Gloo collective (CPU), through LibTorch's c10d ProcessGroupGloo, and the one-rank no-op.
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/exception.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "worker/collective_internal.h"

namespace bpnas {

namespace {

using collective_internal::Bucket;
using collective_internal::CallGate;
using collective_internal::Reduction;

// world_size 1: every collective is the identity. Validates its arguments like the real ones, so a
// bug shows on one rank too.
class SingleRankCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }

  absl::Status AllReduceMean(std::vector<torch::Tensor>& tensors) override {
    return Validate(tensors, Reduction::kMean);
  }
  absl::Status AllReduceSum(std::vector<torch::Tensor>& tensors) override {
    return Validate(tensors, Reduction::kSum);
  }
  absl::Status Broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    if (root != 0) {
      return gate_.Fail(
          absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " is outside [0, world_size 1)")));
    }
    return Validate(tensors, Reduction::kNone);
  }
  absl::Status Barrier() override { return gate_.Check(); }
  void Abort() override { gate_.Abort(); }

 private:
  absl::Status Validate(const std::vector<torch::Tensor>& tensors, Reduction reduction) {
    BPNAS_RETURN_IF_ERROR(gate_.Check());
    auto buckets = collective_internal::GroupIntoBuckets(tensors, reduction);
    if (!buckets.ok()) return gate_.Fail(buckets.status());
    return absl::OkStatus();
  }

  CallGate gate_;
};

// Gloo through c10d::ProcessGroupGloo.
//
// Waiting: ProcessGroupGloo runs each collective on its own worker thread and completes the
// work's future there. We wait on our own condition (future done, or Abort()) with the timeout
// instead of Work::wait, so Abort() releases a waiting caller at once. The abandoned operation
// keeps running in Gloo until its peers answer or Gloo's own timeout (the same options.timeout)
// fails it; it holds references to our flat buffer, never to the caller's tensors. Nothing here
// closes sockets or destroys the process group from another thread: ProcessGroupGloo is not safe
// for that.
class GlooCollective final : public Collective {
 public:
  GlooCollective(const CollectiveOptions& options, std::unique_ptr<RendezvousHost> host,
                 c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::ProcessGroupGloo> group)
      : options_(options),
        host_(std::move(host)),
        store_(std::move(store)),
        group_(std::move(group)),
        wake_(std::make_shared<WakeState>()) {}

  ~GlooCollective() override {
    // Joins Gloo's worker threads: may wait for an abandoned operation (see the header).
    group_.reset();
    store_.reset();
    host_.reset();
  }

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }

  absl::Status AllReduceMean(std::vector<torch::Tensor>& tensors) override {
    return AllReduce(tensors, Reduction::kMean);
  }
  absl::Status AllReduceSum(std::vector<torch::Tensor>& tensors) override {
    return AllReduce(tensors, Reduction::kSum);
  }

  absl::Status Broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    std::lock_guard<std::mutex> call_lock(call_mu_);
    BPNAS_RETURN_IF_ERROR(gate_.Check());
    if (root < 0 || root >= options_.world_size) {
      return gate_.Fail(absl::InvalidArgumentError(
          absl::StrCat("broadcast root ", root, " is outside [0, world_size ", options_.world_size, ")")));
    }
    auto buckets = collective_internal::GroupIntoBuckets(tensors, Reduction::kNone);
    if (!buckets.ok()) return gate_.Fail(buckets.status());
    std::vector<torch::Tensor> flats;
    for (const Bucket& bucket : *buckets) {
      std::vector<at::Tensor> io = {collective_internal::Flatten(tensors, bucket)};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      opts.rootTensor = 0;
      BPNAS_RETURN_IF_ERROR(Run("broadcast", [&] { return group_->broadcast(io, opts); }));
      flats.push_back(io[0]);
    }
    if (options_.rank != root) {
      for (size_t b = 0; b < buckets->size(); ++b) {
        collective_internal::Unflatten(flats[b], (*buckets)[b], tensors);
      }
    }
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    std::lock_guard<std::mutex> call_lock(call_mu_);
    BPNAS_RETURN_IF_ERROR(gate_.Check());
    return Run("barrier", [&] { return group_->barrier(); });
  }

  void Abort() override {
    gate_.Abort();
    absl::MutexLock lock(&wake_->mu);
    wake_->aborted = true;
  }

 private:
  // What a waiting call wakes up on: its operation's completion (set from Gloo's thread through
  // the future's callback, which may outlive this object, hence shared) or Abort().
  struct WakeState {
    absl::Mutex mu;
    bool aborted ABSL_GUARDED_BY(mu) = false;
  };

  absl::Status AllReduce(std::vector<torch::Tensor>& tensors, Reduction reduction) {
    std::lock_guard<std::mutex> call_lock(call_mu_);
    BPNAS_RETURN_IF_ERROR(gate_.Check());
    auto buckets = collective_internal::GroupIntoBuckets(tensors, reduction);
    if (!buckets.ok()) return gate_.Fail(buckets.status());
    std::vector<torch::Tensor> flats;
    for (const Bucket& bucket : *buckets) {
      std::vector<at::Tensor> io = {collective_internal::Flatten(tensors, bucket)};
      c10d::AllreduceOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;  // Gloo has no AVG; the mean divides below
      BPNAS_RETURN_IF_ERROR(Run("all-reduce", [&] { return group_->allreduce(io, opts); }));
      flats.push_back(io[0]);
    }
    // Written back only once every bucket succeeded: a failed call leaves the tensors unchanged.
    for (size_t b = 0; b < buckets->size(); ++b) {
      if (reduction == Reduction::kMean) flats[b].div_(options_.world_size);
      collective_internal::Unflatten(flats[b], (*buckets)[b], tensors);
    }
    return absl::OkStatus();
  }

  // Starts one operation and waits for it, the timeout or Abort(). Any failure closes the gate.
  template <typename StartFn>
  absl::Status Run(const std::string& operation, StartFn start) {
    c10::intrusive_ptr<c10::ivalue::Future> future;
    try {
      future = start()->getFuture();
    } catch (const std::exception&) {
      return gate_.Fail(
          collective_internal::StatusFromEngineError(std::current_exception(), operation, options_.timeout));
    }
    auto done = std::make_shared<bool>(false);
    std::shared_ptr<WakeState> wake = wake_;
    // Runs on Gloo's thread when the operation ends, or right here if it already has.
    future->addCallback([wake, done](c10::ivalue::Future&) {
      absl::MutexLock lock(&wake->mu);
      *done = true;
    });
    bool finished;
    bool aborted;
    {
      absl::MutexLock lock(&wake->mu);
      auto done_or_aborted = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake->mu) { return *done || wake->aborted; };
      wake->mu.AwaitWithTimeout(absl::Condition(&done_or_aborted), options_.timeout);
      finished = *done;
      aborted = wake->aborted;
    }
    if (!finished) {
      if (aborted) return gate_.Fail(CallGate::AbortedStatus());
      return gate_.Fail(absl::DeadlineExceededError(
          absl::StrCat(operation, " timed out after ", collective_internal::FormatSeconds(options_.timeout),
                       ": a rank is gone or stuck")));
    }
    if (future->hasError()) {
      return gate_.Fail(
          collective_internal::StatusFromEngineError(future->exception_ptr(), operation, options_.timeout));
    }
    return absl::OkStatus();
  }

  const CollectiveOptions options_;
  std::unique_ptr<RendezvousHost> host_;  // rank 0 only: the store server
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  std::shared_ptr<WakeState> wake_;
  CallGate gate_;
  std::mutex call_mu_;  // one collective at a time
};

}  // namespace

absl::StatusOr<std::unique_ptr<Collective>> CreateGlooCollective(const CollectiveOptions& options,
                                                                 std::unique_ptr<RendezvousHost> host) {
  BPNAS_RETURN_IF_ERROR(collective_internal::ValidateOptions(options));
  if (options.world_size == 1) return std::make_unique<SingleRankCollective>();
  if (options.rank != 0 && host != nullptr) {
    return absl::InvalidArgumentError("only rank 0 hosts the rendezvous store");
  }
  BPNAS_ASSIGN_OR_RETURN(c10::intrusive_ptr<c10d::Store> store,
                         collective_internal::OpenRendezvousStore(options, host));

  auto gloo_options = c10d::ProcessGroupGloo::Options::create(collective_internal::ToChrono(options.timeout));
  try {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.interface_host));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot bind a Gloo device to interface_host \"",
                                                   options.interface_host,
                                                   "\": ", collective_internal::EngineMessage(e)));
  }
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  try {
    // Every rank publishes its device address in the store and connects to all the others; this
    // blocks until all world_size ranks have joined or the timeout passed.
    group =
        c10::make_intrusive<c10d::ProcessGroupGloo>(store, options.rank, options.world_size, gloo_options);
  } catch (const std::exception&) {
    return collective_internal::RendezvousError(std::current_exception(), options);
  }
  return std::make_unique<GlooCollective>(options, std::move(host), std::move(store), std::move(group));
}

}  // namespace bpnas
