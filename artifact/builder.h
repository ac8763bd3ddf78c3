// Building a format-2 QuantizedModel from a ModelGraph (spec/graph.h): the header fields and the
// node list with every batch norm folded into the conv before it. The engine's export fills each
// layer from the trained network; MakeRandomModel fills it with random codes (tests, fuzz seeds,
// the ONNX grid test).
#ifndef BPNAS_ARTIFACT_BUILDER_H_
#define BPNAS_ARTIFACT_BUILDER_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "bpnas/v1/model.pb.h"
#include "spec/graph.h"

namespace bpnas {

// format_version, model name, input shape, normalization (pixel / 255, mean 0, std 1: what the
// built-in data sets feed), num_classes.
void SetModelHeader(const ModelGraph& graph, bpnas::v1::QuantizedModel* model);

// Fills one conv/linear layer's QuantizedConv (bits, scales, packed codes, clip, bias). `bn` is the
// batch norm that follows the conv and is folded into it, or nullptr. The shape fields
// (channels, kernel, stride, padding, searchable) are already set.
using FillLayer =
    std::function<absl::Status(const GraphNode& conv, const GraphNode* bn, bpnas::v1::QuantizedConv* out)>;

// Appends the graph's nodes: conv/linear through `fill`; a batch norm whose input is a conv read by
// nothing else disappears (readers of it read the conv). INVALID_ARGUMENT for any other batch norm.
absl::Status AppendFoldedNodes(const ModelGraph& graph, const FillLayer& fill,
                               bpnas::v1::QuantizedModel* model);

// Sets the scales, zero points and packed codes of `out` from codes (already in the symmetric
// range of `bits`) and one scale or one per output channel.
void SetWeights(const std::vector<int8_t>& codes, int bits, const std::vector<float>& scales,
                bpnas::v1::QuantizedConv* out);
// Sets activation bits, clip and scale (clip / (2^bits - 1)).
void SetActivation(int bits, double clip, bpnas::v1::QuantizedConv* out);

struct RandomModelOptions {
  int weight_bits = 8;  // every layer, the fixed ones included
  int activation_bits = 8;
  bool per_channel = true;
  uint64_t seed = 1;
};
// A valid, checksummed model of `graph` with random codes, scales, clips and biases (scaled so that
// activations stay in a useful range through the network).
absl::StatusOr<bpnas::v1::QuantizedModel> MakeRandomModel(const ModelGraph& graph,
                                                          const RandomModelOptions& options);

}  // namespace bpnas

#endif  // BPNAS_ARTIFACT_BUILDER_H_
