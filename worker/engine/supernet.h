// The search network: torch modules built from a ModelGraph (graph.h).
//
// Every conv/linear node becomes a MixedPrecisionLayer (the composite layer of DESIGN.md §2): one
// convolution of the activation mixture with the weight mixture, with architecture logits alpha
// (weights) and beta (activations) when the layer is searchable. The first conv and the last linear
// are fixed at `fixed_bits`. A layer can be pinned to one bitwidth pair (derived network, uniform
// baseline, sampled warm-up); pinned layers run the same quantizers with a single branch.
//
// Not thread-safe: one Supernet per training loop.
#ifndef BPNAS_WORKER_ENGINE_SUPERNET_H_
#define BPNAS_WORKER_ENGINE_SUPERNET_H_

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/types.h>

#include "spec/graph.h"

namespace bpnas {

struct QuantOptions {
  std::vector<int> weight_bits = {2, 3, 4, 8};
  std::vector<int> activation_bits = {2, 3, 4, 8};
  int fixed_bits = 8;
  // Scale-Clip constants; 0: the per-bitwidth defaults (DefaultWeightClipK / DefaultActivationClipK),
  // > 0: this k for every bitwidth.
  double clip_weight_k = 0;
  double clip_activation_k = 0;
  double activation_ema = 0.1;  // weight of the new batch mean in the running mean
  bool fused = true;            // false: the naive per-branch expressions (bench reference)
  bool quantize = true;         // false: plain FP32 layers (bench baseline)
  // Weights phases (fine-tune, uniform training, the check's fine-tunes) and export: one weight
  // scale per output channel instead of one per tensor. The search's mixtures stay per tensor.
  bool per_channel_weights = false;
};

class MixedPrecisionLayerImpl : public torch::nn::Module {
 public:
  MixedPrecisionLayerImpl(const GraphNode& node, const QuantOptions& options);

  torch::Tensor forward(const torch::Tensor& x);
  // The weights-phase forward of a pinned (or fixed) layer: the input quantized as in forward(), the
  // weight multiplied per output channel by `fold` (a folded batch norm's gamma / sigma; undefined:
  // none) and then quantized by QuantizeFoldedWeight. What the artifact computes, up to rounding.
  torch::Tensor ForwardFolded(const torch::Tensor& x, const torch::Tensor& fold);

  // Scale-Clip on weight * fold at `bits` (clip k_w(b) * mean|w|, per tensor or per output channel):
  // the integer codes (float tensor, the weight's shape) and the step ([out] or [1]). No gradient.
  std::pair<torch::Tensor, torch::Tensor> FoldedWeightCodes(const torch::Tensor& fold, int bits) const;
  // codes * step with the straight-through gradient (1 inside the clip, 0 outside).
  torch::Tensor QuantizeFoldedWeight(const torch::Tensor& fold, int bits) const;
  // The bits a weights phase uses: the pinned pair, or the fixed layer's.
  int ActiveWeightBits() const;
  int ActiveActivationBits() const;

  bool searchable() const { return searchable_; }
  const std::string& name() const { return name_; }
  const std::vector<int>& weight_bits() const { return weight_bits_; }
  const std::vector<int>& activation_bits() const { return activation_bits_; }

  // Softmax of the logits (searchable layers); fixed layers return [1].
  torch::Tensor WeightProbs() const;
  torch::Tensor ActivationProbs() const;
  // Pins the layer to weight_bits()[wi], activation_bits()[ai]; Unpin() returns to the mixture.
  void Pin(int wi, int ai);
  void Unpin();
  bool pinned() const { return pinned_w_ >= 0; }
  int pinned_weight_index() const { return pinned_w_; }
  int pinned_activation_index() const { return pinned_a_; }
  // Sets the logits to the given values (the feasible start).
  void SetLogits(const std::vector<float>& alpha, const std::vector<float>& beta);

  // Scale-Clip's clips, one per bitwidth in `bits`: k_w(b) * mean|W| and k_a(b) * the running mean.
  std::vector<double> WeightClips(const std::vector<int>& bits) const;
  std::vector<double> ActivationClips(const std::vector<int>& bits) const;
  // The clips at one bitwidth (quantization state for export).
  double WeightClipValue(int bits) const;
  double ActivationClipValue(int bits) const;

  torch::Tensor weight, bias, alpha, beta;
  torch::Tensor activation_mean;  // running mean of the input activation (buffer, scalar)

