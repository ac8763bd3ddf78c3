#include "artifact/validate.h"

#include <cmath>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "artifact/packing.h"
#include "common/status.h"

namespace bpnas {
namespace {

using bpnas::v1::Node;
using bpnas::v1::QuantizedConv;
using bpnas::v1::QuantizedModel;

bool FinitePositive(float v) { return std::isfinite(v) && v > 0; }

absl::Status Bad(const Node& n, int index, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("node ", index, " '", n.name(), "': ", what));
}

absl::Status CheckShape(const Node& n, int index, const TensorShape& s) {
  if (s.channels < 1 || s.height < 1 || s.width < 1 || s.channels > kMaxChannels || s.height > kMaxSpatial ||
      s.width > kMaxSpatial || s.numel() > kMaxTensorElements) {
    return Bad(
        n, index,
        absl::StrCat("output shape ", s.channels, "x", s.height, "x", s.width, " is empty or too large"));
  }
  return absl::OkStatus();
}

// Conv and linear: shapes, bits, scales, codes, bias; returns the output shape.
absl::StatusOr<TensorShape> CheckConv(const Node& n, int index, const TensorShape& in) {
  if (!n.has_conv()) return Bad(n, index, "conv/linear node without its `conv` fields");
  const QuantizedConv& c = n.conv();
  const bool linear = n.op() == Node::LINEAR;
  if (c.in_channels() < 1 || c.out_channels() < 1 || c.in_channels() > kMaxChannels * 64 ||
      c.out_channels() > kMaxChannels) {
    return Bad(n, index,
               absl::StrCat("channels ", c.in_channels(), " -> ", c.out_channels(), " out of range"));
  }
  TensorShape out;
  if (linear) {
    if (c.kernel() != 1 || c.stride() != 1 || c.padding() != 0) {
      return Bad(n, index, "a linear layer has kernel 1, stride 1 and padding 0");
    }
    if (int64_t(c.in_channels()) != in.numel()) {
      return Bad(n, index,
                 absl::StrCat("in_channels ", c.in_channels(), " but its input has ", in.numel(),
                              " values per image"));
    }
    out = {int64_t(c.out_channels()), 1, 1};
  } else {
    if (c.kernel() < 1 || c.kernel() > kMaxKernel) return Bad(n, index, absl::StrCat("kernel ", c.kernel()));
    if (c.stride() < 1 || c.stride() > kMaxKernel) return Bad(n, index, absl::StrCat("stride ", c.stride()));
    if (c.padding() > c.kernel()) return Bad(n, index, absl::StrCat("padding ", c.padding(), " > kernel"));
    if (int64_t(c.in_channels()) != in.channels) {
      return Bad(
          n, index,
          absl::StrCat("in_channels ", c.in_channels(), " but its input has ", in.channels, " channels"));
    }
    const int64_t h = in.height + 2 * int64_t(c.padding()) - c.kernel();
    const int64_t w = in.width + 2 * int64_t(c.padding()) - c.kernel();
    if (h < 0 || w < 0) return Bad(n, index, "kernel larger than its padded input");
    out = {int64_t(c.out_channels()), h / c.stride() + 1, w / c.stride() + 1};
  }
  if (c.weight_bits() < 2 || c.weight_bits() > 8) {
    return Bad(n, index, absl::StrCat("weight_bits ", c.weight_bits(), " not in [2, 8]"));
  }
  if (c.activation_bits() < 2 || c.activation_bits() > 8) {
    return Bad(n, index, absl::StrCat("activation_bits ", c.activation_bits(), " not in [2, 8]"));
  }
  if (c.weight_scales_size() != 1 && c.weight_scales_size() != int(c.out_channels())) {
    return Bad(n, index,
               absl::StrCat(c.weight_scales_size(), " weight_scales; 1 or out_channels (", c.out_channels(),
                            ") expected"));
  }
  for (float s : c.weight_scales()) {
    if (!FinitePositive(s)) return Bad(n, index, "a weight scale is not finite and positive");
  }
  if (c.weight_zero_point() != 0 || c.activation_zero_point() != 0) {
    return Bad(n, index, "zero points must be 0 (symmetric weights, unsigned activations)");
  }
  if (!FinitePositive(c.activation_clip()) || !FinitePositive(c.activation_scale())) {
    return Bad(n, index, "activation_clip and activation_scale must be finite and positive");
  }
  const double levels = double((1 << c.activation_bits()) - 1);
  if (std::fabs(double(c.activation_scale()) * levels - double(c.activation_clip())) >
      1e-4 * double(c.activation_clip())) {
    return Bad(n, index, "activation_scale is not activation_clip / (2^activation_bits - 1)");
  }
  if (c.bias_size() != 0 && c.bias_size() != int(c.out_channels())) {
    return Bad(n, index, absl::StrCat(c.bias_size(), " bias values; 0 or out_channels expected"));
  }
  for (float b : c.bias()) {
    if (!std::isfinite(b)) return Bad(n, index, "a bias value is not finite");
  }
  const int64_t count =
      int64_t(c.out_channels()) * c.in_channels() * (linear ? 1 : int64_t(c.kernel()) * c.kernel());
  if (count > int64_t(1) << 30) return Bad(n, index, "too many weights");
  // The length first: a file must not make us allocate for weights it does not hold.
  if (int64_t(c.weight_packed().size()) != PackedSize(count, int(c.weight_bits()))) {
    return Bad(n, index,
               absl::StrCat("weight_packed holds ", c.weight_packed().size(), " bytes; ", count, " codes of ",
                            c.weight_bits(), " bits take ", PackedSize(count, int(c.weight_bits()))));
  }
  std::vector<int8_t> codes(static_cast<size_t>(count));
  auto unpacked = UnpackCodes(c.weight_packed(), int(c.weight_bits()), count, codes.data());
  if (!unpacked.ok()) return Bad(n, index, std::string(unpacked.message()));
  const int qmax = (1 << (c.weight_bits() - 1)) - 1;
  for (int8_t q : codes) {
    if (q < -qmax)
      return Bad(n, index, absl::StrCat("weight code ", int(q), " outside [-", qmax, ", ", qmax, "]"));
  }
  return out;
}

}  // namespace

