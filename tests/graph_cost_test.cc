#include <gtest/gtest.h>

#include "spec/cost_model.h"
#include "spec/graph.h"

namespace bpnas {
namespace {

ModelGraph Resnet20(int channels, int size) {
  ModelOptions o;
  o.input_channels = channels;
  o.input_height = o.input_width = size;
  return BuildModelGraph(o).value();
}

TEST(ModelGraph, Resnet20HasNineteenConvsAndOneLinearWithFirstAndLastFixed) {
  auto layers = Resnet20(1, 28).Layers();
  ASSERT_EQ(layers.size(), 20u);
  EXPECT_EQ(layers.front().name, "conv1");
  EXPECT_FALSE(layers.front().searchable);
  EXPECT_EQ(layers.back().name, "fc");
  EXPECT_FALSE(layers.back().searchable);
  int searchable = 0;
  for (const auto& l : layers) searchable += l.searchable;
  EXPECT_EQ(searchable, 18);
}

TEST(ModelGraph, Resnet20MacsMatchHandComputationOn32x32Rgb) {
  // conv1 3*16*9*32*32; stage 1: 6 x 16*16*9*32*32; stage 2: 16*32*9*16*16 + 5 x 32*32*9*16*16;
  // stage 3: 32*64*9*8*8 + 5 x 64*64*9*8*8; fc 64*10. The well-known 40.55M MACs of resnet20.
  double total = 0;
  for (const auto& l : Resnet20(3, 32).Layers()) total += l.macs;
  EXPECT_DOUBLE_EQ(total, 442368.0 + 16 * 2359296.0 + 2 * 1179648.0 + 640.0);
  EXPECT_DOUBLE_EQ(total, 40551040.0);
}

TEST(CostModel, UniformBitOpsMatchHandComputedMacsOn28x28) {
  // Searchable MACs: 16 convs of 1,806,336 and 2 strided convs of 903,168; fixed: conv1 112,896
  // (1*16*9*28*28) and fc 640, both at 8x8 bits.
  CostModel cost(Resnet20(1, 28).Layers(), CostMetricKind::kBitOps, 8);
  const double searchable_macs = 16 * 1806336.0 + 2 * 903168.0;
  const double fixed = (112896.0 + 640.0) * 64;
  EXPECT_DOUBLE_EQ(cost.Fixed(), fixed);
  for (int b : {2, 3, 4, 8}) EXPECT_DOUBLE_EQ(cost.Uniform(b), searchable_macs * b * b + fixed) << b;
  EXPECT_DOUBLE_EQ(cost.Uniform(3), 283635712.0);
}

TEST(CostModel, SizeCountsWeightBitsOnly) {
  CostModel cost(Resnet20(1, 28).Layers(), CostMetricKind::kSize, 8);
  double searchable_params = 0;
  for (const auto& l : cost.searchable()) searchable_params += l.params;
  EXPECT_DOUBLE_EQ(cost.UniformPair(4, 2), cost.UniformPair(4, 8));
  EXPECT_DOUBLE_EQ(cost.Uniform(4) - cost.Fixed(), 4 * searchable_params);
}

// Exact and Expected against the cost written out here from the graph's layer table: MACs x b_w x
// b_a (BITOPS) or params x b_w (SIZE) per searchable layer, the fixed layers at 8 bits. Expected
// takes mean bitwidths, so at the integer means of a one-hot choice it must give the exact cost,
// and at fractional means the same products of means.
TEST(CostModel, ExactAndExpectedMatchTheLayerTableSum) {
  for (auto metric : {CostMetricKind::kBitOps, CostMetricKind::kSize}) {
    const ModelGraph graph = Resnet20(1, 28);
    CostModel cost(graph.Layers(), metric, 8);
    const bool size = metric == CostMetricKind::kSize;
    std::vector<int> wb, ab;
    std::vector<double> ewb, eab, frac_w, frac_a;
    const int choices[] = {2, 3, 4, 8};
    double by_hand = 0, by_hand_frac = 0;
    size_t s = 0;
    for (const auto& l : graph.Layers()) {
      if (!l.searchable) {
        by_hand += size ? l.params * 8 : l.macs * 64;
        by_hand_frac += size ? l.params * 8 : l.macs * 64;
        continue;
      }
      wb.push_back(choices[s % 4]);
      ab.push_back(choices[(s / 4) % 4]);
      ewb.push_back(wb.back());
      eab.push_back(ab.back());
      frac_w.push_back(2.0 + 0.37 * double(s % 5));
      frac_a.push_back(3.0 + 0.21 * double(s % 7));
      by_hand += size ? l.params * wb.back() : l.macs * wb.back() * ab.back();
      by_hand_frac += size ? l.params * frac_w.back() : l.macs * frac_w.back() * frac_a.back();
      ++s;
    }
    ASSERT_EQ(s, cost.searchable().size());
    EXPECT_NEAR(cost.Exact(wb, ab), by_hand, 1e-9 * by_hand);
    EXPECT_NEAR(cost.Expected(ewb, eab), by_hand, 1e-9 * by_hand);
    EXPECT_NEAR(cost.Expected(frac_w, frac_a), by_hand_frac, 1e-9 * by_hand_frac);
  }
}

TEST(ModelGraph, RejectsUnknownModelAndBadWidth) {
  ModelOptions o;
  o.name = "vgg";
  auto g = BuildModelGraph(o);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("model.name"), std::string::npos);
  o.name = "resnet20";
  o.width_multiplier = 0;
  EXPECT_FALSE(BuildModelGraph(o).ok());
}

}  // namespace
}  // namespace bpnas