 private:
  // The input quantization of forward() (activation mixture with its running-mean update).
  torch::Tensor QuantizeInput(const torch::Tensor& x, const std::vector<int>& bits,
                              const torch::Tensor& probs);
  torch::Tensor FoldedWeight(const torch::Tensor& fold) const;
  // FoldedWeightCodes of an already folded weight `w` (no gradient).
  std::pair<torch::Tensor, torch::Tensor> CodesOf(const torch::Tensor& w, int bits) const;

  std::string name_;
  bool is_conv_;
  int stride_, padding_;
  bool searchable_;
  std::vector<int> weight_bits_, activation_bits_;
  QuantOptions options_;
  int pinned_w_ = -1, pinned_a_ = -1;
};
TORCH_MODULE(MixedPrecisionLayer);

class SupernetImpl : public torch::nn::Module {
 public:
  SupernetImpl(const ModelGraph& graph, const QuantOptions& options);

  torch::Tensor forward(const torch::Tensor& x);

  const ModelGraph& graph() const { return graph_; }
  // Quantizable layers in execution order, and the searchable subset.
  const std::vector<MixedPrecisionLayer>& layers() const { return layers_; }
  const std::vector<MixedPrecisionLayer>& searchable_layers() const { return searchable_; }
  // Batch-norm module of a graph node (nullptr if the node is not a batch norm).
  torch::nn::BatchNorm2d batch_norm(const std::string& node_name) const;

  // Batch-norm folding (the standard quantization-aware folding) for the weights phases: each batch
  // norm that follows a conv is folded into the conv's weight before quantization, so that the
  // trained integer weights are exactly what the artifact holds. While training and not frozen, the
  // conv's output is divided back by the fold factor and normalized with the batch's statistics
  // (which update the running ones); frozen, or in eval mode, the network is the folded one:
  // conv(x, Q(w * gamma / sigma)) + beta - mu * gamma / sigma. Every searchable layer must be pinned.
  void SetBatchNormFolding(bool on) { folding_ = on; }
  bool batch_norm_folding() const { return folding_; }
  void SetBatchNormFrozen(bool frozen) { bn_frozen_ = frozen; }
  // gamma / sqrt(running_var + eps) of a batch norm (the per-channel fold factor), and
  // beta - running_mean * that (the folded bias).
  static torch::Tensor FoldScale(const torch::nn::BatchNorm2d& bn);
  static torch::Tensor FoldBias(const torch::nn::BatchNorm2d& bn);

  // Architecture logits (alpha, beta of every searchable layer) and everything else.
  std::vector<torch::Tensor> ArchitectureParameters() const;
  // Softmax of every searchable layer's logits, stacked by row: [layers, |weight_bits|] and
  // [layers, |activation_bits|]. One operator each: all searchable layers share the search space.
  torch::Tensor StackedWeightProbs() const;
  torch::Tensor StackedActivationProbs() const;
  std::vector<torch::Tensor> WeightParameters() const;
  // True for the full name (as named_parameters() gives it) of an architecture logit.
  static bool IsArchitectureParameterName(const std::string& name);

 private:
  ModelGraph graph_;
  std::vector<MixedPrecisionLayer> layers_;
  std::vector<MixedPrecisionLayer> searchable_;
  // Per node: index into layers_ (conv/linear) or bns_ (batch norm), else -1.
  std::vector<int> module_index_;
  std::vector<torch::nn::BatchNorm2d> bns_;
  std::vector<std::vector<int>> input_index_;  // per node: indices of input nodes (-1 = input)
  std::vector<int> last_use_;                  // per node: the last node that reads its output
  // Per node: a ReLU that only quantized layers read. The activation mixture clamps at 0 and passes no
  // gradient below it, so such a ReLU is the identity there and is skipped (one pass over the
  // activation forward and one backward saved).
  std::vector<bool> relu_in_quantizer_;
  // Per node: for a conv, the index into bns_ of the batch norm folded into it (-1: none); for that
  // batch norm, the node index of its conv.
  std::vector<int> folded_bn_, folded_conv_;
  bool folding_ = false, bn_frozen_ = false;

  // softmax over the stacked `logits` (alpha or beta) of every searchable layer.
  torch::Tensor StackedProbs(torch::Tensor MixedPrecisionLayerImpl::*logits) const;
};
TORCH_MODULE(Supernet);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_SUPERNET_H_
