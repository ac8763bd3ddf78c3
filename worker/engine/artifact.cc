#include "worker/engine/artifact.h"

#include <chrono>
#include <cmath>
#include <unordered_map>

#include <torch/nn/functional.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "artifact/builder.h"
#include "artifact/integer_inference.h"
#include "artifact/packing.h"
#include "artifact/validate.h"
#include "common/status.h"
#include "worker/engine/quant_ops.h"
#include "worker/engine/torch_guard.h"

namespace bpnas {
namespace {

namespace F = torch::nn::functional;
using bpnas::v1::Node;
using bpnas::v1::QuantizedConv;
using bpnas::v1::QuantizedModel;

// The index of the first largest of n values.
template <typename T>
int64_t ArgMax(const T* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (v[i] > v[best]) best = i;
  }
  return best;
}

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<float> ToVector(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).to(torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

absl::StatusOr<QuantizedModel> ExportQuantizedModel(const Supernet& net, const JobPlan& plan,
                                                    const bpnas::v1::SearchResult& result) {
  torch::NoGradGuard guard;
  QuantizedModel m;
  SetModelHeader(net->graph(), &m);
  *m.mutable_spec() = plan.spec;
  *m.mutable_result() = result;

  std::unordered_map<std::string, MixedPrecisionLayer> layer_by_name;
  for (const auto& l : net->layers()) layer_by_name.emplace(l->name(), l);
  auto fill = [&](const GraphNode& n, const GraphNode* bn_node, QuantizedConv* c) -> absl::Status {
    const MixedPrecisionLayer& l = layer_by_name.at(n.name);
    if (l->searchable() && !l->pinned()) {
      return absl::FailedPreconditionError(absl::StrCat("export: layer ", n.name, " is not pinned"));
    }
    const int wb = l->ActiveWeightBits(), ab = l->ActiveActivationBits();
    torch::Tensor fold, bias;
    if (bn_node != nullptr) {
      auto bn = net->batch_norm(bn_node->name);
      fold = SupernetImpl::FoldScale(bn);
      bias = SupernetImpl::FoldBias(bn);
      if (l->bias.defined()) bias = bias + l->bias * fold;
    } else if (l->bias.defined()) {
      bias = l->bias;
    }
    auto [codes, step] = l->FoldedWeightCodes(fold, wb);
    const torch::Tensor codes8 = codes.to(torch::kCPU).to(torch::kInt8).contiguous();
    std::vector<int8_t> code_vec(codes8.data_ptr<int8_t>(), codes8.data_ptr<int8_t>() + codes8.numel());
    SetWeights(code_vec, wb, ToVector(step), c);
    SetActivation(ab, l->ActivationClipValue(ab), c);
    if (bias.defined()) {
      for (float v : ToVector(bias)) c->add_bias(v);
    }
    return absl::OkStatus();
  };
  BPNAS_RETURN_IF_ERROR(AppendFoldedNodes(net->graph(), fill, &m));
  m.set_checksum(ModelChecksum(m));
  BPNAS_RETURN_IF_ERROR(ValidateModel(m).status());
  return m;
}

namespace {

absl::StatusOr<torch::Tensor> RunQuantizedModelUnguarded(const QuantizedModel& model,
                                                         const torch::Tensor& images) {
  BPNAS_ASSIGN_OR_RETURN(const ModelLayout layout, ValidateModel(model));
  if (images.dim() != 4 || images.size(1) != layout.input.channels || images.size(2) != layout.input.height ||
      images.size(3) != layout.input.width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "images of shape [", absl::StrJoin(images.sizes().vec(), ", "), "] do not fit the model input [N, ",
        layout.input.channels, ", ", layout.input.height, ", ", layout.input.width, "]"));
  }
  torch::NoGradGuard guard;
  std::vector<torch::Tensor> out(size_t(model.nodes_size()));
  auto in = [&](int node, int k) -> const torch::Tensor& {
    const int from = layout.inputs[size_t(node)][size_t(k)];
    return from < 0 ? images : out[size_t(from)];
  };
  for (int i = 0; i < model.nodes_size(); ++i) {
    const Node& n = model.nodes(i);
    const torch::Tensor& x = in(i, 0);
    torch::Tensor y;
    switch (n.op()) {
      case Node::CONV2D:
      case Node::LINEAR: {
        const QuantizedConv& c = n.conv();
        const bool conv = n.op() == Node::CONV2D;
        const int64_t kk = conv ? int64_t(c.kernel()) * c.kernel() : 1;
        const int64_t count = int64_t(c.out_channels()) * c.in_channels() * kk;
        auto codes = torch::empty({count}, torch::kInt8);
        BPNAS_RETURN_IF_ERROR(
            UnpackCodes(c.weight_packed(), int(c.weight_bits()), count, codes.data_ptr<int8_t>()));
        auto scales = torch::tensor(std::vector<float>(c.weight_scales().begin(), c.weight_scales().end()));
        auto w = codes.to(torch::kFloat).view({int64_t(c.out_channels()), -1}) *
                 (scales.numel() == 1 ? scales.view({1, 1}) : scales.view({-1, 1}));
        const float step = c.activation_scale();
        const double levels = double((1 << c.activation_bits()) - 1);
        auto xq = torch::floor(x.mul(1.0f / step).add(0.5f)).clamp(0.0, levels).mul(step);
        torch::Tensor bias;
        if (c.bias_size() > 0) bias = torch::tensor(std::vector<float>(c.bias().begin(), c.bias().end()));
        if (conv) {
          w = w.reshape({c.out_channels(), c.in_channels(), c.kernel(), c.kernel()});
          y = F::conv2d(xq, w, F::Conv2dFuncOptions().stride(c.stride()).padding(c.padding()).bias(bias));
        } else {
          y = F::linear(xq.flatten(1), w, bias);
        }
        break;
      }
      case Node::RELU:
        y = torch::relu(x);
        break;
      case Node::ADD:
        y = x + in(i, 1);
        break;
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
        y = x.mean({2, 3}, /*keepdim=*/true);
        break;
      default:  // ValidateModel admits no other op
        return absl::InternalError(absl::StrCat("node ", n.name(), ": unknown op"));
    }
    out[size_t(i)] = y;
  }
  return out.back().flatten(1);
}

}  // namespace

