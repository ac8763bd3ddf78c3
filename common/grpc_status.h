// The one place where absl::Status and grpc::Status meet. The codes are the same numbers by design
// (both follow google.rpc.Code), so the mapping is 1:1 and keeps the message.
#ifndef BPNAS_COMMON_GRPC_STATUS_H_
#define BPNAS_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace bpnas {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace bpnas

#endif  // BPNAS_COMMON_GRPC_STATUS_H_
