// NCCL implementation of Collective (declared in collective.h under BPNAS_WITH_NCCL).
//
// The communicator is created non-blocking (ncclConfig_t.blocking = 0), so no NCCL call can hang
// the caller: every call enqueues its work on our stream and then polls the stream
// (cudaStreamQuery) and the communicator (ncclCommGetAsyncError) until the work is done, an
// asynchronous error shows, the timeout passes or Abort() is asked for. The last two end in
// ncclCommAbort, which NCCL documents as the way out of a stuck collective.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "worker/collective_internal.h"

namespace bpnas {
namespace {

using collective_internal::Bucket;
using collective_internal::CallGate;
using collective_internal::Reduction;

std::string NcclVersion() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
  return absl::StrFormat("%d.%d.%d", version / 10000, (version / 100) % 100, version % 100);
}

const char* BaseName(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash == nullptr ? path : slash + 1;
}

// The status of an NCCL or CUDA runtime call: OK for success (and for NCCL's ncclInProgress, which
// the non-blocking communicator returns while work is being enqueued), else the call, file:line,
// the error and the NCCL version.
absl::Status CallStatus(ncclResult_t result, const char* call, const char* file, int line) {
  if (result == ncclSuccess || result == ncclInProgress) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (result) {
    case ncclSystemError:
    case ncclRemoteError:
      code = absl::StatusCode::kUnavailable;  // a peer, the network or the system failed
      break;
    case ncclInvalidArgument:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case ncclInvalidUsage:
      code = absl::StatusCode::kFailedPrecondition;
      break;
    default:
      break;
  }
  const char* last = ncclGetLastError(nullptr);
  return absl::Status(
      code, absl::StrCat(call, " failed at ", BaseName(file), ":", line, ": ", ncclGetErrorString(result),
                         last != nullptr && *last != '\0' ? absl::StrCat(" (", last, ")") : "", " [NCCL ",
                         NcclVersion(), "]"));
}

absl::Status CallStatus(cudaError_t error, const char* call, const char* file, int line) {
  if (error == cudaSuccess) return absl::OkStatus();
  const absl::StatusCode code =
      error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver || error == cudaErrorInvalidDevice
          ? absl::StatusCode::kFailedPrecondition
          : absl::StatusCode::kInternal;
  return absl::Status(
      code, absl::StrCat(call, " failed at ", BaseName(file), ":", line, ": ", cudaGetErrorName(error), ": ",
                         cudaGetErrorString(error), " [NCCL ", NcclVersion(), "]"));
}

// Returns from the enclosing function when an NCCL or CUDA runtime call fails.
#define BPNAS_NCCL_CHECK(call) BPNAS_RETURN_IF_ERROR(::bpnas::CallStatus((call), #call, __FILE__, __LINE__))

absl::StatusOr<ncclDataType_t> NcclType(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat:
      return ncclFloat32;
    case torch::kDouble:
      return ncclFloat64;
    case torch::kHalf:
      return ncclFloat16;
    case torch::kChar:
      return ncclInt8;
    case torch::kByte:
      return ncclUint8;
    case torch::kInt:
      return ncclInt32;
    case torch::kLong:
      return ncclInt64;
    default:
      return absl::InvalidArgumentError(absl::StrCat("NCCL does not carry dtype ", c10::toString(dtype)));
  }
}

