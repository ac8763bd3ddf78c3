#include "worker/collective.h"

#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/exception.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"

namespace bpnas {

struct RendezvousHost::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

namespace collective_internal {
namespace {

std::chrono::milliseconds ToChrono(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// The engine's message without LibTorch's backtrace, first line only.
std::string EngineMessage(const std::exception& e) {
  std::string message;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    message = c10_error->what_without_backtrace();
  } else {
    message = e.what();
  }
  const size_t newline = message.find('\n');
  if (newline != std::string::npos) message.resize(newline);
  return message;
}

// Gloo and c10d report most failures as plain runtime errors, so the kind comes from the text.
bool LooksLikeTimeout(const std::string& message) {
  const std::string lower = absl::AsciiStrToLower(message);
  return absl::StrContains(lower, "timed out") || absl::StrContains(lower, "timeout");
}

bool LooksLikeLostConnection(const std::string& message) {
  const std::string lower = absl::AsciiStrToLower(message);
  for (const char* needle : {"connection", "connect", "closed", "reset by peer", "broken pipe",
                             "read error", "write error", "socket"}) {
    if (absl::StrContains(lower, needle)) return true;
  }
  return false;
}

bool Supported(torch::ScalarType dtype, Reduction reduction) {
  switch (reduction) {
    case Reduction::kMean:
      return dtype == torch::kFloat || dtype == torch::kDouble;
    case Reduction::kSum:
      return dtype == torch::kFloat || dtype == torch::kDouble || dtype == torch::kInt ||
             dtype == torch::kLong;
    case Reduction::kNone:
      return dtype == torch::kFloat || dtype == torch::kDouble || dtype == torch::kHalf ||
             dtype == torch::kChar || dtype == torch::kByte || dtype == torch::kInt ||
             dtype == torch::kLong;
  }
  return false;
}

}  // namespace

absl::Status ValidateOptions(const CollectiveOptions& o) {
  if (o.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("world_size must be >= 1, got ", o.world_size));
  }
  if (o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", o.rank, " is outside [0, world_size ", o.world_size, ")"));
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  if (o.store_port < 0 || o.store_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("store_port ", o.store_port, " is not a port"));
  }
  if (o.world_size > 1 && o.rank != 0 && o.store_port == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", o.rank, " needs rank 0's store port (store_port is 0)"));
  }
  return absl::OkStatus();
}

std::string FormatSeconds(absl::Duration d) {
  return absl::StrFormat("%g s", absl::ToDoubleSeconds(d));
}

absl::Status StatusFromEngineError(std::exception_ptr error, const std::string& operation,
                                   absl::Duration timeout) {
  std::string message;
  bool is_timeout = false;
  try {
    std::rethrow_exception(error);
  } catch (const c10d::TimeoutError& e) {
    message = EngineMessage(e);
    is_timeout = true;
  } catch (const std::exception& e) {
    message = EngineMessage(e);
    is_timeout = LooksLikeTimeout(message);
  } catch (...) {
    message = "unknown exception";
  }
  if (is_timeout) {
    return absl::DeadlineExceededError(absl::StrCat(operation, " timed out after ",
                                                    FormatSeconds(timeout),
                                                    ": a rank is gone or stuck (", message, ")"));
  }
  if (LooksLikeLostConnection(message)) {
    return absl::UnavailableError(
        absl::StrCat(operation, " failed: lost the connection to a rank (", message, ")"));
  }
  return absl::InternalError(absl::StrCat(operation, " failed: ", message));
}

absl::Status RendezvousError(std::exception_ptr error, const CollectiveOptions& o) {
  const absl::Status status = StatusFromEngineError(error, "rendezvous", o.timeout);
  std::string message(status.message());
  if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    message = absl::StrCat("rendezvous timed out after ", FormatSeconds(o.timeout), ": not all ",
                           o.world_size, " ranks joined");
    const size_t detail = status.message().find(" (");
    if (detail != absl::string_view::npos)
      absl::StrAppend(&message, status.message().substr(detail));
  }
  return absl::Status(status.code(), absl::StrCat(message, " [rank ", o.rank, " of ", o.world_size,
                                                  ", prefix \"", o.prefix, "\"]"));
}

