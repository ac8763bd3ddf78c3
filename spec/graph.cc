#include "spec/graph.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace bpnas {
namespace {

int ConvOut(int size, int kernel, int stride, int padding) {
  return (size + 2 * padding - kernel) / stride + 1;
}

class GraphBuilder {
 public:
  explicit GraphBuilder(ModelGraph* graph) : graph_(graph) {
    h_ = graph->input_height;
    w_ = graph->input_width;
    channels_ = graph->input_channels;
  }

  std::string Conv(const std::string& name, const std::string& input, int out_channels, int kernel,
                   int stride, bool searchable) {
    GraphNode n;
    n.name = name;
    n.op = NodeOp::kConv2d;
    n.inputs = {input};
    n.in_channels = channels_;
    n.out_channels = out_channels;
    n.kernel = kernel;
    n.stride = stride;
    n.padding = kernel / 2;
    n.searchable = searchable;
    h_ = ConvOut(h_, kernel, stride, n.padding);
    w_ = ConvOut(w_, kernel, stride, n.padding);
    n.out_height = h_;
    n.out_width = w_;
    channels_ = out_channels;
    return Add(std::move(n));
  }

  std::string BatchNorm(const std::string& name, const std::string& input) {
    GraphNode n = Shaped(name, NodeOp::kBatchNorm, {input});
    return Add(std::move(n));
  }

  std::string Relu(const std::string& name, const std::string& input) {
    return Add(Shaped(name, NodeOp::kRelu, {input}));
  }

  std::string Sum(const std::string& name, const std::string& a, const std::string& b) {
    return Add(Shaped(name, NodeOp::kAdd, {a, b}));
  }

  // Option-A shortcut of CIFAR ResNets: subsample, zero-pad channels; no parameters.
  std::string PadShortcut(const std::string& name, const std::string& input, int in_channels, int in_h,
                          int in_w, int out_channels, int stride) {
    GraphNode n;
    n.name = name;
    n.op = NodeOp::kPadShortcut;
    n.inputs = {input};
    n.in_channels = in_channels;
    n.out_channels = out_channels;
    n.stride = stride;
    n.pad_before = (out_channels - in_channels) / 2;
    n.out_height = (in_h + stride - 1) / stride;
    n.out_width = (in_w + stride - 1) / stride;
    return Add(std::move(n));
  }

  std::string Pool(const std::string& name, const std::string& input) {
    GraphNode n = Shaped(name, NodeOp::kGlobalAvgPool, {input});
    n.out_height = n.out_width = 1;
    h_ = w_ = 1;
    return Add(std::move(n));
  }

  std::string Linear(const std::string& name, const std::string& input, int out_features) {
    GraphNode n;
    n.name = name;
    n.op = NodeOp::kLinear;
    n.inputs = {input};
    n.in_channels = channels_;
    n.out_channels = out_features;
    n.has_bias = true;
    n.searchable = false;
    channels_ = out_features;
    return Add(std::move(n));
  }

  int channels() const { return channels_; }
  int height() const { return h_; }
  int width() const { return w_; }

 private:
  GraphNode Shaped(const std::string& name, NodeOp op, std::vector<std::string> inputs) const {
    GraphNode n;
    n.name = name;
    n.op = op;
    n.inputs = std::move(inputs);
    n.in_channels = n.out_channels = channels_;
    n.out_height = h_;
    n.out_width = w_;
    return n;
  }
  std::string Add(GraphNode n) {
    graph_->nodes.push_back(std::move(n));
    return graph_->nodes.back().name;
  }

