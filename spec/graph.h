// Model graphs, torch-free.
//
// A model is a list of nodes in execution order (the same shape the artifact stores, see
// proto/bpnas/v1/model.proto). The graph alone gives every layer's MACs and parameter count, so the
// coordinator and `bpnas cost` can price a model without LibTorch; the engine builds its torch
// modules from the same graph, so the two can never disagree.
#ifndef BPNAS_SPEC_GRAPH_H_
#define BPNAS_SPEC_GRAPH_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bpnas {

enum class NodeOp { kConv2d, kLinear, kBatchNorm, kRelu, kAdd, kPadShortcut, kGlobalAvgPool };

struct GraphNode {
  std::string name;
  NodeOp op = NodeOp::kRelu;
  std::vector<std::string> inputs;  // "input" = network input, else an earlier node's name
  // kConv2d / kLinear (kLinear: kernel = 1, spatial sizes 1) and kBatchNorm (channels = out_channels)
  int in_channels = 0;
  int out_channels = 0;
  int kernel = 1;
  int stride = 1;
  int padding = 0;
  bool has_bias = false;
  bool searchable = false;  // false for the fixed first/last layers
  // Output spatial size of this node.
  int out_height = 1;
  int out_width = 1;
  // kPadShortcut: stride above, out_channels above, pad_before channels in front.
  int pad_before = 0;
};

// One quantizable layer (conv or linear) as the cost model sees it.
struct LayerInfo {
  std::string name;
  bool searchable = false;
  double macs = 0;    // C_in * C_out * k * k * H_out * W_out (per image)
  double params = 0;  // weights only (a bias, if any, stays full precision and is not counted)
};

struct ModelGraph {
  std::string model_name;
  int input_channels = 0;
  int input_height = 0;
  int input_width = 0;
  int num_classes = 0;
  std::vector<GraphNode> nodes;

  // The conv/linear layers in execution order.
  std::vector<LayerInfo> Layers() const;
};

struct ModelOptions {
  std::string name = "resnet20";  // "resnet20" or "tiny"
  double width_multiplier = 1.0;
  int input_channels = 1;
  int input_height = 28;
  int input_width = 28;
  int num_classes = 10;
};

// Builds the graph of a known model. INVALID_ARGUMENT names the offending option.
absl::StatusOr<ModelGraph> BuildModelGraph(const ModelOptions& options);

}  // namespace bpnas

#endif  // BPNAS_SPEC_GRAPH_H_
