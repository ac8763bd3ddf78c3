#include "worker/engine/supernet.h"

#include <gtest/gtest.h>
#include <torch/nn/functional.h>
#include <torch/optim/sgd.h>

#include <cstdio>
#include <fstream>

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

TEST(Supernet, FeasibleStartLandsAtTheStartRatioInsideTheBudget) {
  for (const char* metric : {"BITOPS", "SIZE"}) {
    for (double bits : {2.5, 3.0, 4.0, 6.0}) {
      JobPlan plan = Plan("resnet20", metric, bits);
      Supernet net(plan.graph, QuantOptionsFor(plan.spec));
      SetFeasibleStart(net, plan.cost_model, plan.budget, 0.95);
      const double ratio = ExpectedCostRatio(net, plan.cost_model, plan.budget).item<double>();
      EXPECT_NEAR(ratio, 0.95, 2e-3) << metric << " " << bits;
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
      if (std::string(metric) == "SIZE") EXPECT_EQ(d.activation_bits[k], 2) << "size does not charge activations";
    }
    // Already in the band: nothing changes.
    const DerivedConfig before = d;
    EXPECT_EQ(RaiseToBand(net, plan.cost_model, plan.budget, 0.9, &d), "");
    EXPECT_EQ(d.weight_bits, before.weight_bits);
    EXPECT_EQ(d.activation_bits, before.activation_bits);
  }
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
  torch::optim::SGD opt(net->WeightParameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto x = torch::rand({32, 1, 16, 16});
  auto y = torch::randint(0, 4, {32}, torch::kLong);
  net->train();
  for (int s = 0; s < 5; ++s) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
  }
  net->eval();
  torch::Tensor want;
  {
    torch::NoGradGuard g;
    want = net->forward(x);
  }
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

TEST(Artifact, ExportRefusesUnpinnedSearchableLayers) {
  JobPlan plan = Plan("tiny", "BITOPS", 4);
  Supernet net(plan.graph, QuantOptionsFor(plan.spec));
  auto model = ExportQuantizedModel(net, plan, bpnas::v1::SearchResult());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace bpnas