absl::StatusOr<torch::Tensor> RunQuantizedModel(const QuantizedModel& model, const torch::Tensor& images) {
  return GuardTorch("fake-quantized inference", [&] { return RunQuantizedModelUnguarded(model, images); });
}

absl::StatusOr<std::vector<int64_t>> PredictQuantizedModel(const QuantizedModel& model,
                                                           const torch::Tensor& images, int batch_size) {
  if (batch_size < 1) return absl::InvalidArgumentError("batch size must be positive");
  std::vector<int64_t> predictions;
  predictions.reserve(size_t(images.size(0)));
  for (int64_t i = 0; i < images.size(0); i += batch_size) {
    const int64_t n = std::min<int64_t>(batch_size, images.size(0) - i);
    BPNAS_ASSIGN_OR_RETURN(torch::Tensor logits, RunQuantizedModel(model, images.narrow(0, i, n)));
    const torch::Tensor classes = logits.argmax(1).to(torch::kInt64).contiguous();
    predictions.insert(predictions.end(), classes.data_ptr<int64_t>(), classes.data_ptr<int64_t>() + n);
  }
  return predictions;
}

absl::StatusOr<double> EvaluateQuantizedModel(const QuantizedModel& model, const Dataset& data,
                                              int batch_size, std::vector<int64_t>* predictions) {
  if (data.size() == 0) return absl::InvalidArgumentError("evaluation data is empty");
  if (data.images.size(1) != model.input_channels() || data.images.size(2) != model.input_height() ||
      data.images.size(3) != model.input_width()) {
    return absl::InvalidArgumentError(absl::StrCat("data shape ", data.images.size(1), "x",
                                                   data.images.size(2), "x", data.images.size(3),
                                                   " does not match the model input ", model.input_channels(),
                                                   "x", model.input_height(), "x", model.input_width()));
  }
  BPNAS_ASSIGN_OR_RETURN(std::vector<int64_t> classes, PredictQuantizedModel(model, data.images, batch_size));
  const torch::Tensor labels = data.labels.to(torch::kInt64).contiguous();
  int64_t correct = 0;
  for (size_t i = 0; i < classes.size(); ++i) correct += classes[i] == labels.data_ptr<int64_t>()[i];
  if (predictions != nullptr) *predictions = std::move(classes);
  return 100.0 * double(correct) / double(data.size());
}

