#include "worker/engine/supernet.h"

#include <cmath>

#include <torch/nn/functional.h>
#include <torch/nn/init.h>

#include "worker/engine/quant_ops.h"

namespace bpnas {
namespace F = torch::nn::functional;

MixedPrecisionLayerImpl::MixedPrecisionLayerImpl(const GraphNode& node, const QuantOptions& options)
    : name_(node.name),
      is_conv_(node.op == NodeOp::kConv2d),
      stride_(node.stride),
      padding_(node.padding),
      searchable_(node.searchable),
      options_(options) {
  if (searchable_) {
    weight_bits_ = options.weight_bits;
    activation_bits_ = options.activation_bits;
  } else {
    weight_bits_ = {options.fixed_bits};
    activation_bits_ = {options.fixed_bits};
  }
  if (is_conv_) {
    weight = register_parameter(
        "weight", torch::empty({node.out_channels, node.in_channels, node.kernel, node.kernel}));
    torch::nn::init::kaiming_normal_(weight, 0.0, torch::kFanOut, torch::kReLU);
  } else {
    weight = register_parameter("weight", torch::empty({node.out_channels, node.in_channels}));
    const double bound = 1.0 / std::sqrt(double(node.in_channels));
    torch::nn::init::uniform_(weight, -bound, bound);
  }
  if (node.has_bias) {
    const double bound = 1.0 / std::sqrt(double(node.in_channels * node.kernel * node.kernel));
    bias = register_parameter("bias", torch::empty({node.out_channels}).uniform_(-bound, bound));
  }
  if (searchable_) {
    alpha = register_parameter("alpha", torch::zeros({int64_t(weight_bits_.size())}));
    beta = register_parameter("beta", torch::zeros({int64_t(activation_bits_.size())}));
  }
  // -1 marks "not yet seen a batch": the first training batch sets the running mean directly.
  activation_mean = register_buffer("activation_mean", torch::full({1}, -1.0f));
}

torch::Tensor MixedPrecisionLayerImpl::WeightProbs() const {
  if (!searchable_) return torch::ones({1}, weight.options());
  return torch::softmax(alpha, 0);
}

torch::Tensor MixedPrecisionLayerImpl::ActivationProbs() const {
  if (!searchable_) return torch::ones({1}, weight.options());
  return torch::softmax(beta, 0);
}

void MixedPrecisionLayerImpl::Pin(int wi, int ai) {
  TORCH_CHECK(wi >= 0 && wi < int(weight_bits_.size()) && ai >= 0 && ai < int(activation_bits_.size()),
              "Pin: bit index out of range for layer ", name_);
  pinned_w_ = wi;
  pinned_a_ = ai;
}

void MixedPrecisionLayerImpl::Unpin() { pinned_w_ = pinned_a_ = -1; }

void MixedPrecisionLayerImpl::SetLogits(const std::vector<float>& a, const std::vector<float>& b) {
  TORCH_CHECK(searchable_, "SetLogits on fixed layer ", name_);
  torch::NoGradGuard guard;
  alpha.copy_(torch::tensor(a));
  beta.copy_(torch::tensor(b));
}

namespace {

double WeightK(const QuantOptions& o, int bits) {
  return o.clip_weight_k > 0 ? o.clip_weight_k : DefaultWeightClipK(bits);
}
double ActivationK(const QuantOptions& o, int bits) {
  return o.clip_activation_k > 0 ? o.clip_activation_k : DefaultActivationClipK(bits);
}

}  // namespace

std::vector<double> MixedPrecisionLayerImpl::WeightClips(const std::vector<int>& bits) const {
  const double mean_abs_w = weight.detach().abs().mean().item<double>();  // once for every branch
  std::vector<double> clips;
  for (int b : bits) clips.push_back(std::max(WeightK(options_, b) * mean_abs_w, 1e-8));
  return clips;
}

std::vector<double> MixedPrecisionLayerImpl::ActivationClips(const std::vector<int>& bits) const {
  const double m = std::max(activation_mean.item<double>(), 0.0);
  std::vector<double> clips;
  for (int b : bits) clips.push_back(std::max(ActivationK(options_, b) * m, 1e-6));
  return clips;
}

double MixedPrecisionLayerImpl::WeightClipValue(int bits) const { return WeightClips({bits})[0]; }

double MixedPrecisionLayerImpl::ActivationClipValue(int bits) const { return ActivationClips({bits})[0]; }

torch::Tensor MixedPrecisionLayerImpl::QuantizeInput(const torch::Tensor& x, const std::vector<int>& ab,
                                                     const torch::Tensor& q) {
  if (is_training() && activation_mean.item<float>() < 0) {
    torch::NoGradGuard guard;  // first batch: start the running mean at this batch's mean
    activation_mean.fill_(x.clamp_min(0).mean().item<float>());
  }
  const std::vector<double> clip_a = ActivationClips(ab);  // one per branch
  torch::Tensor xq;
  double batch_mean = 0;
  if (options_.fused && x.is_cpu()) {  // the fused kernels are CPU code
    xq = ActivationMixture(x, q, ab, clip_a, &batch_mean);
  } else {
    if (is_training()) batch_mean = x.clamp_min(0).mean().item<double>();
    xq = ActivationMixtureReference(x, q, ab, clip_a);
  }
  if (is_training()) {
    // Scale-Clip's running mean, updated after use (the clip of this batch is the previous mean).
    torch::NoGradGuard guard;
    activation_mean.mul_(1.0 - options_.activation_ema).add_(options_.activation_ema * batch_mean);
  }
  return xq;
}

torch::Tensor MixedPrecisionLayerImpl::forward(const torch::Tensor& x) {
  if (!options_.quantize) {
    if (is_conv_) return F::conv2d(x, weight, F::Conv2dFuncOptions().stride(stride_).padding(padding_));
    return F::linear(x, weight, bias);
  }
  std::vector<int> wb = weight_bits_, ab = activation_bits_;
  torch::Tensor p, q;
  if (!searchable_) {
    p = q = torch::ones({1}, weight.options());
  } else if (pinned()) {
    wb = {weight_bits_[pinned_w_]};
    ab = {activation_bits_[pinned_a_]};
    p = q = torch::ones({1}, weight.options());
  } else {
    p = WeightProbs();
    q = ActivationProbs();
  }
  const std::vector<double> clip_w = WeightClips(wb);  // one per branch
  torch::Tensor xq = QuantizeInput(x, ab, q);
  torch::Tensor wq = (options_.fused && x.is_cpu()) ? WeightMixture(weight, p, wb, clip_w)
                                                    : WeightMixtureReference(weight, p, wb, clip_w);
  if (is_conv_) {
    return F::conv2d(xq, wq, F::Conv2dFuncOptions().stride(stride_).padding(padding_));
  }
  return F::linear(xq, wq, bias);
}

int MixedPrecisionLayerImpl::ActiveWeightBits() const {
  TORCH_CHECK(!searchable_ || pinned(), "layer ", name_, " is not pinned");
  return searchable_ ? weight_bits_[pinned_w_] : weight_bits_[0];
}

int MixedPrecisionLayerImpl::ActiveActivationBits() const {
  TORCH_CHECK(!searchable_ || pinned(), "layer ", name_, " is not pinned");
  return searchable_ ? activation_bits_[pinned_a_] : activation_bits_[0];
}

torch::Tensor MixedPrecisionLayerImpl::FoldedWeight(const torch::Tensor& fold) const {
  if (!fold.defined()) return weight;
  return is_conv_ ? weight * fold.view({-1, 1, 1, 1}) : weight * fold.view({-1, 1});
}

namespace {

// The clip/step tensor shaped to broadcast over the weight: [out, 1, 1, 1] ([out, 1]) or [1].
torch::Tensor Broadcastable(const torch::Tensor& per_row, const torch::Tensor& w) {
  if (per_row.numel() == 1) return per_row.reshape({1});
  std::vector<int64_t> shape(size_t(w.dim()), 1);
  shape[0] = -1;
  return per_row.view(shape);
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> MixedPrecisionLayerImpl::FoldedWeightCodes(const torch::Tensor& fold,
                                                                                   int bits) const {
  torch::NoGradGuard guard;
  return CodesOf(FoldedWeight(fold), bits);
}

std::pair<torch::Tensor, torch::Tensor> MixedPrecisionLayerImpl::CodesOf(const torch::Tensor& w,
                                                                         int bits) const {
  torch::NoGradGuard guard;
  const torch::Tensor wf = w.detach();
  const torch::Tensor mean_abs =
      options_.per_channel_weights ? wf.abs().flatten(1).mean(1) : wf.abs().mean().reshape({1});
  const torch::Tensor clip = (mean_abs * WeightK(options_, bits)).clamp_min(1e-8);
  const torch::Tensor step = clip / double((1 << (bits - 1)) - 1);
  const torch::Tensor c = Broadcastable(clip, wf), s = Broadcastable(step, wf);
  const torch::Tensor codes = torch::floor(torch::maximum(torch::minimum(wf, c), -c) / s + 0.5);
  return {codes, step};
}

torch::Tensor MixedPrecisionLayerImpl::QuantizeFoldedWeight(const torch::Tensor& fold, int bits) const {
  const torch::Tensor wf = FoldedWeight(fold);
  auto [codes, step] = CodesOf(wf, bits);
  torch::Tensor c;
  {
    torch::NoGradGuard guard;
    c = Broadcastable(step * double((1 << (bits - 1)) - 1), wf);
  }
  const torch::Tensor clipped = torch::maximum(torch::minimum(wf, c), -c);  // gradient 1 inside only
  return clipped + (codes * Broadcastable(step, wf) - clipped).detach();
}

torch::Tensor MixedPrecisionLayerImpl::ForwardFolded(const torch::Tensor& x, const torch::Tensor& fold) {
  const int ab = ActiveActivationBits(), wb = ActiveWeightBits();
  torch::Tensor xq = QuantizeInput(x, {ab}, torch::ones({1}, weight.options()));
  torch::Tensor wq = QuantizeFoldedWeight(fold, wb);
  if (is_conv_) return F::conv2d(xq, wq, F::Conv2dFuncOptions().stride(stride_).padding(padding_));
  return F::linear(xq, wq, bias);
}

SupernetImpl::SupernetImpl(const ModelGraph& graph, const QuantOptions& options) : graph_(graph) {
  // torch module names may not contain dots; graph names do ("layer1.0.conv1").
  auto module_name = [](std::string name) {
    for (char& c : name)
      if (c == '.') c = '_';
    return name;
  };
  std::unordered_map<std::string, int> index_of;
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const GraphNode& n = graph_.nodes[i];
    std::vector<int> in;
    for (const std::string& name : n.inputs) {
      if (name == "input") {
        in.push_back(-1);
      } else {
        auto it = index_of.find(name);
        TORCH_CHECK(it != index_of.end(), "graph node ", n.name, " reads unknown tensor ", name);
        in.push_back(it->second);
      }
    }
    input_index_.push_back(in);
    index_of[n.name] = int(i);
    int module = -1;
    if (n.op == NodeOp::kConv2d || n.op == NodeOp::kLinear) {
      module = int(layers_.size());
      layers_.push_back(register_module(module_name(n.name), MixedPrecisionLayer(n, options)));
      if (n.searchable) searchable_.push_back(layers_.back());
    } else if (n.op == NodeOp::kBatchNorm) {
      module = int(bns_.size());
      bns_.push_back(register_module(module_name(n.name), torch::nn::BatchNorm2d(n.out_channels)));
    }
    module_index_.push_back(module);
  }
  last_use_.assign(graph_.nodes.size(), -1);
  std::vector<int> readers(graph_.nodes.size(), 0), layer_readers(graph_.nodes.size(), 0);
  for (size_t i = 0; i < input_index_.size(); ++i) {
    const bool layer = graph_.nodes[i].op == NodeOp::kConv2d || graph_.nodes[i].op == NodeOp::kLinear;
    for (int in : input_index_[i]) {
      if (in < 0) continue;
      last_use_[in] = int(i);
      ++readers[in];
      if (layer) ++layer_readers[in];
    }
  }
  folded_bn_.assign(graph_.nodes.size(), -1);
  folded_conv_.assign(graph_.nodes.size(), -1);
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (graph_.nodes[i].op != NodeOp::kBatchNorm) continue;
    const int conv = input_index_[i][0];
    if (conv >= 0 && graph_.nodes[size_t(conv)].op == NodeOp::kConv2d && readers[size_t(conv)] == 1) {
      folded_bn_[size_t(conv)] = module_index_[i];
      folded_conv_[i] = conv;
    }
  }
  relu_in_quantizer_.assign(graph_.nodes.size(), false);
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    relu_in_quantizer_[i] = options.quantize && graph_.nodes[i].op == NodeOp::kRelu && readers[i] > 0 &&
                            readers[i] == layer_readers[i];
  }
}