// Blocks until the non-blocking communicator has finished its pending internal work (init, or
// enqueueing a collective). DEADLINE_EXCEEDED past `deadline`, ABORTED when `abort` is set.
absl::Status AwaitCommunicator(ncclComm_t comm, absl::Time deadline, const std::atomic<bool>* abort,
                               const std::string& operation, absl::Duration timeout) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    BPNAS_NCCL_CHECK(ncclCommGetAsyncError(comm, &state));
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return CallStatus(state, "ncclCommGetAsyncError", __FILE__, __LINE__);
    }
    if (abort != nullptr && abort->load()) return CallGate::AbortedStatus();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(operation, " timed out after ",
                                                      collective_internal::FormatSeconds(timeout),
                                                      ": a rank is gone or stuck"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// RAII over one NCCL communicator, its stream and a device staging buffer for CPU tensors.
class NcclCollective final : public Collective {
 public:
  NcclCollective(const CollectiveOptions& options, int device, std::unique_ptr<RendezvousHost> host,
                 ncclComm_t comm, cudaStream_t stream)
      : options_(options), device_(device), host_(std::move(host)), comm_(comm), stream_(stream) {}

  // A healthy communicator is finalized (its last operations flushed to the peers, for at most
  // options.timeout) and destroyed; after a failure or Abort() it is aborted at once.
  ~NcclCollective() override {
    cudaSetDevice(device_);
    if (comm_ != nullptr && gate_.Check().ok()) {
      const absl::Time deadline = absl::Now() + options_.timeout;
      const ncclResult_t finalize = ncclCommFinalize(comm_);
      if ((finalize == ncclSuccess || finalize == ncclInProgress) &&
          AwaitCommunicator(comm_, deadline, nullptr, "finalize", options_.timeout).ok()) {
        ncclCommDestroy(comm_);
        comm_ = nullptr;
      }
    }
    AbortCommunicator();
    if (staging_ != nullptr) cudaFree(staging_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }

  absl::Status AllReduceMean(std::vector<torch::Tensor>& tensors) override {
    return Collect(tensors, Reduction::kMean, /*root=*/0, "all-reduce");
  }
  absl::Status AllReduceSum(std::vector<torch::Tensor>& tensors) override {
    return Collect(tensors, Reduction::kSum, /*root=*/0, "all-reduce");
  }
  absl::Status Broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    if (root < 0 || root >= options_.world_size) {
      std::lock_guard<std::mutex> call_lock(call_mu_);
      BPNAS_RETURN_IF_ERROR(gate_.Check());
      return gate_.Fail(absl::InvalidArgumentError(
          absl::StrCat("broadcast root ", root, " is outside [0, world_size ", options_.world_size, ")")));
    }
    return Collect(tensors, Reduction::kNone, root, "broadcast");
  }

  // NCCL has no barrier: an all-reduce of one number stands in for it.
  absl::Status Barrier() override {
    std::vector<torch::Tensor> token = {torch::zeros({1}, torch::kInt)};
    return Collect(token, Reduction::kSum, /*root=*/0, "barrier");
  }

  void Abort() override {
    gate_.Abort();
    abort_requested_.store(true);
    // With no call in flight, abort the communicator here; otherwise the call in flight sees the
    // flag within its polling interval and aborts it itself (NCCL calls on one communicator must
    // not race).
    std::unique_lock<std::mutex> call_lock(call_mu_, std::try_to_lock);
    if (call_lock.owns_lock()) {
      cudaSetDevice(device_);
      AbortCommunicator();
    }
  }

 private:
  absl::Status Collect(std::vector<torch::Tensor>& tensors, Reduction reduction, int root,
                       const std::string& operation) {
    std::lock_guard<std::mutex> call_lock(call_mu_);
    BPNAS_RETURN_IF_ERROR(gate_.Check());
    absl::Status status = CollectLocked(tensors, reduction, root, operation);
    if (!status.ok()) {
      // The ranks may be out of step, and a timed-out or aborted collective may still sit on the
      // device: abort the communicator so nothing waits on it.
      AbortCommunicator();
      return gate_.Fail(status);
    }
    return status;
  }

  absl::Status CollectLocked(std::vector<torch::Tensor>& tensors, Reduction reduction, int root,
                             const std::string& operation) {
    BPNAS_NCCL_CHECK(cudaSetDevice(device_));
    BPNAS_ASSIGN_OR_RETURN(std::vector<Bucket> buckets,
                           collective_internal::GroupIntoBuckets(tensors, reduction));
    std::vector<torch::Tensor> flats;
    for (const Bucket& bucket : buckets) {
      if (bucket.device.is_cuda() && bucket.device.index() != device_) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensors on ", bucket.device.str(), ", but this rank's device is cuda:", device_));
      }
      BPNAS_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(bucket.dtype));
      torch::Tensor flat = collective_internal::Flatten(tensors, bucket);
      const size_t bytes = flat.numel() * flat.element_size();
      void* device_buffer = nullptr;
      if (flat.is_cuda()) {
        // A CUDA LibTorch: reduce in place on the device. Our stream is a blocking stream, so it
        // runs after the work LibTorch queued on the default stream (which produced `flat`).
        device_buffer = flat.data_ptr();
      } else {
        BPNAS_RETURN_IF_ERROR(EnsureStaging(bytes));
        device_buffer = staging_;
        BPNAS_NCCL_CHECK(cudaMemcpyAsync(staging_, flat.data_ptr(), bytes, cudaMemcpyHostToDevice, stream_));
      }
      if (reduction == Reduction::kNone) {
        BPNAS_NCCL_CHECK(
            ncclBroadcast(device_buffer, device_buffer, flat.numel(), type, root, comm_, stream_));
      } else {
        // Sum, and divide below for the mean: the same arithmetic as the Gloo implementation.
        BPNAS_NCCL_CHECK(
            ncclAllReduce(device_buffer, device_buffer, flat.numel(), type, ncclSum, comm_, stream_));
      }
      BPNAS_RETURN_IF_ERROR(AwaitStream(operation));
      if (!flat.is_cuda()) {
        // Only now: a device-to-pageable-host copy blocks the caller until it is done, so it must
        // not be queued behind a collective that may hang.
        BPNAS_NCCL_CHECK(cudaMemcpyAsync(flat.data_ptr(), staging_, bytes, cudaMemcpyDeviceToHost, stream_));
        BPNAS_NCCL_CHECK(cudaStreamSynchronize(stream_));
      }
      flats.push_back(flat);
    }
    if (reduction == Reduction::kNone && options_.rank == root) return absl::OkStatus();
    for (size_t b = 0; b < buckets.size(); ++b) {
      if (reduction == Reduction::kMean) flats[b].div_(options_.world_size);
      collective_internal::Unflatten(flats[b], buckets[b], tensors);
    }
    return absl::OkStatus();
  }

  // Polls until the stream is idle; fails on an asynchronous NCCL error, the timeout or Abort().
  absl::Status AwaitStream(const std::string& operation) {
    const absl::Time deadline = absl::Now() + options_.timeout;
    BPNAS_RETURN_IF_ERROR(AwaitCommunicator(comm_, deadline, &abort_requested_, operation, options_.timeout));
    while (true) {
      const cudaError_t query = cudaStreamQuery(stream_);
      if (query == cudaSuccess) return absl::OkStatus();
      if (query != cudaErrorNotReady) {
        return CallStatus(query, "cudaStreamQuery(stream)", __FILE__, __LINE__);
      }
      ncclResult_t state = ncclSuccess;
      BPNAS_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
      if (state != ncclSuccess && state != ncclInProgress) {
        return CallStatus(state, "ncclCommGetAsyncError", __FILE__, __LINE__);
      }
      if (abort_requested_.load()) return CallGate::AbortedStatus();
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(operation, " timed out after ",
                                                        collective_internal::FormatSeconds(options_.timeout),
                                                        ": a rank is gone or stuck"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  absl::Status EnsureStaging(size_t bytes) {
    if (bytes <= staging_bytes_) return absl::OkStatus();
    if (staging_ != nullptr) {
      BPNAS_NCCL_CHECK(cudaStreamSynchronize(stream_));
      BPNAS_NCCL_CHECK(cudaFree(staging_));
      staging_ = nullptr;
      staging_bytes_ = 0;
    }
    BPNAS_NCCL_CHECK(cudaMalloc(&staging_, bytes));
    staging_bytes_ = bytes;
    return absl::OkStatus();
  }

  // Idempotent. Callers hold call_mu_ (or are the destructor).
  void AbortCommunicator() {
    if (comm_ == nullptr) return;
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  const CollectiveOptions options_;
  const int device_;
  std::unique_ptr<RendezvousHost> host_;  // rank 0 only: the store server
  ncclComm_t comm_;                       // null once aborted
  cudaStream_t stream_;
  void* staging_ = nullptr;  // device buffer for CPU tensors
  size_t staging_bytes_ = 0;
  CallGate gate_;
  std::atomic<bool> abort_requested_{false};
  std::mutex call_mu_;  // one call at a time; guards comm_ and the staging buffer
};

constexpr char kUniqueIdKey[] = "nccl_unique_id";

// Rank 0 creates the unique id and publishes it in the store; the others read it (the store's get
// waits for the key, up to the timeout).
absl::StatusOr<ncclUniqueId> ShareUniqueId(const CollectiveOptions& options,
                                           std::unique_ptr<RendezvousHost>& host) {
  ncclUniqueId id;
  if (options.world_size == 1) {
    BPNAS_NCCL_CHECK(ncclGetUniqueId(&id));
    return id;
  }
  BPNAS_ASSIGN_OR_RETURN(c10::intrusive_ptr<c10d::Store> store,
                         collective_internal::OpenRendezvousStore(options, host));
  try {
    if (options.rank == 0) {
      BPNAS_NCCL_CHECK(ncclGetUniqueId(&id));
      const auto* bytes = reinterpret_cast<const uint8_t*>(&id);
      store->set(kUniqueIdKey, std::vector<uint8_t>(bytes, bytes + sizeof(id)));
    } else {
      const std::vector<uint8_t> bytes = store->get(kUniqueIdKey);
      if (bytes.size() != sizeof(id)) {
        return absl::DataLossError(absl::StrCat("the NCCL unique id in the store has ", bytes.size(),
                                                " bytes, expected ", sizeof(id)));
      }
      std::memcpy(&id, bytes.data(), sizeof(id));
    }
  } catch (const std::exception&) {
    return collective_internal::RendezvousError(std::current_exception(), options);
  }
  return id;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Collective>> CreateNcclCollective(const CollectiveOptions& options,
                                                                 std::unique_ptr<RendezvousHost> host) {
  BPNAS_RETURN_IF_ERROR(collective_internal::ValidateOptions(options));
  if (options.rank != 0 && host != nullptr) {
    return absl::InvalidArgumentError("only rank 0 hosts the rendezvous store");
  }
  int device_count = 0;
  BPNAS_NCCL_CHECK(cudaGetDeviceCount(&device_count));
  if (device_count == 0) return absl::FailedPreconditionError("no CUDA device is visible");
  const int device = options.cuda_device >= 0 ? options.cuda_device : options.rank % device_count;
  if (device >= device_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda_device ", device, " but only ", device_count, " devices are visible"));
  }
  BPNAS_NCCL_CHECK(cudaSetDevice(device));
  const absl::Time deadline = absl::Now() + options.timeout;
  BPNAS_ASSIGN_OR_RETURN(ncclUniqueId id, ShareUniqueId(options, host));

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once; we poll, so the timeout holds everywhere
  ncclComm_t comm = nullptr;
  BPNAS_NCCL_CHECK(ncclCommInitRankConfig(&comm, options.world_size, id, options.rank, &config));
  absl::Status ready = AwaitCommunicator(comm, deadline, nullptr, "rendezvous", options.timeout);
  if (!ready.ok()) {
    ncclCommAbort(comm);
    if (ready.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous timed out after ", collective_internal::FormatSeconds(options.timeout),
                       ": not all ", options.world_size, " ranks joined the NCCL communicator"));
    }
    return ready;
  }
  cudaStream_t stream = nullptr;
  const cudaError_t stream_error = cudaStreamCreate(&stream);
  if (stream_error != cudaSuccess) {
    ncclCommAbort(comm);
    return CallStatus(stream_error, "cudaStreamCreate(&stream)", __FILE__, __LINE__);
  }
  return std::make_unique<NcclCollective>(options, device, std::move(host), comm, stream);
}

}  // namespace bpnas
