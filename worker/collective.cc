#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/exception.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "worker/collective_internal.h"

namespace bpnas {

struct RendezvousHost::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

namespace collective_internal {

std::chrono::milliseconds ToChrono(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

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

namespace {

// Gloo and c10d report most failures as plain runtime errors, so the kind comes from the text.
bool LooksLikeTimeout(const std::string& message) {
  const std::string lower = absl::AsciiStrToLower(message);
  return absl::StrContains(lower, "timed out") || absl::StrContains(lower, "timeout");
}

bool LooksLikeLostConnection(const std::string& message) {
  const std::string lower = absl::AsciiStrToLower(message);
  for (const char* needle : {"connection", "connect", "closed", "reset by peer", "broken pipe", "read error",
                             "write error", "socket"}) {
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
             dtype == torch::kChar || dtype == torch::kByte || dtype == torch::kInt || dtype == torch::kLong;
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

std::string FormatSeconds(absl::Duration d) { return absl::StrFormat("%g s", absl::ToDoubleSeconds(d)); }

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
    return absl::DeadlineExceededError(absl::StrCat(operation, " timed out after ", FormatSeconds(timeout),
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
    if (detail != absl::string_view::npos) absl::StrAppend(&message, status.message().substr(detail));
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
      return absl::InvalidArgumentError(absl::StrCat("tensor ", i, " has dtype ",
                                                     c10::toString(t.scalar_type()), ", which ",
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

void Unflatten(const torch::Tensor& flat, const Bucket& bucket, std::vector<torch::Tensor>& tensors) {
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

absl::StatusOr<c10::intrusive_ptr<c10d::Store>> OpenRendezvousStore(const CollectiveOptions& o,
                                                                    std::unique_ptr<RendezvousHost>& host) {
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
      const absl::Status status =
          StatusFromEngineError(std::current_exception(), "connecting to the rendezvous store", o.timeout);
      return absl::Status(status.code(), absl::StrCat(status.message(), " [rank 0's store at ", o.store_host,
                                                      ":", o.store_port, "]"));
    }
  }
  return c10::make_intrusive<c10d::PrefixStore>(o.prefix, base);
}

}  // namespace collective_internal

// ---- RendezvousHost ----

RendezvousHost::RendezvousHost(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RendezvousHost::~RendezvousHost() = default;

int RendezvousHost::port() const { return impl_->store->getPort(); }

absl::StatusOr<std::unique_ptr<RendezvousHost>> RendezvousHost::Listen(const CollectiveOptions& options) {
  if (options.store_port < 0 || options.store_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("store_port ", options.store_port, " is not a port"));
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

}  // namespace bpnas
