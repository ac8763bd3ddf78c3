#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>
#include <utility>

#include "common/log.h"

namespace bpnas {
namespace {

using metrics_internal::FamilyBase;
using metrics_internal::MetricType;

// Misuse of the registry is a bug in the caller's constants, not a runtime condition to handle.
[[noreturn]] void Fail(const std::string& message) {
  LogError("metrics", message);
  std::abort();
}

bool IsValidMetricName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// The naming rules of the header comment (which are also what `promtool check metrics` lints).
void ValidateFamily(const std::string& name, const std::string& help,
                    const std::vector<std::string>& label_names, MetricType type) {
  if (!IsValidMetricName(name)) {
    Fail("invalid metric name \"" + name + "\": must match [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
  if (help.empty()) Fail("metric " + name + " has no help text");
  const bool is_counter = type == MetricType::kCounter;
  if (is_counter && !EndsWith(name, "_total")) {
    Fail("counter " + name + " must have a name ending in \"_total\"");
  }
  if (!is_counter && EndsWith(name, "_total")) {
    Fail(std::string(TypeName(type)) + " " + name + " must not end in \"_total\" (counters only)");
  }
  if (type != MetricType::kHistogram) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (EndsWith(name, suffix)) {
        Fail(std::string(TypeName(type)) + " " + name + " must not end in \"" + suffix +
             "\" (reserved for histogram series)");
      }
    }
  }
  std::set<std::string> seen;
  for (const std::string& label : label_names) {
    if (!IsValidLabelName(label)) {
      Fail("metric " + name + ": invalid label name \"" + label + "\": must match [a-zA-Z_][a-zA-Z0-9_]*");
    }
    if (label.rfind("__", 0) == 0) {
      Fail("metric " + name + ": label name \"" + label + "\" starts with \"__\" (reserved)");
    }
    if (label == "le" || label == "quantile") {
      Fail("metric " + name + ": label name \"" + label +
           "\" is reserved for histogram buckets and summary quantiles");
    }
    if (!seen.insert(label).second) Fail("metric " + name + ": label \"" + label + "\" repeated");
  }
}

// In # HELP lines: backslash and newline.
void AppendEscapedHelp(const std::string& text, std::string* out) {
  for (char c : text) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

// In label values: backslash, double quote and newline.
void AppendEscapedLabelValue(const std::string& text, std::string* out) {
  for (char c : text) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '"') {
      out->append("\\\"");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

// `a="x",b="y"` (no braces), the child's labels.
std::string LabelPairs(const std::vector<std::string>& label_names, const LabelValues& values) {
  std::string out;
  for (size_t i = 0; i < label_names.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append(label_names[i]);
    out.append("=\"");
    AppendEscapedLabelValue(values[i], &out);
    out.push_back('"');
  }
  return out;
}

// One sample line: name{pairs} value
void AppendSample(const std::string& name, const std::string& pairs, double value, std::string* out) {
  out->append(name);
  if (!pairs.empty()) {
    out->push_back('{');
    out->append(pairs);
    out->push_back('}');
  }
  out->push_back(' ');
  out->append(FormatMetricValue(value));
  out->push_back('\n');
}

void AtomicAdd(std::atomic<double>& target, double amount) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + amount, std::memory_order_relaxed)) {
  }
}

std::vector<double> ValidatedBounds(const std::string& name, std::vector<double> bounds) {
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      Fail("histogram " + name + ": bucket bound " + FormatMetricValue(bounds[i]) + " is not finite");
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      Fail("histogram " + name + ": bucket bounds must be strictly increasing (" +
           FormatMetricValue(bounds[i - 1]) + " then " + FormatMetricValue(bounds[i]) + ")");
    }
  }
  return bounds;
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Counts and most gauges are whole numbers; print them the way people write them ("1000000",
  // not "1e+06"). 2^53 is where doubles stop representing every integer.
  constexpr double kMaxExactInteger = 9007199254740992.0;
  if (std::trunc(value) == value && std::fabs(value) <= kMaxExactInteger) {
    return std::to_string(static_cast<long long>(value));
  }
  // Shortest digits that read back exactly, laid out like Go's strconv 'g' (what the Prometheus
  // server and its client libraries write): plain decimals from 1e-4 up, exponent form below
  // ("0.0005", "1e-05") and for integers beyond 2^53 ("1e+20").
  char buffer[64];
  const std::chars_format format = std::fabs(value) >= 1e-4 && std::fabs(value) < kMaxExactInteger
                                       ? std::chars_format::fixed
                                       : std::chars_format::scientific;
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value, format);
  return std::string(buffer, result.ptr);
}

std::vector<double> LatencyBucketsSeconds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    Fail("ExponentialBuckets needs start > 0, factor > 1 and count >= 1");
  }
  std::vector<double> bounds;
  bounds.reserve(count);
  double bound = start;
  for (int i = 0; i < count; ++i) {
    bounds.push_back(bound);
    bound *= factor;
  }
  return bounds;
}

// ---- children ----

