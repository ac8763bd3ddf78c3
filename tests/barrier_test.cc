#include "worker/engine/barrier.h"

#include <cmath>

#include <gtest/gtest.h>

namespace bpnas {
namespace {

TEST(BarrierPenalty, ValueAndGradientMatchFiniteDifferences) {
  for (double t : {5.0, 20.0, 200.0}) {
    for (double z : {-0.9, -0.3, -0.05, -1.0 / (t * t) * 2, 0.0, 0.01, 0.3}) {
      auto zt = torch::tensor({z}, torch::kDouble).requires_grad_(true);
      auto v = BarrierPenalty(zt, t);
      v.sum().backward();
      EXPECT_NEAR(v.item<double>(), BarrierPenaltyValue(z, t), 1e-9) << "t=" << t << " z=" << z;
      const double h = 1e-7;
      const double fd = (BarrierPenaltyValue(z + h, t) - BarrierPenaltyValue(z - h, t)) / (2 * h);
      EXPECT_NEAR(zt.grad().item<double>(), fd, 1e-4 * std::max(1.0, std::abs(fd)))
          << "t=" << t << " z=" << z;
      EXPECT_NEAR(BarrierPenaltyGradient(z, t), fd, 1e-4 * std::max(1.0, std::abs(fd)));
    }
  }
}

TEST(BarrierPenalty, IsContinuousWithContinuousSlopeAtTheJoin) {
  const double t = 50, z0 = -1.0 / (t * t), e = 1e-12;
  EXPECT_NEAR(BarrierPenaltyValue(z0 - e, t), BarrierPenaltyValue(z0 + e, t), 1e-9);
  EXPECT_NEAR(BarrierPenaltyGradient(z0 - 1e-15, t), BarrierPenaltyGradient(z0 + 1e-15, t), 1e-6 * t);
}

TEST(BarrierPenalty, IsNearZeroDeepInsideBudget) {
  // 10% inside the budget with the default end sharpness: well below a typical cross-entropy.
  EXPECT_LT(BarrierPenaltyValue(-0.1, 200), 0.012);
  EXPECT_LT(std::abs(BarrierPenaltyGradient(-0.5, 200)), 0.011);
}

TEST(BarrierPenalty, IsSteepAtTheEdge) {
  const double t = 200;
  EXPECT_GT(BarrierPenaltyGradient(-1e-4, t), 40.0);
  EXPECT_GT(BarrierPenaltyGradient(-1e-4, t), 100 * BarrierPenaltyGradient(-0.1, t));
}

TEST(BarrierPenalty, IsFiniteAndSteepOutside) {
  for (double t : {20.0, 200.0}) {
    for (double z : {1e-6, 0.1, 10.0, 1e6}) {
      auto zt = torch::tensor({z}, torch::kDouble).requires_grad_(true);
      auto v = BarrierPenalty(zt, t);
      v.sum().backward();
      EXPECT_TRUE(std::isfinite(v.item<double>()));
      EXPECT_DOUBLE_EQ(zt.grad().item<double>(), t);
      EXPECT_GT(v.item<double>(), BarrierPenaltyValue(-1e-3, t) - 1e-12);
    }
  }
}

TEST(BarrierPenalty, TorchVersionHasNoNanGradientOnEitherSide) {
  auto z = torch::linspace(-2, 2, 101, torch::kDouble).requires_grad_(true);
  BarrierPenalty(z, 20).sum().backward();
  EXPECT_FALSE(z.grad().isnan().any().item<bool>());
}

// The two-sided constraint term is smallest at the target ratio for every t, and the lower barrier still
// rises steeply below the band.
TEST(BudgetBarrier, BalancesAtTheTargetForEveryT) {
  auto r = torch::linspace(0.905, 0.9995, 18901, torch::kDouble);
  for (double t : {20.0, 200.0}) {
    for (double target : {0.95, 0.98, 0.99}) {
      auto v = BudgetBarrier(r, t, 0.9, target);
      const double at_min = r[v.argmin().item<int64_t>()].item<double>();
      EXPECT_NEAR(at_min, target, 1e-4) << "t " << t << " target " << target;
    }
    auto low = BudgetBarrier(torch::tensor({0.85, 0.95}, torch::kDouble), t, 0.9, 0.98);
    EXPECT_GT(low[0].item<double>(), low[1].item<double>() + 1.0);
  }
  // Without a band it is the plain upper barrier.
  auto r1 = torch::tensor({0.5, 0.99}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(BudgetBarrier(r1, 50, 0, 0.98), BarrierPenalty(r1 - 1.0, 50)));
}

TEST(Prob1Regularizer, IsZeroIffOneHot) {
  auto one_hot = torch::tensor({0.0, 1.0, 0.0, 0.0});
  auto soft = torch::tensor({0.1, 0.7, 0.1, 0.1});
  EXPECT_NEAR(Prob1Regularizer({one_hot}, {one_hot}).item<double>(), 0.0, 1e-12);
  EXPECT_GT(Prob1Regularizer({one_hot}, {soft}).item<double>(), 0.4);
  EXPECT_GT(Prob1Regularizer({soft, one_hot}, {one_hot, one_hot}).item<double>(), 0.2);
  auto uniform = torch::full({4}, 0.25);
  // (1 - 4 * 1/16) * 2 = 1.5: the largest value for four choices.
  EXPECT_NEAR(Prob1Regularizer({uniform}, {uniform}).item<double>(), 1.5, 1e-6);
}

TEST(Schedules, BarrierTGrowsGeometricallyAndProb1RampsAfterStart) {
  EXPECT_DOUBLE_EQ(BarrierT(0, 20, 200), 20);
  EXPECT_NEAR(BarrierT(0.5, 20, 200), std::sqrt(20.0 * 200.0), 1e-9);
  EXPECT_DOUBLE_EQ(BarrierT(1, 20, 200), 200);
  EXPECT_DOUBLE_EQ(Prob1Lambda(0.4, 0.5, 5), 0);
  EXPECT_DOUBLE_EQ(Prob1Lambda(0.75, 0.5, 5), 2.5);
  EXPECT_DOUBLE_EQ(Prob1Lambda(1.0, 0.5, 5), 5);
}

}  // namespace
}  // namespace bpnas
