#include "worker/engine/supernet.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>
#include <torch/nn/functional.h>
#include <torch/optim/sgd.h>

#include "worker/engine/artifact.h"
#include "worker/engine/search.h"

namespace bpnas {
namespace {

JobPlan Plan(const std::string& model, const std::string& metric, double relative_bits) {
  bpnas::v1::JobSpec spec;
  spec.mutable_model()->set_name(model);
  spec.mutable_dataset()->set_kind("synthetic");
  spec.mutable_constraint()->set_metric(metric == "SIZE" ? bpnas::v1::SIZE : bpnas::v1::BITOPS);
  spec.mutable_constraint()->set_max_relative_to_uniform_bits(relative_bits);
  auto plan = PlanJob(spec);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *plan;
}

TEST(Supernet, LayersFollowTheGraphsLayerTable) {
  JobPlan plan = Plan("resnet20", "BITOPS", 4);
  Supernet net(plan.graph, QuantOptionsFor(plan.spec));
  auto table = plan.graph.Layers();
  ASSERT_EQ(net->layers().size(), table.size());
  for (size_t i = 0; i < table.size(); ++i) {
    EXPECT_EQ(net->layers()[i]->name(), table[i].name);
    EXPECT_EQ(net->layers()[i]->weight.numel(), int64_t(table[i].params)) << table[i].name;
    EXPECT_EQ(net->layers()[i]->searchable(), table[i].searchable);
  }
  EXPECT_EQ(net->ArchitectureParameters().size(), 2 * net->searchable_layers().size());
  auto y = net->forward(torch::rand({2, 1, 16, 16}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 4}));
}

TEST(Supernet, ExpectedCostEqualsExactCostForOneHotProbabilities) {
  for (const char* metric : {"BITOPS", "SIZE"}) {
    JobPlan plan = Plan("resnet20", metric, 4);
    Supernet net(plan.graph, QuantOptionsFor(plan.spec));
    std::vector<int> wb, ab;
    int i = 0;
    for (auto l : net->searchable_layers()) {
      const int wi = i % 4, ai = (i / 3) % 4;
      std::vector<float> alpha(4, -100.f), beta(4, -100.f);
      alpha[wi] = 100.f;
      beta[ai] = 100.f;
      l->SetLogits(alpha, beta);
      wb.push_back(l->weight_bits()[wi]);
      ab.push_back(l->activation_bits()[ai]);
      ++i;
    }
    const double ratio = ExpectedCostRatio(net, plan.cost_model, plan.budget).item<double>();
    EXPECT_NEAR(ratio * plan.budget, plan.cost_model.Exact(wb, ab), 1e-4 * plan.budget) << metric;
  }
}

// The expected cost of `net`'s current probabilities, computed here from the layer table and each
// layer's softmax in doubles, independently of ExpectedCostRatio and CostModel::Expected: the sum
// over layers of MACs x E[b_w] x E[b_a] (BITOPS) or params x E[b_w] (SIZE), fixed layers at 8 bits.
double IndependentExpectedCost(const Supernet& net, const JobPlan& plan) {
  const auto table = plan.graph.Layers();
  const bool size = plan.metric == CostMetricKind::kSize;
  double total = 0;
  size_t s = 0;
  for (const auto& info : table) {
    if (!info.searchable) {
      total += size ? info.params * 8 : info.macs * 8 * 8;
      continue;
    }
    const auto& l = net->searchable_layers()[s++];
    const auto p = l->WeightProbs().to(torch::kDouble), q = l->ActivationProbs().to(torch::kDouble);
    double ew = 0, ea = 0;
    for (size_t j = 0; j < l->weight_bits().size(); ++j) ew += p[j].item<double>() * l->weight_bits()[j];
    for (size_t j = 0; j < l->activation_bits().size(); ++j)
      ea += q[j].item<double>() * l->activation_bits()[j];
    total += size ? info.params * ew : info.macs * ew * ea;
  }
  EXPECT_EQ(s, net->searchable_layers().size());
  return total;
}

TEST(Supernet, FeasibleStartLandsAtTheStartRatioInsideTheBudget) {
  for (const char* metric : {"BITOPS", "SIZE"}) {
    for (double bits : {2.5, 3.0, 4.0, 6.0}) {
      JobPlan plan = Plan("resnet20", metric, bits);
      Supernet net(plan.graph, QuantOptionsFor(plan.spec));
      SetFeasibleStart(net, plan.cost_model, plan.budget, 0.95);
      // Measured from the probabilities the start left in the layers, not with the function it
      // bisects on.
      EXPECT_NEAR(IndependentExpectedCost(net, plan) / plan.budget, 0.95, 2e-3) << metric << " " << bits;
      // And not by leaving the distributions uniform or one-hot: a soft peak.
      const auto p = net->searchable_layers()[0]->WeightProbs();
      EXPECT_LT(p.max().item<double>(), 0.999) << metric << " " << bits;
    }
  }
}

// E[cost] at soft probabilities is the probability-weighted sum of the exact cost over every
// configuration (the choices are independent). Enumerated here configuration by configuration for
// the layers left soft (the others one-hot), and the gradient of the torch expression with respect
// to every logit checked against central finite differences of that enumeration.
TEST(Supernet, ExpectedCostAtSoftProbabilitiesMatchesEnumerationWithItsGradient) {
  for (const char* model : {"tiny", "resnet20"}) {
    for (const char* metric : {"BITOPS", "SIZE"}) {
      JobPlan plan = Plan(model, metric, 4);
      Supernet net(plan.graph, QuantOptionsFor(plan.spec));
      auto layers = net->searchable_layers();
      const size_t soft = std::min<size_t>(3, layers.size());  // 16^3 configurations at most
      torch::manual_seed(7);
      std::vector<std::vector<double>> alpha(layers.size()), beta(layers.size());
      for (size_t i = 0; i < layers.size(); ++i) {
        const size_t nw = layers[i]->weight_bits().size(), na = layers[i]->activation_bits().size();
        for (size_t j = 0; j < nw; ++j)
          alpha[i].push_back(i < soft ? torch::randn({}).item<double>() : (j == i % nw ? 100 : -100));
        for (size_t j = 0; j < na; ++j)
          beta[i].push_back(i < soft ? torch::randn({}).item<double>() : (j == (i + 1) % na ? 100 : -100));
      }
      auto set = [&] {
        for (size_t i = 0; i < layers.size(); ++i) {
          layers[i]->SetLogits(std::vector<float>(alpha[i].begin(), alpha[i].end()),
                               std::vector<float>(beta[i].begin(), beta[i].end()));
        }
      };
      auto softmax = [](const std::vector<double>& z) {
        double m = *std::max_element(z.begin(), z.end()), sum = 0;
        std::vector<double> p;
        for (double v : z) p.push_back(std::exp(v - m));
        for (double v : p) sum += v;
        for (double& v : p) v /= sum;
        return p;
      };
      // Brute force: every combination of the soft layers' (weight, activation) choices.
      auto enumerate = [&]() {
        std::vector<int> wb(layers.size()), ab(layers.size());
        for (size_t i = soft; i < layers.size(); ++i) {
          wb[i] = layers[i]->weight_bits()[i % layers[i]->weight_bits().size()];
          ab[i] = layers[i]->activation_bits()[(i + 1) % layers[i]->activation_bits().size()];
        }
        double expected = 0;
        std::function<void(size_t, double)> walk = [&](size_t i, double prob) {
          if (i == soft) {
            expected += prob * plan.cost_model.Exact(wb, ab);
            return;
          }
          const auto p = softmax(alpha[i]), q = softmax(beta[i]);
          for (size_t a = 0; a < p.size(); ++a) {
            for (size_t b = 0; b < q.size(); ++b) {
              wb[i] = layers[i]->weight_bits()[a];
              ab[i] = layers[i]->activation_bits()[b];
              walk(i + 1, prob * p[a] * q[b]);
            }
          }
        };
        walk(0, 1.0);
        return expected / plan.budget;
      };
      set();
      for (auto p : net->ArchitectureParameters()) {
        p.set_requires_grad(true);
        p.mutable_grad() = torch::Tensor();
      }
      auto ratio = ExpectedCostRatio(net, plan.cost_model, plan.budget);
      ratio.backward();
      const double brute = enumerate();
      EXPECT_NEAR(ratio.item<double>(), brute, 1e-5 * brute) << model << " " << metric;
      const double h = 1e-3;
      for (size_t i = 0; i < soft; ++i) {
        for (int kind = 0; kind < 2; ++kind) {
          auto& z = kind == 0 ? alpha[i] : beta[i];
          const auto& logits = kind == 0 ? layers[i]->alpha : layers[i]->beta;
          // Under SIZE the activations cost nothing: no gradient reaches beta (zero, as the
          // enumeration must find).
          const bool size_beta = kind == 1 && std::string(metric) == "SIZE";
          ASSERT_TRUE(logits.grad().defined() || size_beta);
          const auto grad = logits.grad().defined() ? logits.grad() : torch::zeros_like(logits);
          for (size_t j = 0; j < z.size(); ++j) {
            const double keep = z[j];
            z[j] = keep + h;
            const double up = enumerate();
            z[j] = keep - h;
            const double down = enumerate();
            z[j] = keep;
            const double numeric = (up - down) / (2 * h);
            EXPECT_NEAR(grad[int64_t(j)].item<double>(), numeric, 1e-3 * std::abs(brute) + 1e-6)
                << model << " " << metric << " layer " << i << (kind == 0 ? " alpha " : " beta ") << j;
          }
        }
      }
    }
  }
}

TEST(Supernet, RepairLowersBitsUntilTheBudgetHolds) {
  JobPlan plan = Plan("resnet20", "BITOPS", 3);
  Supernet net(plan.graph, QuantOptionsFor(plan.spec));
  for (auto l : net->searchable_layers()) l->SetLogits({0, 0, 0, 5}, {0, 0, 0, 5});  // argmax all 8-bit
  DerivedConfig d = DeriveArgmax(net);
  ASSERT_GT(plan.cost_model.Exact(d.weight_bits, d.activation_bits), plan.budget);
  std::string note = RepairToBudget(net, plan.cost_model, plan.budget, &d);
  EXPECT_FALSE(note.empty());
  EXPECT_LE(plan.cost_model.Exact(d.weight_bits, d.activation_bits), plan.budget);
}

TEST(Supernet, RaiseToBandLiftsAnArgmaxBelowTheBandWithoutPassingTheBudget) {
  for (const char* metric : {"BITOPS", "SIZE"}) {
    JobPlan plan = Plan("resnet20", metric, 3);
    Supernet net(plan.graph, QuantOptionsFor(plan.spec));
    int i = 0;
    for (auto l : net->searchable_layers()) {  // argmax all 2-bit, the 3-bit option nearly as likely
      l->SetLogits({2, 1.5f + 0.01f * float(i), 0, 0}, {2, 1.5f, 0, 0});
      ++i;
    }
    DerivedConfig d = DeriveArgmax(net);
    ASSERT_LT(plan.cost_model.Exact(d.weight_bits, d.activation_bits), 0.9 * plan.budget) << metric;
    const std::string note = RaiseToBand(net, plan.cost_model, plan.budget, 0.9, &d);
    EXPECT_FALSE(note.empty()) << metric;
    const double cost = plan.cost_model.Exact(d.weight_bits, d.activation_bits);
    EXPECT_GE(cost, 0.9 * plan.budget) << metric;
    EXPECT_LE(cost, plan.budget) << metric;
    for (size_t k = 0; k < d.weight_bits.size(); ++k) {
      EXPECT_LE(d.weight_bits[k], 3) << "one step up at a time, from 2 bits";
      if (std::string(metric) == "SIZE")
        EXPECT_EQ(d.activation_bits[k], 2) << "size does not charge activations";
    }
    // Already in the band: nothing changes.
    const DerivedConfig before = d;
    EXPECT_EQ(RaiseToBand(net, plan.cost_model, plan.budget, 0.9, &d), "");
    EXPECT_EQ(d.weight_bits, before.weight_bits);
    EXPECT_EQ(d.activation_bits, before.activation_bits);
  }
}

// A few SGD steps of a pinned network with batch norm folded (as the weights phases train: the
// network the artifact holds), statistics frozen from step `frozen_from`; then its eval-mode logits.
torch::Tensor TrainFoldedThenEvaluate(Supernet& net, const torch::Tensor& x, int steps, int frozen_from) {
  net->SetBatchNormFolding(true);
  torch::optim::SGD opt(net->WeightParameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto y = torch::randint(0, 4, {x.size(0)}, torch::kLong);
  net->train();
  for (int s = 0; s < steps; ++s) {
    net->SetBatchNormFrozen(s >= frozen_from);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
  }
  net->eval();
  torch::NoGradGuard g;
  return net->forward(x);
}

TEST(Artifact, InterpreterReproducesTheNetworkAndChecksumCatchesCorruption) {
  JobPlan plan = Plan("resnet20", "BITOPS", 4);
  Supernet net(plan.graph, QuantOptionsFor(plan.spec));
  // A few training steps so batch-norm statistics and activation clips are not at their defaults.
  torch::manual_seed(2);
  int i = 0;
  for (auto l : net->searchable_layers()) {
    l->Pin(i % 4, (i / 2) % 4);
    ++i;
  }
  auto x = torch::rand({32, 1, 16, 16});
  const torch::Tensor want = TrainFoldedThenEvaluate(net, x, /*steps=*/5, /*frozen_from=*/5);
  bpnas::v1::SearchResult result;
  auto model = ExportQuantizedModel(net, plan, result);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string path = ::testing::TempDir() + "/roundtrip.bpq";
  ASSERT_TRUE(WriteModelFile(*model, path).ok());
  auto back = ReadModelFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  auto got = RunQuantizedModel(*back, x);
  ASSERT_TRUE(got.ok()) << got.status();
  // Folding batch norm changes results in the last float bit; an activation that sits exactly on a
  // rounding boundary can then land on the neighbouring level (at 2 bits, a third of the clip), so
  // individual logits may differ a little. What must hold: almost all logits agree closely, and
  // the predictions agree.
  auto diff = (*got - want).abs();
  const double scale = 1 + want.abs().max().item<double>();
  EXPECT_LT(diff.mean().item<double>(), 5e-3 * scale);
  EXPECT_GT(diff.lt(1e-3 * scale).to(torch::kFloat).mean().item<double>(), 0.9);
  EXPECT_GE(got->argmax(1).eq(want.argmax(1)).sum().item<int64_t>(), 30) << "of 32 predictions";

  // Flip one byte in the middle of the file: the checksum (or the parser) must catch it.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[bytes.size() / 2] ^= 0x01;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  auto corrupt = ReadModelFile(path);
  ASSERT_FALSE(corrupt.ok());
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(corrupt.status().message()).find(path), std::string::npos);
  std::remove(path.c_str());
}

// The SIZE budget's promise holds in the file: the packed weight payload is the model-size cost / 8,
// plus at most one byte of padding per layer (each layer's codes end on a byte).
TEST(Artifact, WeightPayloadIsTheSizeCostInBytes) {
  for (bool per_channel : {false, true}) {
    JobPlan plan = Plan("resnet20", "SIZE", 4);
    plan.spec.mutable_finetune()->set_per_channel_weights(per_channel);
    Supernet net(plan.graph, QuantOptionsFor(plan.spec));
    std::vector<int> wbits, abits;
    int i = 0;
    for (auto l : net->searchable_layers()) {
      l->Pin(i % 4, (i + 1) % 4);  // 2, 3, 4 and 8 bits, mixed
      wbits.push_back(l->weight_bits()[size_t(i % 4)]);
      abits.push_back(l->activation_bits()[size_t((i + 1) % 4)]);
      ++i;
    }
    auto model = ExportQuantizedModel(net, plan, bpnas::v1::SearchResult());
    ASSERT_TRUE(model.ok()) << model.status();
    int64_t payload = 0, layers = 0, expected = 0;
    for (const auto& n : model->nodes()) {
      if (n.op() != bpnas::v1::Node::CONV2D && n.op() != bpnas::v1::Node::LINEAR) continue;
      const auto& c = n.conv();
      const int64_t count = int64_t(c.out_channels()) * c.in_channels() * c.kernel() * c.kernel();
      payload += int64_t(c.weight_packed().size());
      expected += (count * c.weight_bits() + 7) / 8;
      EXPECT_EQ(c.weight_scales_size(), per_channel ? int(c.out_channels()) : 1) << n.name();
      ++layers;
    }
    const double size_bits = plan.cost_model.Exact(wbits, abits);
    EXPECT_EQ(payload, expected);
    EXPECT_GE(double(payload), size_bits / 8.0);
    EXPECT_LT(double(payload), size_bits / 8.0 + double(layers));
    // No batch norm survives in the file: every conv of resnet20 carries its folded bias.
    for (const auto& n : model->nodes()) {
      if (n.op() == bpnas::v1::Node::CONV2D) EXPECT_EQ(n.conv().bias_size(), int(n.conv().out_channels()));
    }
  }
}

// Folded training is the network the artifact holds: in eval mode the folded forward equals the
// artifact's output, per tensor and per channel, and per-channel scales differ between channels.
TEST(Artifact, FoldedNetworkAndArtifactAgreePerChannel) {
  JobPlan plan = Plan("resnet20", "BITOPS", 4);
  plan.spec.mutable_finetune()->set_per_channel_weights(true);
  Supernet net(plan.graph, QuantOptionsFor(plan.spec));
  for (auto l : net->searchable_layers()) l->Pin(2, 2);
  torch::manual_seed(3);
  auto x = torch::rand({16, 1, 16, 16});
  const torch::Tensor want = TrainFoldedThenEvaluate(net, x, /*steps=*/4, /*frozen_from=*/2);
  auto model = ExportQuantizedModel(net, plan, bpnas::v1::SearchResult());
  ASSERT_TRUE(model.ok()) << model.status();
  auto got = RunQuantizedModel(*model, x);
  ASSERT_TRUE(got.ok()) << got.status();
  const double scale = 1 + want.abs().max().item<double>();
  EXPECT_LT((*got - want).abs().mean().item<double>(), 1e-3 * scale);
  EXPECT_EQ(got->argmax(1).eq(want.argmax(1)).sum().item<int64_t>(), 16);
  const auto& first = model->nodes(0).conv();
  ASSERT_GT(first.weight_scales_size(), 1);
  EXPECT_NE(first.weight_scales(0), first.weight_scales(1));
}

TEST(Artifact, ExportRefusesUnpinnedSearchableLayers) {
  JobPlan plan = Plan("tiny", "BITOPS", 4);
  Supernet net(plan.graph, QuantOptionsFor(plan.spec));
  auto model = ExportQuantizedModel(net, plan, bpnas::v1::SearchResult());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace bpnas
