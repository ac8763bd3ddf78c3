#include "worker/engine/artifact.h"

#include <fstream>
#include <sstream>
#include <unordered_map>

#include <torch/nn/functional.h>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/status.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "worker/engine/quant_ops.h"

namespace bpnas {
namespace {

namespace F = torch::nn::functional;
using bpnas::v1::Node;
using bpnas::v1::QuantizedModel;

std::string SerializeDeterministic(const QuantizedModel& model) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  model.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

std::vector<float> ToVector(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

std::string ModelChecksum(const QuantizedModel& model) {
  QuantizedModel copy = model;
  copy.clear_checksum();
  return Sha256Hex(SerializeDeterministic(copy));
}

absl::StatusOr<QuantizedModel> ExportQuantizedModel(const Supernet& net, const JobPlan& plan,
                                                    const bpnas::v1::SearchResult& result) {
  torch::NoGradGuard guard;
  QuantizedModel m;
  m.set_format_version(1);
  const ModelGraph& g = net->graph();
  m.set_model_name(g.model_name);
  m.set_input_channels(g.input_channels);
  m.set_input_height(g.input_height);
  m.set_input_width(g.input_width);
  m.set_num_classes(g.num_classes);
  *m.mutable_spec() = plan.spec;
  *m.mutable_result() = result;

  std::unordered_map<std::string, MixedPrecisionLayer> layer_by_name;
  for (const auto& l : net->layers()) layer_by_name.emplace(l->name(), l);

  for (const GraphNode& n : g.nodes) {
    Node* out = m.add_nodes();
    out->set_name(n.name);
    for (const auto& in : n.inputs) out->add_inputs(in);
    switch (n.op) {
      case NodeOp::kConv2d:
      case NodeOp::kLinear: {
        out->set_op(n.op == NodeOp::kConv2d ? Node::CONV2D : Node::LINEAR);
        const MixedPrecisionLayer& l = layer_by_name.at(n.name);
        if (l->searchable() && !l->pinned()) {
          return absl::FailedPreconditionError(absl::StrCat("export: layer ", n.name, " is not pinned"));
        }
        const int wb = l->searchable() ? l->weight_bits()[l->pinned_weight_index()] : l->weight_bits()[0];
        const int ab =
            l->searchable() ? l->activation_bits()[l->pinned_activation_index()] : l->activation_bits()[0];
        auto* c = out->mutable_conv();
        c->set_in_channels(n.in_channels);
        c->set_out_channels(n.out_channels);
        c->set_kernel(n.kernel);
        c->set_stride(n.stride);
        c->set_padding(n.padding);
        c->set_weight_bits(wb);
        c->set_activation_bits(ab);
        c->set_searchable(n.searchable);
        const double clip_w = l->WeightClipValue(wb);
        c->set_weight_scale(float(WeightStep(wb, clip_w)));
        auto codes = WeightCodes(l->weight, wb, clip_w).contiguous();
        c->set_weight_codes(
            std::string(reinterpret_cast<const char*>(codes.data_ptr<int8_t>()), codes.numel()));
        c->set_activation_clip(float(l->ActivationClipValue(ab)));
        if (l->bias.defined()) {
          for (float v : ToVector(l->bias)) c->add_bias(v);
        }
        break;
      }
      case NodeOp::kBatchNorm: {
        out->set_op(Node::BATCH_NORM);
        auto bn = net->batch_norm(n.name);
        const double eps = bn->options.eps();
        auto scale = bn->weight / torch::sqrt(bn->running_var + eps);
        auto shift = bn->bias - bn->running_mean * scale;
        auto* b = out->mutable_batch_norm();
        for (float v : ToVector(scale)) b->add_scale(v);
        for (float v : ToVector(shift)) b->add_shift(v);
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
        s->set_stride(n.stride);
        s->set_out_channels(n.out_channels);
        s->set_pad_before(n.pad_before);
        break;
      }
      case NodeOp::kGlobalAvgPool:
        out->set_op(Node::GLOBAL_AVG_POOL);
        break;
    }
  }
  m.set_checksum(ModelChecksum(m));
  return m;
}

std::string SerializeModel(const QuantizedModel& model) { return SerializeDeterministic(model); }

absl::Status WriteModelFile(const QuantizedModel& model, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::NotFoundError(absl::StrCat(path, ": cannot open for writing"));
    const std::string bytes = SerializeDeterministic(model);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot move ", tmp, " into place"));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizedModel> ReadModelFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open model file"));
  std::stringstream buf;
  buf << in.rdbuf();
  QuantizedModel m;
  if (!m.ParseFromString(buf.str())) {
    return absl::DataLossError(absl::StrCat(path, ": not a bpnas model (QuantizedModel does not parse)"));
  }
  if (m.format_version() != 1) {
    return absl::DataLossError(absl::StrCat(path, ": unsupported format_version ", m.format_version()));
  }
  const std::string want = ModelChecksum(m);
  if (m.checksum() != want) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch (file says ", m.checksum(),
                                            ", content hashes to ", want, "): the file is corrupt"));
  }
  return m;
}