absl::StatusOr<ModelLayout> ValidateModel(const QuantizedModel& m) {
  ModelLayout layout;
  layout.input = {int64_t(m.input_channels()), int64_t(m.input_height()), int64_t(m.input_width())};
  if (layout.input.channels < 1 || layout.input.channels > kMaxChannels || layout.input.height < 1 ||
      layout.input.height > kMaxSpatial || layout.input.width < 1 || layout.input.width > kMaxSpatial ||
      layout.input.numel() > kMaxTensorElements) {
    return absl::InvalidArgumentError(absl::StrCat("input shape ", m.input_channels(), "x", m.input_height(),
                                                   "x", m.input_width(), " is empty or too large"));
  }
  if (m.num_classes() < 1 || m.num_classes() > kMaxClasses) {
    return absl::InvalidArgumentError(absl::StrCat("num_classes ", m.num_classes(), " out of range"));
  }
  const auto& norm = m.input();
  if (!FinitePositive(norm.pixel_scale())) {
    return absl::InvalidArgumentError("input.pixel_scale must be finite and positive");
  }
  if ((norm.mean_size() != 0 && norm.mean_size() != int(m.input_channels())) ||
      (norm.std_size() != 0 && norm.std_size() != int(m.input_channels()))) {
    return absl::InvalidArgumentError("input.mean and input.std hold one value per input channel, or none");
  }
  for (float v : norm.mean()) {
    if (!std::isfinite(v)) return absl::InvalidArgumentError("input.mean is not finite");
  }
  for (float v : norm.std()) {
    if (!FinitePositive(v)) return absl::InvalidArgumentError("input.std must be finite and positive");
  }
  if (m.nodes_size() == 0) return absl::InvalidArgumentError("the model has no nodes");
  if (m.nodes_size() > kMaxNodes)
    return absl::InvalidArgumentError(absl::StrCat(m.nodes_size(), " nodes: too many"));

  std::unordered_map<std::string, int> index_of;
  for (int i = 0; i < m.nodes_size(); ++i) {
    const Node& n = m.nodes(i);
    if (n.name().empty() || n.name() == "input") return Bad(n, i, "a node needs a name other than 'input'");
    if (index_of.count(n.name())) return Bad(n, i, "duplicate node name");
    const int arity = n.op() == Node::ADD ? 2 : 1;
    if (n.inputs_size() != arity) {
      return Bad(n, i, absl::StrCat(n.inputs_size(), " inputs; this op takes ", arity));
    }
    std::vector<int> from;
    std::vector<TensorShape> in;
    for (const std::string& name : n.inputs()) {
      if (name == "input") {
        from.push_back(-1);
        in.push_back(layout.input);
        continue;
      }
      auto it = index_of.find(name);
      if (it == index_of.end()) return Bad(n, i, absl::StrCat("input '", name, "' is not an earlier node"));
      from.push_back(it->second);
      in.push_back(layout.outputs[size_t(it->second)]);
    }
    TensorShape out;
    switch (n.op()) {
      case Node::CONV2D:
      case Node::LINEAR: {
        BPNAS_ASSIGN_OR_RETURN(out, CheckConv(n, i, in[0]));
        break;
      }
      case Node::RELU:
        out = in[0];
        break;
      case Node::ADD:
        if (!(in[0] == in[1])) return Bad(n, i, "the two inputs of an add differ in shape");
        out = in[0];
        break;
      case Node::PAD_SHORTCUT: {
        const auto& s = n.shortcut();
        if (s.stride() < 1 || s.stride() > kMaxKernel)
          return Bad(n, i, absl::StrCat("shortcut stride ", s.stride()));
        if (int64_t(s.out_channels()) < in[0].channels + int64_t(s.pad_before())) {
          return Bad(n, i, "shortcut out_channels smaller than its input channels plus pad_before");
        }
        out = {int64_t(s.out_channels()), (in[0].height + s.stride() - 1) / s.stride(),
               (in[0].width + s.stride() - 1) / s.stride()};
        break;
      }
      case Node::GLOBAL_AVG_POOL:
        out = {in[0].channels, 1, 1};
        break;
      default:
        return Bad(n, i, absl::StrCat("unknown op ", int(n.op())));
    }
    BPNAS_RETURN_IF_ERROR(CheckShape(n, i, out));
    index_of.emplace(n.name(), i);
    layout.outputs.push_back(out);
    layout.inputs.push_back(std::move(from));
  }
  const TensorShape& last = layout.outputs.back();
  if (last.numel() != int64_t(m.num_classes()) || last.height != 1 || last.width != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the last node gives ", last.channels, "x", last.height,
                                                   "x", last.width, " values, not num_classes (",
                                                   m.num_classes(), ") logits"));
  }
  return layout;
}

}  // namespace bpnas
