// Collective communication between the data-parallel ranks of one attempt.
//
// The ranks of a job all-reduce gradients (of weights and architecture logits) every step, so every
// rank holds the same model. `Collective` is that channel. Two implementations wrap existing
// engines, never a home-made all-reduce: Gloo through LibTorch's c10d ProcessGroupGloo (CPU), and
// NCCL (GPU, built when the CUDA toolkit is found; see BPNAS_WITH_NCCL).
//
// Rendezvous. Rank 0 hosts a c10d TCPStore; the other ranks connect to it as clients, and every
// rank wraps it in a PrefixStore(options.prefix), one prefix per attempt, so a retried attempt
// never reads a stale key. Rank 0 must publish the store's "host:port" (through the coordinator)
// before the others can join, so it starts the store first:
//
//   // rank 0
//   BPNAS_ASSIGN_OR_RETURN(auto host, RendezvousHost::Listen(options));  // returns at once
//   PublishStoreAddress(options.store_host, host->port());                 // the coordinator
//   BPNAS_ASSIGN_OR_RETURN(auto collective, CreateGlooCollective(options, std::move(host)));
//   // ranks 1..N-1, once they know the address
//   options.store_host = ...; options.store_port = ...;
//   BPNAS_ASSIGN_OR_RETURN(auto collective, CreateGlooCollective(options));
//
//   std::vector<torch::Tensor> grads = ...;
//   BPNAS_RETURN_IF_ERROR(collective->AllReduceMean(grads));
//
// Every call is bounded by options.timeout: a rank that is gone or stuck makes the others fail with
// DEADLINE_EXCEEDED (or UNAVAILABLE when its connection drops), never hang. Status codes:
//   DEADLINE_EXCEEDED    a collective or the rendezvous did not finish within the timeout
//   UNAVAILABLE          a peer or the store could not be reached, or dropped its connection
//   ABORTED              Abort() was called
//   FAILED_PRECONDITION  an earlier call failed: the collective is unusable
//   INVALID_ARGUMENT     bad options or tensors (undefined, unsupported dtype, root out of range)
// After any failure the ranks can no longer be assumed to be in step, so the collective refuses
// every later call; the attempt ends and a new one builds a new collective.
#ifndef BPNAS_WORKER_COLLECTIVE_H_
#define BPNAS_WORKER_COLLECTIVE_H_

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace c10d {
class Store;
}  // namespace c10d

namespace bpnas {

struct CollectiveOptions;
class RendezvousHost;

namespace collective_internal {
// The rendezvous store of `options.prefix`, wrapped in a PrefixStore: on rank 0 the TCPStore server
// of `host` (created on options.store_port when null), on the others a client of rank 0's server.
// Shared by the implementations; not for callers.
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> OpenRendezvousStore(
    const CollectiveOptions& options, std::unique_ptr<RendezvousHost>& host);
}  // namespace collective_internal

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

struct CollectiveOptions {
  int rank = 0;
  int world_size = 1;
  // Rank 0's c10d TCPStore. Rank 0 listens on store_port (0: any free port, see RendezvousHost);
  // the others connect to store_host:store_port.
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  // The local address this rank's Gloo device binds to; the other ranks connect to it, so it must
  // be reachable from them (an address of this machine on their network, not 127.0.0.1 across
  // machines).
  std::string interface_host = "127.0.0.1";
  // Bounds the rendezvous and every collective.
  absl::Duration timeout = absl::Seconds(60);
  // Store key prefix: one per attempt (e.g. "job-17/attempt-3"), so a retried attempt never meets
  // a stale key.
  std::string prefix;
  // NCCL only: the CUDA device of this rank; -1 picks rank % (number of visible devices).
  int cuda_device = -1;
};

// Rank 0's side of the rendezvous: the c10d TCPStore server that every rank connects to.
// Thread-compatible. Destroying it closes the store; hand it to CreateGlooCollective /
// CreateNcclCollective, which keep it for the collective's lifetime.
class RendezvousHost {
 public:
  // Binds the store on options.store_port (0: any free port) on every interface and returns at
  // once, without waiting for the other ranks. UNAVAILABLE if the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<RendezvousHost>> Listen(const CollectiveOptions& options);

  ~RendezvousHost();
  RendezvousHost(const RendezvousHost&) = delete;
  RendezvousHost& operator=(const RendezvousHost&) = delete;

  // The port the store listens on; publish it (with a host the other ranks can reach).
  int port() const;

 private:
  struct Impl;
  explicit RendezvousHost(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;

  friend absl::StatusOr<c10::intrusive_ptr<c10d::Store>> collective_internal::OpenRendezvousStore(
      const CollectiveOptions& options, std::unique_ptr<RendezvousHost>& host);
};

// world_size 1: a no-op collective (tensors stay as they are), no sockets; `host` is ignored.
// Otherwise Gloo over c10d. Rank 0 passes the RendezvousHost it created (or none: then it listens
// on options.store_port itself, which must not be 0); the other ranks pass none. Blocks until every
// rank has joined, for at most options.timeout (DEADLINE_EXCEEDED), and cannot be aborted
// meanwhile.
//
// The returned collective's destructor may block for up to options.timeout when Gloo is still
// running an operation abandoned by a timeout or Abort() (Gloo has no way to cancel one; it ends
// the operation at its own timeout, which is options.timeout). When the ranks end together, or a
// peer process is gone, destruction is quick: a closed connection fails Gloo's pending operations
// at once.
absl::StatusOr<std::unique_ptr<Collective>> CreateGlooCollective(
    const CollectiveOptions& options, std::unique_ptr<RendezvousHost> host = nullptr);

#ifdef BPNAS_WITH_NCCL
// NCCL over the same rendezvous: rank 0 creates the ncclUniqueId and publishes it in the store, the
// others read it. CPU tensors are staged through a device buffer; CUDA tensors are reduced in
// place on the device. Every call polls the communicator (ncclCommGetAsyncError) and the stream
// until done, options.timeout or Abort(); on a timeout or Abort() it aborts the communicator
// (ncclCommAbort, NCCL's documented way out of a stuck collective). An in-flight call returns
// within about a millisecond of Abort(). CUDA tensors must be on this rank's device and produced
// on LibTorch's default stream. Destruction finalizes a healthy communicator (at most
// options.timeout) and aborts one after a failure or Abort() at once.
// world_size 1 still builds a real one-rank communicator (no store), so the NCCL path can be
// exercised on one GPU.
absl::StatusOr<std::unique_ptr<Collective>> CreateNcclCollective(
    const CollectiveOptions& options, std::unique_ptr<RendezvousHost> host = nullptr);
#endif

// ---- Shared by the implementations; not for callers. ----
namespace collective_internal {

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
void Unflatten(const torch::Tensor& flat, const Bucket& bucket,
               std::vector<torch::Tensor>& tensors);

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

#endif  // BPNAS_WORKER_COLLECTIVE_H_