absl::StatusOr<torch::Tensor> RunQuantizedModel(const QuantizedModel& model, const torch::Tensor& images) {
  torch::NoGradGuard guard;
  std::unordered_map<std::string, torch::Tensor> tensors;
  tensors["input"] = images;
  torch::Tensor last;
  auto input = [&](const Node& n, int k) -> absl::StatusOr<torch::Tensor> {
    if (k >= n.inputs_size())
      return absl::InvalidArgumentError(absl::StrCat("node ", n.name(), ": missing input"));
    auto it = tensors.find(n.inputs(k));
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(absl::StrCat("node ", n.name(), ": unknown input ", n.inputs(k)));
    }
    return it->second;
  };
  for (const Node& n : model.nodes()) {
    torch::Tensor y;
    BPNAS_ASSIGN_OR_RETURN(torch::Tensor x, input(n, 0));
    switch (n.op()) {
      case Node::CONV2D:
      case Node::LINEAR: {
        const auto& c = n.conv();
        const int64_t kk = n.op() == Node::CONV2D ? int64_t(c.kernel()) * c.kernel() : 1;
        const int64_t count = int64_t(c.out_channels()) * c.in_channels() * kk;
        if (int64_t(c.weight_codes().size()) != count || c.activation_bits() < 1 ||
            c.activation_bits() > 16) {
          return absl::InvalidArgumentError(
              absl::StrCat("node ", n.name(), ": weight codes or bits malformed"));
        }
        auto codes = torch::from_blob(const_cast<char*>(c.weight_codes().data()), {count}, torch::kInt8);
        auto w = codes.to(torch::kFloat).mul(c.weight_scale());
        const double step = double(c.activation_clip()) / double((1 << c.activation_bits()) - 1);
        auto xq = torch::floor(x.clamp(0.0, double(c.activation_clip())).mul(float(1.0 / step)).add(0.5f))
                      .mul(float(step));
        torch::Tensor bias;
        if (c.bias_size() > 0) bias = torch::tensor(std::vector<float>(c.bias().begin(), c.bias().end()));
        if (n.op() == Node::CONV2D) {
          w = w.reshape({c.out_channels(), c.in_channels(), c.kernel(), c.kernel()});
          y = F::conv2d(xq, w, F::Conv2dFuncOptions().stride(c.stride()).padding(c.padding()).bias(bias));
        } else {
          y = F::linear(xq.flatten(1), w.reshape({c.out_channels(), c.in_channels()}), bias);
        }
        break;
      }
      case Node::BATCH_NORM: {
        const auto& b = n.batch_norm();
        auto scale =
            torch::tensor(std::vector<float>(b.scale().begin(), b.scale().end())).view({1, -1, 1, 1});
        auto shift =
            torch::tensor(std::vector<float>(b.shift().begin(), b.shift().end())).view({1, -1, 1, 1});
        y = x * scale + shift;
        break;
      }
      case Node::RELU:
        y = torch::relu(x);
        break;
      case Node::ADD: {
        BPNAS_ASSIGN_OR_RETURN(torch::Tensor x2, input(n, 1));
        y = x + x2;
        break;
      }
      case Node::PAD_SHORTCUT: {
        using torch::indexing::None;
        using torch::indexing::Slice;
        const auto& s = n.shortcut();
        const int64_t st = s.stride();
        auto sub = x.index({Slice(), Slice(), Slice(None, None, st), Slice(None, None, st)});
        const int64_t after = int64_t(s.out_channels()) - sub.size(1) - s.pad_before();
        y = F::pad(sub, F::PadFuncOptions({0, 0, 0, 0, s.pad_before(), after}));
        break;
      }
      case Node::GLOBAL_AVG_POOL:
        y = x.mean({2, 3});
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("node ", n.name(), ": unknown op ", int(n.op())));
    }
    tensors[n.name()] = y;
    last = y;
  }
  if (!last.defined()) return absl::InvalidArgumentError("model has no nodes");
  return last;
}

absl::StatusOr<double> EvaluateQuantizedModel(const QuantizedModel& model, const Dataset& data,
                                              int batch_size) {
  if (data.size() == 0) return absl::InvalidArgumentError("evaluation data is empty");
  if (data.images.size(1) != model.input_channels() || data.images.size(2) != model.input_height() ||
      data.images.size(3) != model.input_width()) {
    return absl::InvalidArgumentError(absl::StrCat("data shape ", data.images.size(1), "x",
                                                   data.images.size(2), "x", data.images.size(3),
                                                   " does not match the model input ", model.input_channels(),
                                                   "x", model.input_height(), "x", model.input_width()));
  }
  int64_t correct = 0;
  for (int64_t i = 0; i < data.size(); i += batch_size) {
    const int64_t n = std::min<int64_t>(batch_size, data.size() - i);
    BPNAS_ASSIGN_OR_RETURN(torch::Tensor logits, RunQuantizedModel(model, data.images.narrow(0, i, n)));
    correct += logits.argmax(1).eq(data.labels.narrow(0, i, n)).sum().item<int64_t>();
  }
  return 100.0 * double(correct) / double(data.size());
}

}  // namespace bpnas
