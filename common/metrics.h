// Prometheus metrics: counters, gauges and histograms with labels, and their text exposition
// (format 0.0.4, the one every Prometheus server scrapes).
//
// One MetricsRegistry per process component owns every metric family. A family has a name, help
// text and label names; each distinct tuple of label values is one child, created on first use:
//
//   MetricsRegistry registry;
//   CounterFamily* rpcs = registry.AddCounter("bpnas_rpcs_total", "RPCs handled.",
//                                             {"method", "code"});
//   HistogramFamily* seconds = registry.AddHistogram(
//       "bpnas_rpc_duration_seconds", "RPC latency.", {"method"}, LatencyBucketsSeconds());
//   Counter& submit_ok = rpcs->WithLabels({"SubmitJob", "OK"});  // cache it; it stays valid
//   submit_ok.Inc();
//   seconds->WithLabels({"SubmitJob"}).Observe(0.012);
//   std::string text = registry.Expose();  // serve as text/plain; version=0.0.4
//
// Naming rules (checked when a family is added): metric names match [a-zA-Z_:][a-zA-Z0-9_:]*,
// label names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__", counters end in "_total"
// and nothing else does, help text is not empty, histograms have no "le" label, names are unique
// within a registry. Metric and label names are constants in the code, so breaking a rule is a
// programming error: the process prints the offending name and the rule to stderr and aborts
// (like a failed CHECK). The same holds for passing the wrong number of label values.
//
// Thread-safety: everything here may be called from any thread. Adding a family and Expose() take
// the registry's lock; WithLabels/Remove/Replace take only that family's lock; Inc/Set/Observe on
// a child are lock-free atomics, so updating a cached child is the cheap hot path.
#ifndef BPNAS_COMMON_METRICS_H_
#define BPNAS_COMMON_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

namespace bpnas {

// Label values of one child, in the order of the family's label names.
using LabelValues = std::vector<std::string>;

// Content-Type of MetricsRegistry::Expose() output.
inline constexpr char kPrometheusTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// A value that only goes up (requests served, bytes sent). Starts at 0.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `amount`. Negative or NaN amounts are ignored: a counter never decreases.
  void Inc(double amount = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (queue length, jobs running). Starts at 0.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Inc(double amount = 1.0);
  void Dec(double amount = 1.0) { Inc(-amount); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets with fixed upper bounds (inclusive, "le"), plus their sum.
// The exposition shows cumulative counts per bound, a "+Inf" bucket equal to the count, the sum and
// the count. NaN observations land in the +Inf bucket only (and make the sum NaN).
class Histogram {
 public:
  // `bounds` must be finite and strictly increasing (checked by the family that creates it).
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket (not cumulative) counts; one more entry than bounds() for the +Inf bucket.
  std::vector<uint64_t> BucketCounts() const;
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1 entries
  std::atomic<double> sum_{0.0};
};

namespace metrics_internal {

enum class MetricType { kCounter, kGauge, kHistogram };

// What every family shares: identity, label names, and how it prints itself.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, std::vector<std::string> label_names, MetricType type);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  MetricType type() const { return type_; }

  // Appends "# HELP", "# TYPE" and every child's samples to `out`.
  void AppendExposition(std::string* out) const;

 protected:
  // Aborts unless `values` has one entry per label name.
  void CheckArity(const LabelValues& values) const;
  // Position of `label_name` among the label names; aborts if it is not one of them.
  size_t LabelIndex(const std::string& label_name) const;
  // Appends the sample lines of all children; called by AppendExposition.
  virtual void AppendSamples(std::string* out) const = 0;

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const MetricType type_;
};

// Sample lines of one child.
void AppendChildSamples(const std::string& name, const std::vector<std::string>& label_names,
                        const LabelValues& values, const Counter& c, std::string* out);
void AppendChildSamples(const std::string& name, const std::vector<std::string>& label_names,
                        const LabelValues& values, const Gauge& g, std::string* out);
void AppendChildSamples(const std::string& name, const std::vector<std::string>& label_names,
                        const LabelValues& values, const Histogram& h, std::string* out);

}  // namespace metrics_internal

// All children of one metric (Counter, Gauge or Histogram), keyed by label values. Created by
// MetricsRegistry, which owns it; pointers to a family stay valid for the registry's lifetime.
// A family without labels has its single child from the start (so it is exposed as 0).
template <typename T>
class MetricFamily final : public metrics_internal::FamilyBase {
 public:
  // Use MetricsRegistry::Add*.
  MetricFamily(std::string name, std::string help, std::vector<std::string> label_names,
               metrics_internal::MetricType type, std::function<std::unique_ptr<T>()> make_child)
      : FamilyBase(std::move(name), std::move(help), std::move(label_names), type),
        make_child_(std::move(make_child)) {
    if (this->label_names().empty()) WithLabels({});
  }

  // The child for `values` (one per label name, in order), created on first use. The reference
  // stays valid until that child is removed by Remove/RemoveMatching/Replace, or else for the
  // family's lifetime; families whose children are never removed can cache it freely.
  T& WithLabels(const LabelValues& values) {
    CheckArity(values);
    std::lock_guard<std::mutex> lock(mu_);
    std::unique_ptr<T>& child = children_[values];
    if (child == nullptr) child = make_child_();
    return *child;
  }

  // Removes the child for `values`; returns whether it existed. References to it become invalid,
  // so only remove children that no other thread may still be updating through a cached
  // reference (for gauges, prefer Set(values, v) over caching when children come and go).
  bool Remove(const LabelValues& values) {
    CheckArity(values);
    std::lock_guard<std::mutex> lock(mu_);
    return children_.erase(values) > 0;
  }

  // Removes every child whose label `label_name` equals `value` (e.g. all series of one job);
  // returns how many. Aborts if the family has no such label.
  int RemoveMatching(const std::string& label_name, const std::string& value) {
    const size_t index = LabelIndex(label_name);
    std::lock_guard<std::mutex> lock(mu_);
    int removed = 0;
    for (auto it = children_.begin(); it != children_.end();) {
      if (it->first[index] == value) {
        it = children_.erase(it);
        ++removed;
      } else {
        ++it;
      }
    }
    return removed;
  }

  // Gauges only: sets the child for `values` to `value` under the family lock, so it is safe
  // against a concurrent Remove of the same child.
  void Set(const LabelValues& values, double value) {
    static_assert(std::is_same_v<T, Gauge>, "Set(labels, value) is for gauges");
    CheckArity(values);
    std::lock_guard<std::mutex> lock(mu_);
    std::unique_ptr<T>& child = children_[values];
    if (child == nullptr) child = make_child_();
    child->Set(value);
  }

  // Gauges only: makes the family hold exactly the children in `snapshot` with those values
  // (children not in it are removed), atomically with respect to Expose(). For gauges recomputed
  // from a database, such as jobs by state: include zero entries for states that should show 0.
  void Replace(const std::map<LabelValues, double>& snapshot) {
    static_assert(std::is_same_v<T, Gauge>, "Replace is for gauges");
    for (const auto& [values, unused] : snapshot) CheckArity(values);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = children_.begin(); it != children_.end();) {
      if (snapshot.count(it->first) == 0) {
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [values, value] : snapshot) {
      std::unique_ptr<T>& child = children_[values];
      if (child == nullptr) child = make_child_();
      child->Set(value);
    }
  }

  // Number of children (label value tuples) currently held.
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return children_.size();
  }

 private:
  void AppendSamples(std::string* out) const override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [values, child] : children_) {
      metrics_internal::AppendChildSamples(name(), label_names(), values, *child, out);
    }
  }

  const std::function<std::unique_ptr<T>()> make_child_;
  mutable std::mutex mu_;
  // Ordered by label values so the exposition is deterministic.
  std::map<LabelValues, std::unique_ptr<T>> children_;
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

