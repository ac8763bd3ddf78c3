#include "worker/engine/data_parallel.h"

#include <algorithm>
#include <cmath>

#include "worker/engine/collective.h"

namespace bpnas {
namespace {

torch::Device DeviceOf(Supernet& net) { return net->parameters().front().device(); }

// Correct predictions of `net` (eval mode) on every stride-th sample of `data` from `first`, and
// how many samples that is.
std::pair<int64_t, int64_t> CountCorrect(Supernet& net, const Dataset& data, int64_t first, int64_t stride,
                                         int batch_size) {
  torch::NoGradGuard guard;
  net->eval();
  auto images = data.images.slice(0, first, data.size(), stride);
  auto labels = data.labels.slice(0, first, data.size(), stride);
  const int64_t n = labels.size(0);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; i += batch_size) {
    const int64_t b = std::min<int64_t>(batch_size, n - i);
    auto logits = net->forward(images.narrow(0, i, b).to(DeviceOf(net)));
    correct += logits.argmax(1).cpu().eq(labels.narrow(0, i, b)).sum().item<int64_t>();
  }
  return {correct, n};
}

// `values` summed element-wise over the ranks.
std::vector<double> SumAcrossRanks(const std::vector<double>& values, const RunOptions& options) {
  if (WorldSize(options) == 1) return values;
  std::vector<torch::Tensor> t = {torch::tensor(values, torch::kDouble).to(options.device)};
  absl::Status st = options.collective->AllReduceSum(t);
  if (!st.ok()) throw CollectiveFailed{st};
  const auto c = t[0].cpu();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// 100 * correct / seen, with both counts summed over the ranks.
double PercentAcrossRanks(int64_t correct, int64_t seen, const RunOptions& options) {
  const auto c = SumAcrossRanks({double(correct), double(seen)}, options);
  return c[1] == 0 ? 0.0 : 100.0 * c[0] / c[1];
}

}  // namespace

int WorldSize(const RunOptions& options) { return options.collective ? options.collective->world_size() : 1; }
int Rank(const RunOptions& options) { return options.collective ? options.collective->rank() : 0; }

void SyncStep(Supernet& net, const std::vector<torch::Tensor>& params, const RunOptions& options) {
  if (WorldSize(options) == 1) return;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : params) {
    if (!p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad() = torch::zeros_like(p);
    tensors.push_back(p.grad());
  }
  for (const auto& b : net->buffers()) {
    if (b.is_floating_point()) tensors.push_back(b);
  }
  absl::Status st = options.collective->AllReduceMean(tensors);
  if (!st.ok()) throw CollectiveFailed{st};
}

void BroadcastNetwork(Supernet& net, const RunOptions& options) {
  if (WorldSize(options) == 1) return;
  torch::NoGradGuard guard;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : net->parameters()) tensors.push_back(p.detach());
  for (const auto& b : net->buffers()) tensors.push_back(b);
  absl::Status st = options.collective->Broadcast(tensors, 0);
  if (!st.ok()) throw CollectiveFailed{st};
}

torch::Tensor Shard(const torch::Tensor& indices, const RunOptions& options) {
  const int world = WorldSize(options);
  if (world == 1) return indices;
  const int64_t per_rank = indices.size(0) / world;
  return indices.slice(0, Rank(options), indices.size(0), world).narrow(0, 0, per_rank);
}

std::pair<torch::Tensor, torch::Tensor> Batch(const Dataset& data, const torch::Tensor& idx,
                                              torch::Device device) {
  return {data.images.index_select(0, idx).to(device), data.labels.index_select(0, idx).to(device)};
}

double Evaluate(Supernet& net, const Dataset& data, int batch_size) {
  const auto [correct, seen] = CountCorrect(net, data, 0, 1, batch_size);
  return seen == 0 ? 0.0 : 100.0 * double(correct) / double(seen);
}

double EvaluateAcrossRanks(Supernet& net, const Dataset& data, const RunOptions& options) {
  if (WorldSize(options) == 1) return Evaluate(net, data);
  const auto [correct, seen] = CountCorrect(net, data, Rank(options), WorldSize(options), 500);
  return PercentAcrossRanks(correct, seen, options);
}

torch::Tensor CorrectOn(Supernet& net, const Dataset& data, const torch::Tensor& idx,
                        const RunOptions& options) {
  torch::NoGradGuard guard;
  net->eval();
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < idx.size(0); i += 500) {
    auto part = idx.narrow(0, i, std::min<int64_t>(500, idx.size(0) - i));
    auto [x, y] = Batch(data, part, options.device);
    parts.push_back(net->forward(x).argmax(1).eq(y).cpu());
  }
  return parts.empty() ? torch::zeros({0}, torch::kBool) : torch::cat(parts);
}

PairedScore PairedAcrossRanks(const torch::Tensor& a, const torch::Tensor& b, const RunOptions& options) {
  const auto c = SumAcrossRanks(
      {a.sum().item<double>(), b.sum().item<double>(), (a != b).sum().item<double>(), double(a.size(0))},
      options);
  const double n = c[3];
  if (n == 0) return {};
  return {100.0 * c[0] / n, 100.0 * c[1] / n, 100.0 * std::sqrt(c[2]) / n};
}

}  // namespace bpnas
