// Checks a QuantizedModel (format 2) for everything inference relies on, before anything runs it:
// a file from elsewhere can hold any values, and a stride of 0 or a weight shape that does not
// match its input must be a clear error, not a crash in whatever runs the layers.
//
// Pure; thread-safe.
#ifndef BPNAS_ARTIFACT_VALIDATE_H_
#define BPNAS_ARTIFACT_VALIDATE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "bpnas/v1/model.pb.h"

namespace bpnas {

// The shape of one image's tensor (LINEAR and GLOBAL_AVG_POOL outputs have height = width = 1).
struct TensorShape {
  int64_t channels = 0, height = 0, width = 0;
  int64_t numel() const { return channels * height * width; }
  bool operator==(const TensorShape& o) const {
    return channels == o.channels && height == o.height && width == o.width;
  }
};

// What validation learns, for the interpreters: every node's output shape and where its inputs
// come from.
struct ModelLayout {
  TensorShape input;
  std::vector<TensorShape> outputs;      // per node
  std::vector<std::vector<int>> inputs;  // per node: producer node index, -1 for the network input
};

// Limits that keep a hostile file from asking for unbounded memory or time.
inline constexpr int64_t kMaxNodes = 10000;
inline constexpr int64_t kMaxChannels = 1 << 16;
inline constexpr int64_t kMaxSpatial = 4096;
inline constexpr int64_t kMaxKernel = 64;
inline constexpr int64_t kMaxTensorElements = int64_t(1) << 24;  // per image
inline constexpr int64_t kMaxClasses = 1 << 20;

// INVALID_ARGUMENT naming the node (or field) and what is wrong: an unknown op, a missing or later
// input, shapes that do not fit, bits outside 2..8, scales that are not finite and positive, packed
// weights of the wrong length or holding a code outside the symmetric range, a bias of the wrong
// length, a nonzero zero point, a last node that does not give num_classes logits.
absl::StatusOr<ModelLayout> ValidateModel(const bpnas::v1::QuantizedModel& model);

}  // namespace bpnas

#endif  // BPNAS_ARTIFACT_VALIDATE_H_
