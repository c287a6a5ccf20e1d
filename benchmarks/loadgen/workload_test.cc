#include "loadgen/workload.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace wallet::loadgen {
namespace {

// Accounts 0..n-1 on `shards` shards, round robin (offset % shards).
std::shared_ptr<const ShardLayout> RoundRobin(uint64_t n, uint32_t shards) {
  std::vector<uint16_t> shard_of(n);
  for (uint64_t i = 0; i < n; ++i) shard_of[i] = static_cast<uint16_t>(i % shards);
  return std::make_shared<ShardLayout>(std::move(shard_of), shards);
}

TEST(Rng, SameSeedSameStreamAndBelowStaysInRange) {
  Rng a(42), b(42), c(43), d(44);
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = a.Next();
    EXPECT_EQ(x, b.Next());
    differs = differs || x != c.Next();
    EXPECT_LT(d.Below(7), 7u);
    const double u = d.Unit();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  EXPECT_TRUE(differs);
}

TEST(ZipfSampler, FrequenciesFollowThePowerLaw) {
  const uint64_t n = 1000;
  const double theta = 0.99;
  ZipfSampler zipf(n, theta);
  Rng rng(7);
  std::vector<uint64_t> hits(n, 0);
  const int draws = 1'000'000;
  for (int i = 0; i < draws; ++i) {
    const uint64_t k = zipf.Sample(rng);
    ASSERT_LT(k, n);
    ++hits[k];
  }
  double norm = 0;
  for (uint64_t k = 1; k <= n; ++k) norm += std::pow(static_cast<double>(k), -theta);
  for (uint64_t k : {0, 1, 9, 99}) {
    const double expected = draws * std::pow(static_cast<double>(k + 1), -theta) / norm;
    EXPECT_NEAR(static_cast<double>(hits[k]), expected, 5 * std::sqrt(expected) + 0.02 * expected) << "rank " << k;
  }
}

TEST(ZipfSampler, ThetaAboveOneAndLargeN) {
  ZipfSampler zipf(/*n=*/10'000'000, /*theta=*/1.2);
  Rng rng(3);
  uint64_t zero = 0;
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t k = zipf.Sample(rng);
    ASSERT_LT(k, 10'000'000u);
    zero += k == 0;
  }
  // P(rank 0) = 1 / zeta(1.2) ~ 1 / 5.59 (the tail beyond 10 M is negligible here).
  EXPECT_NEAR(static_cast<double>(zero) / 100'000, 1 / 5.5916, 0.01);
}

TEST(Workload, UniformPairsAreDistinctAndInRange) {
  WorkloadOptions o;
  o.first_account = 1000;
  o.accounts = 50;
  o.amount_min = 5;
  o.amount_max = 7;
  ASSERT_EQ(Workload::Validate(o, nullptr), "");
  Workload w(o, nullptr);
  Rng rng(1);
  for (int i = 0; i < 10'000; ++i) {
    const Transfer t = w.Next(rng);
    EXPECT_NE(t.from, t.to);
    EXPECT_GE(t.from, 1000u);
    EXPECT_LT(t.from, 1050u);
    EXPECT_GE(t.to, 1000u);
    EXPECT_LT(t.to, 1050u);
    EXPECT_GE(t.amount, 5);
    EXPECT_LE(t.amount, 7);
    EXPECT_EQ(t.cross, -1);
    EXPECT_EQ(t.mode, Mode::kDefault);
  }
}

TEST(Workload, HotShareGoesToTheHotSet) {
  WorkloadOptions o;
  o.accounts = 10'000;
  o.skew = Skew::kHot;
  o.hot_share = 0.8;
  o.hot_accounts = 10;
  ASSERT_EQ(Workload::Validate(o, nullptr), "");
  Workload w(o, nullptr);
  Rng rng(5);
  int hot = 0;
  const int draws = 200'000;
  for (int i = 0; i < draws; ++i) hot += w.DrawOffset(rng) < 10;
  EXPECT_NEAR(static_cast<double>(hot) / draws, 0.8, 0.01);
}

TEST(Workload, CrossShardShareIsKept) {
  for (double share : {0.0, 0.25, 1.0}) {
    for (Skew skew : {Skew::kUniform, Skew::kZipf}) {
      WorkloadOptions o;
      o.accounts = 1000;
      o.skew = skew;
      o.cross_shard_share = share;
      auto layout = RoundRobin(o.accounts, 4);
      ASSERT_EQ(Workload::Validate(o, layout.get()), "");
      Workload w(o, layout);
      Rng rng(11);
      int cross = 0;
      const int draws = 100'000;
      for (int i = 0; i < draws; ++i) {
        const Transfer t = w.Next(rng);
        ASSERT_NE(t.from, t.to);
        const bool is_cross = layout->ShardOf(t.from - 1) != layout->ShardOf(t.to - 1);
        ASSERT_EQ(t.cross, is_cross ? 1 : 0);
        cross += is_cross;
      }
      EXPECT_NEAR(static_cast<double>(cross) / draws, share, 0.01) << SkewName(skew) << " " << share;
    }
  }
}

TEST(Workload, ModesGoToCrossShardTransfersOnly) {
  WorkloadOptions o;
  o.accounts = 1000;
  o.cross_shard_share = 0.5;
  o.tcc_share = 0.3;
  auto layout = RoundRobin(o.accounts, 2);
  ASSERT_EQ(Workload::Validate(o, layout.get()), "");
  Workload w(o, layout);
  Rng rng(13);
  int tcc = 0, saga = 0;
  for (int i = 0; i < 100'000; ++i) {
    const Transfer t = w.Next(rng);
    if (t.cross == 0) {
      EXPECT_EQ(t.mode, Mode::kDefault);
      continue;
    }
    (t.mode == Mode::kTcc ? tcc : saga)++;
    EXPECT_NE(t.mode, Mode::kDefault);
  }
  EXPECT_NEAR(static_cast<double>(tcc) / (tcc + saga), 0.3, 0.01);
}

TEST(Workload, BatchSharesOneMode) {
  WorkloadOptions o;
  o.accounts = 100;
  o.tcc_share = 0.5;
  Workload w(o, nullptr);
  Rng rng(17);
  std::vector<Transfer> batch;
  for (int i = 0; i < 100; ++i) {
    w.NextBatch(rng, 16, &batch);
    ASSERT_EQ(batch.size(), 16u);
    for (const Transfer& t : batch) EXPECT_EQ(t.mode, batch.front().mode);
  }
}

TEST(Workload, ValidateRefusesWhatCannotBeDone) {
  WorkloadOptions o;
  o.accounts = 100;
  o.cross_shard_share = 0.5;
  EXPECT_NE(Workload::Validate(o, nullptr), "");  // no map
  auto one_shard = RoundRobin(100, 1);
  EXPECT_NE(Workload::Validate(o, one_shard.get()), "");  // nothing is cross-shard
  o.cross_shard_share = 0;
  EXPECT_EQ(Workload::Validate(o, one_shard.get()), "");
  o.accounts = 1;
  EXPECT_NE(Workload::Validate(o, nullptr), "");
  o.accounts = 100;
  o.cross_shard_share = -1;
  o.amount_min = 0;
  EXPECT_NE(Workload::Validate(o, nullptr), "");
  o.amount_min = 1;
  o.skew = Skew::kHot;
  o.hot_accounts = 99;
  EXPECT_NE(Workload::Validate(o, nullptr), "");
}

}  // namespace
}  // namespace wallet::loadgen
