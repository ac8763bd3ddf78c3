// GuardTorch: the edge where LibTorch's exceptions become a Status (STYLE: exceptions are caught
// at the edge of the module that calls the library).
#ifndef BPNAS_WORKER_ENGINE_TORCH_GUARD_H_
#define BPNAS_WORKER_ENGINE_TORCH_GUARD_H_

#include <exception>
#include <new>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bpnas {

// Runs `fn` (returning a Status or StatusOr) and turns what LibTorch throws into its result:
// RESOURCE_EXHAUSTED for an allocation that failed, INTERNAL naming `what` for anything else.
template <typename Fn>
auto GuardTorch(const std::string& what, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_TORCH_GUARD_H_
