// Job specs: parsing (proto3 JSON of bpnas.v1.JobSpec), defaults, validation and planning.
//
// Every check names the field it rejects ("search.arch_lr must be > 0, got -1"), returns
// INVALID_ARGUMENT and runs nothing. PlanJob() also proves the budget feasible from the model's
// layer table alone (no training), so the coordinator can use it without LibTorch.
#ifndef BPNAS_SPEC_SPEC_H_
#define BPNAS_SPEC_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "bpnas/v1/spec.pb.h"
#include "spec/cost_model.h"
#include "spec/graph.h"

namespace bpnas {

// Default folder of the Debian package dataset-fashion-mnist.
inline constexpr char kDefaultFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";
// Where the named data sets live, one folder per kind (<root>/fashion-mnist, <root>/mnist,
// <root>/cifar10): the Debian packages' folder. `bpnas eval` reads BPNAS_DATA_ROOT instead when set.
inline constexpr char kDefaultDataRoot[] = "/usr/share/datasets";

// The folder of the named data set `kind` under `root`: <root>/<kind>. INVALID_ARGUMENT for a kind
// that is not a named file data set (synthetic, or unknown: the message lists the known ones).
absl::StatusOr<std::string> NamedDatasetDir(const std::string& kind, const std::string& root);

// Parses JSON text; unknown fields and wrong types are INVALID_ARGUMENT naming the field.
absl::StatusOr<bpnas::v1::JobSpec> ParseSpecJson(const std::string& json, const std::string& source_name);
// Reads and parses a spec file (NOT_FOUND if it cannot be read).
absl::StatusOr<bpnas::v1::JobSpec> LoadSpecFile(const std::string& path);

// Fills every absent field with its default and checks ranges. The result has every optional
// field set, so later code reads values without defaults of its own.
absl::StatusOr<bpnas::v1::JobSpec> NormalizeSpec(const bpnas::v1::JobSpec& spec);

// What a normalized spec implies before any training.
struct JobPlan {
  bpnas::v1::JobSpec spec;  // normalized
  ModelGraph graph;
  CostMetricKind metric = CostMetricKind::kBitOps;
  CostModel cost_model{{}, CostMetricKind::kBitOps, 8};
  bool has_budget = false;
  double budget = 0;
  double min_cost = 0;  // all searchable layers at their lowest bits
  double max_cost = 0;  // all at their highest bits
  bool feasible = true;
  std::string infeasible_reason;  // set when !feasible
};

// Normalizes, builds the graph and cost model, resolves the budget and checks it is feasible:
// min_cost <= budget <= max_cost for BPNAS; for UNIFORM and FIXED the constraint is optional
// (min_cost = max_cost = the configuration's cost).
// With check_feasible = false the plan is returned even for an infeasible budget (`bpnas cost`
// shows the table and says so); `feasible` tells.
absl::StatusOr<JobPlan> PlanJob(const bpnas::v1::JobSpec& spec, bool check_feasible = true);

// Input geometry of a dataset kind: channels, height, width, classes.
struct DatasetGeometry {
  int channels = 1, height = 28, width = 28, classes = 10;
};
absl::StatusOr<DatasetGeometry> GeometryOf(const bpnas::v1::DatasetSpec& dataset);

}  // namespace bpnas

#endif  // BPNAS_SPEC_SPEC_H_
