#include "spec/spec.h"

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

namespace bpnas {
namespace {

bool Contains(const absl::Status& s, const std::string& what) {
  return std::string(s.message()).find(what) != std::string::npos;
}

absl::Status PlanStatus(const std::string& json) {
  auto spec = ParseSpecJson(json, "spec.json");
  if (!spec.ok()) return spec.status();
  return PlanJob(*spec).status();
}

TEST(Spec, MinimalSpecGetsEveryDefault) {
  auto plan = PlanJob(ParseSpecJson(R"({"constraint": {"max_relative_to_uniform_bits": 4}})", "s").value());
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto& s = plan->spec;
  EXPECT_EQ(s.model().name(), "resnet20");
  EXPECT_EQ(s.dataset().kind(), "fashion-mnist");
  EXPECT_EQ(s.search_space().weight_bits_size(), 4);
  EXPECT_EQ(s.constraint().metric(), bpnas::v1::BITOPS);
  EXPECT_EQ(s.method(), bpnas::v1::BPNAS);
  EXPECT_TRUE(s.search().has_arch_lr());
  EXPECT_TRUE(s.finetune().has_batch_size());
  EXPECT_DOUBLE_EQ(plan->budget, plan->cost_model.Uniform(4));
  EXPECT_TRUE(plan->feasible);
}

TEST(Spec, UnknownFieldIsRejectedNamingIt) {
  auto s = ParseSpecJson(R"({"modle": {"name": "tiny"}})", "spec.json");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.status(), "modle")) << s.status();
  EXPECT_TRUE(Contains(s.status(), "spec.json")) << s.status();
}

TEST(Spec, WrongTypeIsRejectedNamingTheField) {
  auto s = ParseSpecJson(R"({"search": {"epochs": "many"}})", "spec.json");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.status(), "search.epochs")) << s.status();
}

TEST(Spec, OutOfRangeValuesAreRejectedNamingTheField) {
  const std::string budget = R"("constraint": {"max_relative_to_uniform_bits": 4})";
  struct Case {
    std::string json, field;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"search": {"arch_lr": -1}, )" + budget + "}", "search.arch_lr"},
           {R"({"search": {"batch_size": 0}, )" + budget + "}", "search.batch_size"},
           {R"({"search_space": {"weight_bits": [2, 9]}, )" + budget + "}", "search_space.weight_bits"},
           {R"({"search_space": {"activation_bits": [4, 4]}, )" + budget + "}",
            "search_space.activation_bits"},
           {R"({"model": {"width_multiplier": -2}, )" + budget + "}", "model.width_multiplier"},
           {R"({"dataset": {"kind": "imagenet"}, )" + budget + "}", "dataset.kind"},
           {R"({"dataset": {"kind": "mnist"}, )" + budget + "}", "dataset.path"},
           {R"({"dataset": {"arch_fraction": 1.5}, )" + budget + "}", "dataset.arch_fraction"},
           {R"({"search": {"start_ratio": 0.5}, )" + budget + "}", "search.start_ratio"},
           {R"({"constraint": {"max": -3}})", "constraint.max"},
           {R"({"model": {"name": "tiny"}})", "constraint"},
           {R"({"method": "UNIFORM"})", "uniform_bits"},
           {R"({"method": "FIXED"})", "layer_bits"},
           {R"({"method": "FIXED", "layer_bits": [{"weight_bits": 3, "activation_bits": 3}]})",
            "18 searchable layers"},
           {R"({"method": "FIXED", "layer_bits": [{"weight_bits": 3, "activation_bits": 1}]})",
            "layer_bits[0].activation_bits"},
           {R"({"layer_bits": [{"weight_bits": 3, "activation_bits": 3}], )" + budget + "}",
            "only valid when method is FIXED"},
       }) {
    absl::Status st = PlanStatus(c.json);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_TRUE(Contains(st, c.field)) << c.json << " -> " << st;
  }
}

TEST(Spec, InfeasibleBudgetIsRejectedButCostCanStillPriceIt) {
  const std::string json = R"({"constraint": {"max_relative_to_uniform_bits": 1.5}})";
  absl::Status st = PlanStatus(json);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(st, "constraint.max_relative_to_uniform_bits")) << st;
  EXPECT_TRUE(Contains(st, "infeasible")) << st;
  auto plan = PlanJob(ParseSpecJson(json, "s").value(), /*check_feasible=*/false);
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->feasible);
  EXPECT_LT(plan->budget, plan->min_cost);
}

TEST(Spec, AbsoluteAndRelativeBudgetsAgree) {
  auto rel = PlanJob(
      ParseSpecJson(R"({"constraint": {"metric": "SIZE", "max_relative_to_uniform_bits": 3}})", "s").value());
  ASSERT_TRUE(rel.ok());
  const std::string abs_json =
      R"({"constraint": {"metric": "SIZE", "max": )" + std::to_string(rel->budget) + "}}";
  auto abs = PlanJob(ParseSpecJson(abs_json, "s").value());
  ASSERT_TRUE(abs.ok()) << abs.status();
  EXPECT_NEAR(abs->budget, rel->budget, 1e-3);
  EXPECT_EQ(abs->metric, CostMetricKind::kSize);
}

TEST(Spec, ShippedExamplesAreValidAndFeasible) {
  const char* root = std::getenv("BPNAS_SOURCE_DIR");
  if (root == nullptr) GTEST_SKIP() << "BPNAS_SOURCE_DIR not set";
  for (const char* name : {"examples/tiny.json", "examples/fashion-mnist.json"}) {
    auto spec = LoadSpecFile(std::string(root) + "/" + name);
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto plan = PlanJob(*spec);
    EXPECT_TRUE(plan.ok()) << name << ": " << plan.status();
  }
}

TEST(Spec, MissingFileIsNotFound) {
  auto s = LoadSpecFile("/nonexistent/spec.json");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s.status(), "/nonexistent/spec.json"));
}

}  // namespace
}  // namespace bpnas
