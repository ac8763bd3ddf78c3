#include "artifact/builder.h"

#include <cmath>
#include <random>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "artifact/model_file.h"
#include "artifact/packing.h"
#include "common/status.h"

namespace bpnas {

using bpnas::v1::Node;
using bpnas::v1::QuantizedConv;
using bpnas::v1::QuantizedModel;

void SetModelHeader(const ModelGraph& g, QuantizedModel* m) {
  m->set_format_version(kModelFormatVersion);
  m->set_model_name(g.model_name);
  m->set_input_channels(uint32_t(g.input_channels));
  m->set_input_height(uint32_t(g.input_height));
  m->set_input_width(uint32_t(g.input_width));
  m->set_num_classes(uint32_t(g.num_classes));
  m->mutable_input()->set_pixel_scale(1.0f / 255.0f);
}

absl::Status AppendFoldedNodes(const ModelGraph& g, const FillLayer& fill, QuantizedModel* m) {
  // How many nodes read each node, and the batch norm that folds into each conv.
  std::unordered_map<std::string, int> readers;
  std::unordered_map<std::string, const GraphNode*> node_by_name;
  for (const GraphNode& n : g.nodes) {
    node_by_name[n.name] = &n;
    for (const auto& in : n.inputs) ++readers[in];
  }
  std::unordered_map<std::string, const GraphNode*> folded_bn;  // conv name -> its batch norm
  std::unordered_map<std::string, std::string> alias;           // batch norm name -> conv name
  for (const GraphNode& n : g.nodes) {
    if (n.op != NodeOp::kBatchNorm) continue;
    auto it = n.inputs.empty() ? node_by_name.end() : node_by_name.find(n.inputs[0]);
    if (it == node_by_name.end() || it->second->op != NodeOp::kConv2d || readers[n.inputs[0]] != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch norm ", n.name, " does not follow a conv that only it reads: cannot fold it"));
    }
    folded_bn[n.inputs[0]] = &n;
    alias[n.name] = n.inputs[0];
  }
  for (const GraphNode& n : g.nodes) {
    if (n.op == NodeOp::kBatchNorm) continue;
    Node* out = m->add_nodes();
    out->set_name(n.name);
    for (const auto& in : n.inputs) {
      auto a = alias.find(in);
      out->add_inputs(a == alias.end() ? in : a->second);
    }
    switch (n.op) {
      case NodeOp::kConv2d:
      case NodeOp::kLinear: {
        out->set_op(n.op == NodeOp::kConv2d ? Node::CONV2D : Node::LINEAR);
        QuantizedConv* c = out->mutable_conv();
        c->set_in_channels(uint32_t(n.in_channels));
        c->set_out_channels(uint32_t(n.out_channels));
        c->set_kernel(uint32_t(n.kernel));
        c->set_stride(uint32_t(n.stride));
        c->set_padding(uint32_t(n.padding));
        c->set_searchable(n.searchable);
        auto bn = folded_bn.find(n.name);
        BPNAS_RETURN_IF_ERROR(fill(n, bn == folded_bn.end() ? nullptr : bn->second, c));
        break;
      }
      case NodeOp::kRelu:
        out->set_op(Node::RELU);
        break;
      case NodeOp::kAdd:
        out->set_op(Node::ADD);
        break;
      case NodeOp::kPadShortcut: {
        out->set_op(Node::PAD_SHORTCUT);
        auto* s = out->mutable_shortcut();
        s->set_stride(uint32_t(n.stride));
        s->set_out_channels(uint32_t(n.out_channels));
        s->set_pad_before(uint32_t(n.pad_before));
        break;
      }
      case NodeOp::kGlobalAvgPool:
        out->set_op(Node::GLOBAL_AVG_POOL);
        break;
      case NodeOp::kBatchNorm:
        break;
    }
  }
  return absl::OkStatus();
}

void SetWeights(const std::vector<int8_t>& codes, int bits, const std::vector<float>& scales,
                QuantizedConv* out) {
  out->set_weight_bits(uint32_t(bits));
  out->clear_weight_scales();
  for (float s : scales) out->add_weight_scales(s);
  out->set_weight_zero_point(0);
  out->set_weight_packed(PackCodes(codes.data(), int64_t(codes.size()), bits));
}

void SetActivation(int bits, double clip, QuantizedConv* out) {
  out->set_activation_bits(uint32_t(bits));
  out->set_activation_clip(float(clip));
  out->set_activation_scale(float(clip / double((1 << bits) - 1)));
  out->set_activation_zero_point(0);
}

absl::StatusOr<QuantizedModel> MakeRandomModel(const ModelGraph& g, const RandomModelOptions& o) {
  if (o.weight_bits < 2 || o.weight_bits > 8 || o.activation_bits < 2 || o.activation_bits > 8) {
    return absl::InvalidArgumentError("random model: bits must be in [2, 8]");
  }
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  QuantizedModel m;
  SetModelHeader(g, &m);
  const int qmax = (1 << (o.weight_bits - 1)) - 1;
  auto fill = [&](const GraphNode& n, const GraphNode* bn, QuantizedConv* c) -> absl::Status {
    const int64_t fan_in = int64_t(n.in_channels) * n.kernel * n.kernel;
    std::vector<int8_t> codes(size_t(fan_in * n.out_channels));
    std::uniform_int_distribution<int> code(-qmax, qmax);
    for (auto& q : codes) q = int8_t(code(rng));
    // A uniform code has variance about qmax^2 / 3: scale so that w has He-like variance 2 / fan_in.
    const double base = std::sqrt(2.0 / double(fan_in)) * std::sqrt(3.0) / qmax;
    std::vector<float> scales(o.per_channel ? size_t(n.out_channels) : 1);
    for (auto& s : scales) s = float(base * (0.5 + unit(rng)));
    SetWeights(codes, o.weight_bits, scales, c);
    SetActivation(o.activation_bits, 0.5 + 2.0 * unit(rng), c);
    if (bn != nullptr || n.has_bias) {
      for (int k = 0; k < n.out_channels; ++k) c->add_bias(float(0.2 * (unit(rng) - 0.5)));
    }
    return absl::OkStatus();
  };
  BPNAS_RETURN_IF_ERROR(AppendFoldedNodes(g, fill, &m));
  m.set_checksum(ModelChecksum(m));
  return m;
}

}  // namespace bpnas
