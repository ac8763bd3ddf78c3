// Every metric family the coordinator exports (DESIGN.md §3), in one place.
//
//   bpnas_jobs{state}                              gauge, from the database at scrape time
//   bpnas_workers{state}                           gauge, from the database at scrape time
//   bpnas_job_submissions_total{result}            counter: created | duplicate | invalid
//   bpnas_rpcs_total{method,code}                  counter
//   bpnas_rpc_duration_seconds{method}             histogram
//   bpnas_progress_reports_total                   counter: reports stored
//   bpnas_running_job_loss{job,term}               gauge: cross_entropy | barrier | prob1
//   bpnas_running_job_cost_ratio{job,kind}         gauge: expected | argmax (cost / budget)
//   bpnas_running_job_feasible{job}                gauge: 1 if E[cost] <= budget
//   bpnas_running_job_samples_per_second{job}      gauge
// Running-job gauges carry the only unbounded label (`job`) and are removed when the job leaves
// RUNNING (checked at every scrape). Thread-safe.
#ifndef BPNAS_SERVER_SERVER_METRICS_H_
#define BPNAS_SERVER_SERVER_METRICS_H_

#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "bpnas/v1/service.pb.h"
#include "common/metrics.h"
#include "server/job_store.h"

namespace bpnas {

class ServerMetrics {
 public:
  ServerMetrics();

  void RecordRpc(const std::string& method, absl::StatusCode code, double seconds);
  void RecordSubmission(const std::string& result);
  void RecordProgress(const std::string& job_id, const bpnas::v1::Progress& progress);

  // Refreshes the database-backed gauges from `store` (jobs and workers by state; drops running-job
  // gauges of jobs no longer RUNNING) and returns the text exposition. If the database cannot be
  // reached, the gauges keep their last values and bpnas_store_up is 0.
  std::string Scrape(JobStore* store);

 private:
  MetricsRegistry registry_;
  GaugeFamily* jobs_;
  GaugeFamily* workers_;
  GaugeFamily* store_up_;
  CounterFamily* submissions_;
  CounterFamily* rpcs_;
  HistogramFamily* rpc_seconds_;
  CounterFamily* progress_reports_;
  GaugeFamily* job_loss_;
  GaugeFamily* job_cost_ratio_;
  GaugeFamily* job_feasible_;
  GaugeFamily* job_samples_;
  std::mutex mu_;
  std::set<std::string> running_jobs_;  // jobs with running-job gauges
};

// Times one RPC and records it on destruction: `ScopedRpc rpc(metrics, "SubmitJob"); ...;
// return rpc.Done(status);`.
class ScopedRpc {
 public:
  ScopedRpc(ServerMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method), start_(std::chrono::steady_clock::now()) {}
  template <typename S>
  S Done(S status) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    metrics_->RecordRpc(method_, static_cast<absl::StatusCode>(status.error_code()), s);
    return status;
  }

 private:
  ServerMetrics* metrics_;
  const char* method_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_SERVER_METRICS_H_