  ModelGraph* graph_;
  int h_, w_, channels_;
};

void BuildResnet20(const ModelOptions& o, ModelGraph* g) {
  GraphBuilder b(g);
  auto width = [&](int base) { return std::max(1, int(std::lround(base * o.width_multiplier))); };
  std::string x = b.Conv("conv1", "input", width(16), 3, 1, /*searchable=*/false);
  x = b.BatchNorm("bn1", x);
  x = b.Relu("relu1", x);
  const int stage_width[3] = {width(16), width(32), width(64)};
  for (int s = 0; s < 3; ++s) {
    for (int blk = 0; blk < 3; ++blk) {
      const std::string p = absl::StrCat("layer", s + 1, ".", blk, ".");
      const int stride = (s > 0 && blk == 0) ? 2 : 1;
      const int in_c = b.channels(), in_h = b.height(), in_w = b.width();
      const std::string block_in = x;
      std::string y = b.Conv(p + "conv1", block_in, stage_width[s], 3, stride, true);
      y = b.BatchNorm(p + "bn1", y);
      y = b.Relu(p + "relu1", y);
      y = b.Conv(p + "conv2", y, stage_width[s], 3, 1, true);
      y = b.BatchNorm(p + "bn2", y);
      std::string shortcut = block_in;
      if (stride != 1 || in_c != stage_width[s]) {
        shortcut = b.PadShortcut(p + "shortcut", block_in, in_c, in_h, in_w, stage_width[s], stride);
      }
      y = b.Sum(p + "add", y, shortcut);
      x = b.Relu(p + "relu2", y);
    }
  }
  x = b.Pool("pool", x);
  b.Linear("fc", x, o.num_classes);
}

void BuildTiny(const ModelOptions& o, ModelGraph* g) {
  GraphBuilder b(g);
  auto width = [&](int base) { return std::max(1, int(std::lround(base * o.width_multiplier))); };
  std::string x = b.Conv("conv1", "input", width(8), 3, 1, false);
  x = b.BatchNorm("bn1", x);
  x = b.Relu("relu1", x);
  x = b.Conv("conv2", x, width(16), 3, 2, true);
  x = b.BatchNorm("bn2", x);
  x = b.Relu("relu2", x);
  x = b.Conv("conv3", x, width(16), 3, 2, true);
  x = b.BatchNorm("bn3", x);
  x = b.Relu("relu3", x);
  x = b.Pool("pool", x);
  b.Linear("fc", x, o.num_classes);
}

}  // namespace

std::vector<LayerInfo> ModelGraph::Layers() const {
  std::vector<LayerInfo> layers;
  for (const GraphNode& n : nodes) {
    if (n.op != NodeOp::kConv2d && n.op != NodeOp::kLinear) continue;
    LayerInfo l;
    l.name = n.name;
    l.searchable = n.searchable;
    l.params = double(n.in_channels) * n.out_channels * n.kernel * n.kernel;
    l.macs = l.params * n.out_height * n.out_width;
    layers.push_back(l);
  }
  return layers;
}

absl::StatusOr<ModelGraph> BuildModelGraph(const ModelOptions& o) {
  if (!(o.width_multiplier > 0) || o.width_multiplier > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.width_multiplier must be in (0, 16], got ", o.width_multiplier));
  }
  if (o.input_channels < 1 || o.input_height < 4 || o.input_width < 4) {
    return absl::InvalidArgumentError(absl::StrCat("model input must be at least 1x4x4, got ",
                                                   o.input_channels, "x", o.input_height, "x",
                                                   o.input_width));
  }
  if (o.num_classes < 2) {
    return absl::InvalidArgumentError(absl::StrCat("model needs at least 2 classes, got ", o.num_classes));
  }
  ModelGraph g;
  g.model_name = o.name;
  g.input_channels = o.input_channels;
  g.input_height = o.input_height;
  g.input_width = o.input_width;
  g.num_classes = o.num_classes;
  if (o.name == "resnet20") {
    BuildResnet20(o, &g);
  } else if (o.name == "tiny") {
    BuildTiny(o, &g);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("model.name: unknown model \"", o.name, "\" (known: resnet20, tiny)"));
  }
  return g;
}

}  // namespace bpnas