void Counter::Inc(double amount) {
  if (!(amount >= 0)) return;  // negative or NaN
  AtomicAdd(value_, amount);
}

void Gauge::Inc(double amount) { AtomicAdd(value_, amount); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // The first bucket whose bound is >= value ("le" is inclusive); NaN compares false everywhere
  // and so belongs to +Inf only.
  const size_t index =
      std::isnan(value)
          ? bounds_.size()
          : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  counts_[index].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, value);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> counts(bounds_.size() + 1);
  for (size_t i = 0; i < counts.size(); ++i) counts[i] = counts_[i].load(std::memory_order_relaxed);
  return counts;
}

uint64_t Histogram::Count() const {
  uint64_t total = 0;
  for (uint64_t c : BucketCounts()) total += c;
  return total;
}

// ---- families ----

namespace metrics_internal {

FamilyBase::FamilyBase(std::string name, std::string help, std::vector<std::string> label_names,
                       MetricType type)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)), type_(type) {}

void FamilyBase::CheckArity(const LabelValues& values) const {
  if (values.size() != label_names_.size()) {
    Fail("metric " + name_ + " has " + std::to_string(label_names_.size()) + " label(s) but was given " +
         std::to_string(values.size()) + " value(s)");
  }
}

size_t FamilyBase::LabelIndex(const std::string& label_name) const {
  for (size_t i = 0; i < label_names_.size(); ++i) {
    if (label_names_[i] == label_name) return i;
  }
  Fail("metric " + name_ + " has no label \"" + label_name + "\"");
}

void FamilyBase::AppendExposition(std::string* out) const {
  out->append("# HELP ");
  out->append(name_);
  out->push_back(' ');
  AppendEscapedHelp(help_, out);
  out->append("\n# TYPE ");
  out->append(name_);
  out->push_back(' ');
  out->append(TypeName(type_));
  out->push_back('\n');
  AppendSamples(out);
}

void AppendChildSamples(const std::string& name, const std::vector<std::string>& label_names,
                        const LabelValues& values, const Counter& c, std::string* out) {
  AppendSample(name, LabelPairs(label_names, values), c.Value(), out);
}

void AppendChildSamples(const std::string& name, const std::vector<std::string>& label_names,
                        const LabelValues& values, const Gauge& g, std::string* out) {
  AppendSample(name, LabelPairs(label_names, values), g.Value(), out);
}

void AppendChildSamples(const std::string& name, const std::vector<std::string>& label_names,
                        const LabelValues& values, const Histogram& h, std::string* out) {
  const std::string pairs = LabelPairs(label_names, values);
  const std::string bucket_prefix = pairs.empty() ? "" : pairs + ",";
  const std::string bucket_name = name + "_bucket";
  // Read the buckets once and derive the count from them, so +Inf always equals _count even
  // while other threads observe.
  const std::vector<uint64_t> counts = h.BucketCounts();
  const double sum = h.Sum();
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    const std::string le = i < h.bounds().size() ? FormatMetricValue(h.bounds()[i]) : "+Inf";
    AppendSample(bucket_name, bucket_prefix + "le=\"" + le + "\"", static_cast<double>(cumulative), out);
  }
  AppendSample(name + "_sum", pairs, sum, out);
  AppendSample(name + "_count", pairs, static_cast<double>(cumulative), out);
}

}  // namespace metrics_internal

// ---- registry ----

CounterFamily* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                           const std::vector<std::string>& label_names) {
  ValidateFamily(name, help, label_names, MetricType::kCounter);
  auto family = std::make_unique<CounterFamily>(name, help, label_names, MetricType::kCounter,
                                                [] { return std::make_unique<Counter>(); });
  CounterFamily* result = family.get();
  Insert(std::move(family));
  return result;
}

GaugeFamily* MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                       const std::vector<std::string>& label_names) {
  ValidateFamily(name, help, label_names, MetricType::kGauge);
  auto family = std::make_unique<GaugeFamily>(name, help, label_names, MetricType::kGauge,
                                              [] { return std::make_unique<Gauge>(); });
  GaugeFamily* result = family.get();
  Insert(std::move(family));
  return result;
}

HistogramFamily* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                               const std::vector<std::string>& label_names,
                                               std::vector<double> bucket_bounds) {
  ValidateFamily(name, help, label_names, MetricType::kHistogram);
  std::vector<double> bounds = ValidatedBounds(name, std::move(bucket_bounds));
  auto family = std::make_unique<HistogramFamily>(name, help, label_names, MetricType::kHistogram,
                                                  [bounds] { return std::make_unique<Histogram>(bounds); });
  HistogramFamily* result = family.get();
  Insert(std::move(family));
  return result;
}

void MetricsRegistry::Insert(std::unique_ptr<FamilyBase> family) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string name = family->name();
  if (!families_.emplace(name, std::move(family)).second) {
    Fail("metric " + name + " registered twice");
  }
}

std::string MetricsRegistry::Expose() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, family] : families_) family->AppendExposition(&out);
  return out;
}

}  // namespace bpnas
