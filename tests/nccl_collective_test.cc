// The NCCL collective. Needs CUDA devices: one-rank tests need one, two-rank tests (ranks as
// threads, one device each: NCCL refuses two ranks of one communicator on one device) need two;
// each test skips when the machine has fewer (and the no-device test skips when it has one).
#include <cuda_runtime_api.h>

#include <functional>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/collective.h"

namespace bpnas {
namespace {

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

#define SKIP_WITHOUT_DEVICES(n)                                                               \
  do {                                                                                        \
    const int devices = DeviceCount();                                                        \
    if (devices < (n)) GTEST_SKIP() << "needs " << (n) << " CUDA devices, found " << devices; \
  } while (0)

CollectiveOptions Options(int rank, int world_size, absl::Duration timeout) {
  CollectiveOptions o;
  o.rank = rank;
  o.world_size = world_size;
  o.timeout = timeout;
  o.cuda_device = rank;
  o.prefix = absl::StrCat(::testing::UnitTest::GetInstance()->current_test_info()->name(), "/");
  return o;
}

std::vector<std::unique_ptr<Collective>> MakeGroup(int world_size, absl::Duration timeout) {
  std::vector<std::unique_ptr<Collective>> group(world_size);
  auto host = RendezvousHost::Listen(Options(0, world_size, timeout));
  EXPECT_TRUE(host.ok()) << host.status();
  if (!host.ok()) return {};
  const int port = (*host)->port();
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      CollectiveOptions o = Options(r, world_size, timeout);
      o.store_port = port;
      auto collective = CreateNcclCollective(o, r == 0 ? std::move(*host) : nullptr);
      EXPECT_TRUE(collective.ok()) << collective.status();
      if (collective.ok()) group[r] = std::move(collective).value();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& c : group) {
    if (c == nullptr) return {};
  }
  return group;
}

void ForEachRank(int world_size, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

std::vector<torch::Tensor> RankTensors(int rank) {
  const double scale = rank + 1;
  return {torch::arange(12, torch::kFloat).reshape({3, 4}) * scale,
          torch::arange(5, torch::kDouble) * scale + 0.25,
          (torch::arange(20, torch::kFloat).reshape({4, 5}) * scale).t()};
}

TEST(NcclCollective, WithoutADeviceCreationFailsCleanly) {
  if (DeviceCount() > 0) GTEST_SKIP() << "this machine has a CUDA device";
  auto collective = CreateNcclCollective(Options(0, 1, absl::Seconds(5)));
  ASSERT_FALSE(collective.ok());
  EXPECT_EQ(collective.status().code(), absl::StatusCode::kFailedPrecondition) << collective.status();
}

TEST(NcclCollective, OneRankKeepsValuesThroughTheDevice) {
  SKIP_WITHOUT_DEVICES(1);
  CollectiveOptions o = Options(0, 1, absl::Seconds(30));
  auto collective = CreateNcclCollective(o);
  ASSERT_TRUE(collective.ok()) << collective.status();
  std::vector<torch::Tensor> tensors = RankTensors(0);
  const std::vector<torch::Tensor> original = RankTensors(0);
  ASSERT_TRUE((*collective)->AllReduceSum(tensors).ok());
  ASSERT_TRUE((*collective)->AllReduceMean(tensors).ok());
  ASSERT_TRUE((*collective)->Broadcast(tensors, 0).ok());
  ASSERT_TRUE((*collective)->Barrier().ok());
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_TRUE(torch::equal(tensors[i], original[i]));
  EXPECT_EQ((*collective)->Broadcast(tensors, 1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(NcclCollective, AbortRefusesLaterCalls) {
  SKIP_WITHOUT_DEVICES(1);
  auto collective = CreateNcclCollective(Options(0, 1, absl::Seconds(30)));
  ASSERT_TRUE(collective.ok()) << collective.status();
  (*collective)->Abort();
  std::vector<torch::Tensor> tensors = {torch::ones({4})};
  EXPECT_EQ((*collective)->AllReduceSum(tensors).code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(torch::equal(tensors[0], torch::ones({4})));
}

TEST(NcclCollective, TwoRanksAllReduceAndBroadcastAreExact) {
  SKIP_WITHOUT_DEVICES(2);
  auto group = MakeGroup(2, absl::Seconds(60));
  ASSERT_EQ(group.size(), 2u);
  std::vector<std::vector<torch::Tensor>> sums(2), means(2), broadcast(2);
  ForEachRank(2, [&](int r) {
    sums[r] = RankTensors(r);
    means[r] = RankTensors(r);
    broadcast[r] = RankTensors(r);
    EXPECT_TRUE(group[r]->AllReduceSum(sums[r]).ok());
    EXPECT_TRUE(group[r]->AllReduceMean(means[r]).ok());
    EXPECT_TRUE(group[r]->Broadcast(broadcast[r], 1).ok());
    EXPECT_TRUE(group[r]->Barrier().ok());
  });
  const std::vector<torch::Tensor> a = RankTensors(0), b = RankTensors(1);
  for (int r = 0; r < 2; ++r) {
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(sums[r][i], a[i] + b[i]));
      EXPECT_TRUE(torch::equal(means[r][i], (a[i] + b[i]) / 2));
      EXPECT_TRUE(torch::equal(broadcast[r][i], b[i]));
    }
  }
}

TEST(NcclCollective, StuckRankTimesOutAndAbortReleasesABlockedCall) {
  SKIP_WITHOUT_DEVICES(2);
  const absl::Duration timeout = absl::Seconds(2);
  auto group = MakeGroup(2, timeout);
  ASSERT_EQ(group.size(), 2u);
  // Rank 1 never enters: rank 0 times out.
  std::vector<torch::Tensor> tensors = {torch::ones({1024})};
  absl::Time start = absl::Now();
  absl::Status status = group[0]->AllReduceSum(tensors);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_LT(absl::Now() - start, timeout + absl::Milliseconds(1500));
  EXPECT_TRUE(torch::equal(tensors[0], torch::ones({1024})));
  // Rank 1 blocks alone now; Abort() from another thread releases it.
  std::thread blocked([&] { status = group[1]->AllReduceSum(tensors); });
  absl::SleepFor(absl::Milliseconds(300));
  start = absl::Now();
  group[1]->Abort();
  blocked.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
}

}  // namespace
}  // namespace bpnas