torch::nn::BatchNorm2d SupernetImpl::batch_norm(const std::string& node_name) const {
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (graph_.nodes[i].name == node_name && graph_.nodes[i].op == NodeOp::kBatchNorm) {
      return bns_[module_index_[i]];
    }
  }
  return nullptr;
}

torch::Tensor SupernetImpl::FoldScale(const torch::nn::BatchNorm2d& bn) {
  return bn->weight / torch::sqrt(bn->running_var + bn->options.eps());
}

torch::Tensor SupernetImpl::FoldBias(const torch::nn::BatchNorm2d& bn) {
  return bn->bias - bn->running_mean * FoldScale(bn);
}

torch::Tensor SupernetImpl::forward(const torch::Tensor& x) {
  std::vector<torch::Tensor> out(graph_.nodes.size());
  std::vector<torch::Tensor> fold(folding_ ? graph_.nodes.size() : 0);  // per conv: its fold factor
  auto in = [&](size_t node, size_t k) -> const torch::Tensor& {
    const int idx = input_index_[node][k];
    return idx < 0 ? x : out[idx];
  };
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const GraphNode& n = graph_.nodes[i];
    switch (n.op) {
      case NodeOp::kConv2d:
      case NodeOp::kLinear:
        if (folding_) {
          if (folded_bn_[i] >= 0) fold[i] = FoldScale(bns_[size_t(folded_bn_[i])]);
          out[i] = layers_[module_index_[i]]->ForwardFolded(in(i, 0), fold[i]);
        } else {
          out[i] = layers_[module_index_[i]]->forward(in(i, 0));
        }
        break;
      case NodeOp::kBatchNorm: {
        auto& bn = bns_[size_t(module_index_[i])];
        const int conv = folded_conv_[i];
        if (!folding_ || conv < 0) {
          out[i] = bn->forward(in(i, 0));
        } else if (is_training() && !bn_frozen_) {
          out[i] = bn->forward(in(i, 0) / fold[size_t(conv)].view({1, -1, 1, 1}));
        } else {
          out[i] = in(i, 0) + FoldBias(bn).view({1, -1, 1, 1});
        }
        break;
      }
      case NodeOp::kRelu:
        out[i] = relu_in_quantizer_[i] ? in(i, 0) : torch::relu(in(i, 0));
        break;
      case NodeOp::kAdd:
        out[i] = in(i, 0) + in(i, 1);
        break;
      case NodeOp::kPadShortcut: {
        using torch::indexing::None;
        using torch::indexing::Slice;
        auto sub =
            in(i, 0).index({Slice(), Slice(), Slice(None, None, n.stride), Slice(None, None, n.stride)});
        const int64_t after = n.out_channels - n.in_channels - n.pad_before;
        out[i] = F::pad(sub, F::PadFuncOptions({0, 0, 0, 0, n.pad_before, after}));
        break;
      }
      case NodeOp::kGlobalAvgPool:
        out[i] = in(i, 0).mean({2, 3});
        break;
    }
    // Drop outputs no later node reads (autograd keeps what backward needs on its own).
    for (int in : input_index_[i]) {
      if (in >= 0 && last_use_[in] == int(i)) out[in] = torch::Tensor();
    }
  }
  return out.back();
}