absl::StatusOr<std::vector<Bucket>> GroupIntoBuckets(const std::vector<torch::Tensor>& tensors,
                                                     Reduction reduction) {
  std::vector<Bucket> buckets;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const torch::Tensor& t = tensors[i];
    if (!t.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", i, " is undefined"));
    }
    if (!Supported(t.scalar_type(), reduction)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", i, " has dtype ", c10::toString(t.scalar_type()), ", which ",
                       reduction == Reduction::kMean  ? "a mean all-reduce"
                       : reduction == Reduction::kSum ? "a sum all-reduce"
                                                      : "a broadcast",
                       " does not take"));
    }
    Bucket* bucket = nullptr;
    for (Bucket& b : buckets) {
      if (b.dtype == t.scalar_type() && b.device == t.device()) bucket = &b;
    }
    if (bucket == nullptr) {
      buckets.push_back(Bucket{t.scalar_type(), t.device(), {}, 0});
      bucket = &buckets.back();
    }
    bucket->indices.push_back(i);
    bucket->numel += t.numel();
  }
  return buckets;
}

torch::Tensor Flatten(const std::vector<torch::Tensor>& tensors, const Bucket& bucket) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> views;
  views.reserve(bucket.indices.size());
  for (size_t i : bucket.indices) views.push_back(tensors[i].detach().reshape({-1}));
  // torch::cat always allocates, also for one tensor: the engine may keep writing into the buffer
  // after an abandoned call returned, and that must never be the caller's tensor.
  return torch::cat(views);
}