absl::StatusOr<IntegerComparison> CompareIntegerInference(const QuantizedModel& model, const Dataset& data,
                                                          int batch_size, int threads) {
  if (data.size() == 0) return absl::InvalidArgumentError("evaluation data is empty");
  if (batch_size < 1) return absl::InvalidArgumentError("batch size must be >= 1");
  BPNAS_ASSIGN_OR_RETURN(const IntegerModel net, IntegerModel::Build(model));
  const int64_t n = data.size(), classes = net.num_classes();
  if (data.images.dim() != 4 || data.images.size(0) != n || data.images.size(1) != model.input_channels() ||
      data.images.size(2) != model.input_height() || data.images.size(3) != model.input_width()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data shape ", absl::StrJoin(data.images.sizes().vec(), "x"), " does not match the model input N x ",
        model.input_channels(), "x", model.input_height(), "x", model.input_width()));
  }
  std::vector<uint8_t> pixels(size_t(n * net.input_size()));
  torch::Tensor images;
  torch::Tensor labels;
  BPNAS_RETURN_IF_ERROR(GuardTorch("integer comparison", [&]() -> absl::Status {
    const torch::Tensor p = data.images.detach().to(torch::kCPU).to(torch::kFloat).contiguous();
    const float* x = p.data_ptr<float>();
    for (size_t i = 0; i < pixels.size(); ++i) {
      const float v = std::nearbyint(std::clamp(x[i], 0.0f, 1.0f) * 255.0f);
      pixels[i] = uint8_t(v);
    }
    images =
        torch::from_blob(pixels.data(), {n, data.images.size(1), data.images.size(2), data.images.size(3)},
                         torch::kUInt8)
            .to(torch::kFloat)
            .div(255.0f);
    labels = data.labels.to(torch::kCPU).to(torch::kLong).contiguous();
    return absl::OkStatus();
  }));

  IntegerComparison r;
  r.samples = n;
  r.logit_scale = net.logit_scale();
  std::vector<int32_t> int_logits(size_t(n * classes));
  auto t0 = std::chrono::steady_clock::now();
  net.Run(pixels.data(), n, int_logits.data(), threads);
  r.integer_seconds = SecondsSince(t0);

  std::vector<float> float_logits(size_t(n * classes));
  t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; i += batch_size) {
    const int64_t b = std::min<int64_t>(batch_size, n - i);
    BPNAS_ASSIGN_OR_RETURN(torch::Tensor logits, RunQuantizedModel(model, images.narrow(0, i, b)));
    BPNAS_RETURN_IF_ERROR(GuardTorch("fake-quantized inference", [&]() -> absl::Status {
      const torch::Tensor l = logits.to(torch::kFloat).contiguous();
      std::copy(l.data_ptr<float>(), l.data_ptr<float>() + b * classes, float_logits.begin() + i * classes);
      return absl::OkStatus();
    }));
  }
  r.float_seconds = SecondsSince(t0);

  const int64_t* label = labels.data_ptr<int64_t>();
  int64_t int_correct = 0, float_correct = 0, same = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* li = int_logits.data() + i * classes;
    const float* lf = float_logits.data() + i * classes;
    const int64_t ci = ArgMax(li, classes), cf = ArgMax(lf, classes);
    int_correct += ci == label[i];
    float_correct += cf == label[i];
    same += ci == cf;
    for (int64_t k = 0; k < classes; ++k) {
      r.max_abs_logit_difference =
          std::max(r.max_abs_logit_difference, std::fabs(double(li[k]) * r.logit_scale - double(lf[k])));
    }
  }
  r.integer_accuracy = 100.0 * double(int_correct) / double(n);
  r.float_accuracy = 100.0 * double(float_correct) / double(n);
  r.agreement = 100.0 * double(same) / double(n);
  return r;
}

}  // namespace bpnas
