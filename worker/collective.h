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
#include "absl/time/time.h"
#include "worker/engine/collective.h"

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
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> OpenRendezvousStore(const CollectiveOptions& options,
                                                                    std::unique_ptr<RendezvousHost>& host);
}  // namespace collective_internal

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

}  // namespace bpnas

#endif  // BPNAS_WORKER_COLLECTIVE_H_