void Unflatten(const torch::Tensor& flat, const Bucket& bucket,
               std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (size_t i : bucket.indices) {
    torch::Tensor& t = tensors[i];
    const int64_t n = t.numel();
    t.copy_(flat.narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

absl::Status CallGate::Check() const {
  absl::MutexLock lock(&mu_);
  if (aborted_) return AbortedStatus();
  return failed_;
}

absl::Status CallGate::Fail(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (failed_.ok()) {
    failed_ = absl::FailedPreconditionError(
        absl::StrCat("collective unusable after an earlier failure: ", status.ToString()));
  }
  return status;
}

void CallGate::Abort() {
  absl::MutexLock lock(&mu_);
  aborted_ = true;
}

absl::Status CallGate::AbortedStatus() {
  return absl::AbortedError("collective aborted: the attempt is ending");
}

absl::StatusOr<c10::intrusive_ptr<c10d::Store>> OpenRendezvousStore(
    const CollectiveOptions& o, std::unique_ptr<RendezvousHost>& host) {
  c10::intrusive_ptr<c10d::Store> base;
  if (o.rank == 0) {
    if (host == nullptr) {
      if (o.store_port == 0) {
        return absl::InvalidArgumentError(
            "rank 0 with store_port 0 must listen first (RendezvousHost::Listen) to learn the "
            "port it publishes");
      }
      BPNAS_ASSIGN_OR_RETURN(host, RendezvousHost::Listen(o));
    }
    base = host->impl_->store;
  } else {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(o.store_port);
    store_options.isServer = false;
    store_options.waitWorkers = false;
    store_options.timeout = ToChrono(o.timeout);
    try {
      // Retries a refused connection until the timeout: rank 0 may still be starting.
      base = c10::make_intrusive<c10d::TCPStore>(o.store_host, store_options);
    } catch (const std::exception&) {
      const absl::Status status = StatusFromEngineError(
          std::current_exception(), "connecting to the rendezvous store", o.timeout);
      return absl::Status(status.code(), absl::StrCat(status.message(), " [rank 0's store at ",
                                                      o.store_host, ":", o.store_port, "]"));
    }
  }
  return c10::make_intrusive<c10d::PrefixStore>(o.prefix, base);
}

}  // namespace collective_internal

// ---- RendezvousHost ----

RendezvousHost::RendezvousHost(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RendezvousHost::~RendezvousHost() = default;

int RendezvousHost::port() const { return impl_->store->getPort(); }

absl::StatusOr<std::unique_ptr<RendezvousHost>> RendezvousHost::Listen(
    const CollectiveOptions& options) {
  if (options.store_port < 0 || options.store_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("store_port ", options.store_port, " is not a port"));
  }
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(options.store_port);
  store_options.isServer = true;
  store_options.waitWorkers = false;  // the ranks meet in the process group's rendezvous instead
  store_options.timeout = collective_internal::ToChrono(options.timeout);
  auto impl = std::make_unique<Impl>();
  try {
    // The server listens on every interface; this process's own client connects over loopback.
    impl->store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot listen for the rendezvous store on port ",
                                               options.store_port, ": ",
                                               collective_internal::EngineMessage(e)));
  }
  return std::unique_ptr<RendezvousHost>(new RendezvousHost(std::move(impl)));
}

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
      return gate_.Fail(absl::InvalidArgumentError(
          absl::StrCat("broadcast root ", root, " is outside [0, world_size 1)")));
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
                 c10::intrusive_ptr<c10d::Store> store,
                 c10::intrusive_ptr<c10d::ProcessGroupGloo> group)
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
      return gate_.Fail(absl::InvalidArgumentError(absl::StrCat(
          "broadcast root ", root, " is outside [0, world_size ", options_.world_size, ")")));
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
      return gate_.Fail(collective_internal::StatusFromEngineError(std::current_exception(),
                                                                   operation, options_.timeout));
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
      auto done_or_aborted = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake->mu) {
        return *done || wake->aborted;
      };
      wake->mu.AwaitWithTimeout(absl::Condition(&done_or_aborted), options_.timeout);
      finished = *done;
      aborted = wake->aborted;
    }
    if (!finished) {
      if (aborted) return gate_.Fail(CallGate::AbortedStatus());
      return gate_.Fail(absl::DeadlineExceededError(absl::StrCat(
          operation, " timed out after ", collective_internal::FormatSeconds(options_.timeout),
          ": a rank is gone or stuck")));
    }
    if (future->hasError()) {
      return gate_.Fail(collective_internal::StatusFromEngineError(future->exception_ptr(),
                                                                   operation, options_.timeout));
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

absl::StatusOr<std::unique_ptr<Collective>> CreateGlooCollective(
    const CollectiveOptions& options, std::unique_ptr<RendezvousHost> host) {
  BPNAS_RETURN_IF_ERROR(collective_internal::ValidateOptions(options));
  if (options.world_size == 1) return std::make_unique<SingleRankCollective>();
  if (options.rank != 0 && host != nullptr) {
    return absl::InvalidArgumentError("only rank 0 hosts the rendezvous store");
  }
  BPNAS_ASSIGN_OR_RETURN(c10::intrusive_ptr<c10d::Store> store,
                         collective_internal::OpenRendezvousStore(options, host));

  auto gloo_options =
      c10d::ProcessGroupGloo::Options::create(collective_internal::ToChrono(options.timeout));
  try {
    gloo_options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(options.interface_host));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot bind a Gloo device to interface_host \"",
                                                   options.interface_host,
                                                   "\": ", collective_internal::EngineMessage(e)));
  }
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  try {
    // Every rank publishes its device address in the store and connects to all the others; this
    // blocks until all world_size ranks have joined or the timeout passed.
    group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, options.rank, options.world_size,
                                                        gloo_options);
  } catch (const std::exception&) {
    return collective_internal::RendezvousError(std::current_exception(), options);
  }
  return std::make_unique<GlooCollective>(options, std::move(host), std::move(store),
                                          std::move(group));
}

}  // namespace bpnas