// Owns metric families and renders them. Not copyable; families live as long as the registry.
class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Each returns the new family (never null, owned by the registry). Aborts on a rule violation
  // listed at the top of this file. `bucket_bounds` must be finite and strictly increasing; a
  // trailing +Inf is accepted and dropped (the +Inf bucket is always there).
  CounterFamily* AddCounter(const std::string& name, const std::string& help,
                            const std::vector<std::string>& label_names = {});
  GaugeFamily* AddGauge(const std::string& name, const std::string& help,
                        const std::vector<std::string>& label_names = {});
  HistogramFamily* AddHistogram(const std::string& name, const std::string& help,
                                const std::vector<std::string>& label_names,
                                std::vector<double> bucket_bounds);

  // The text exposition (format 0.0.4) of every family, sorted by name: "# HELP" and "# TYPE" once
  // per family (also for families with no children yet), then one line per sample. Each family's
  // children are read under that family's lock, so a Replace() is seen whole or not at all.
  std::string Expose() const;

 private:
  void Insert(std::unique_ptr<metrics_internal::FamilyBase> family);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<metrics_internal::FamilyBase>> families_;  // by name
};

// Standard request-latency bucket bounds in seconds: 0.0005, 0.001, 0.0025, ..., 5, 10.
std::vector<double> LatencyBucketsSeconds();

// `count` bounds start, start*factor, start*factor^2, ... (start > 0, factor > 1, count >= 1).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// How the exposition writes a sample value: integers up to 2^53 without exponent or fraction
// ("3", "-12"), other finite values in the shortest form that reads back exactly ("0.25",
// "1e-05"), and "NaN", "+Inf", "-Inf".
std::string FormatMetricValue(double value);

}  // namespace bpnas

#endif  // BPNAS_COMMON_METRICS_H_