std::vector<torch::Tensor> SupernetImpl::ArchitectureParameters() const {
  std::vector<torch::Tensor> params;
  for (const auto& l : searchable_) {
    params.push_back(l->alpha);
    params.push_back(l->beta);
  }
  return params;
}

torch::Tensor SupernetImpl::StackedProbs(torch::Tensor MixedPrecisionLayerImpl::*logits) const {
  TORCH_CHECK(!searchable_.empty(), "stacked probabilities: the network has no searchable layer");
  std::vector<torch::Tensor> rows;
  for (const auto& l : searchable_) rows.push_back((*l).*logits);
  return torch::softmax(torch::stack(rows), 1);
}

torch::Tensor SupernetImpl::StackedWeightProbs() const {
  return StackedProbs(&MixedPrecisionLayerImpl::alpha);
}

torch::Tensor SupernetImpl::StackedActivationProbs() const {
  return StackedProbs(&MixedPrecisionLayerImpl::beta);
}

bool SupernetImpl::IsArchitectureParameterName(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".alpha") || ends_with(".beta");
}

std::vector<torch::Tensor> SupernetImpl::WeightParameters() const {
  std::vector<torch::Tensor> params;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (!IsArchitectureParameterName(item.key())) params.push_back(item.value());
  }
  return params;
}

}  // namespace bpnas
