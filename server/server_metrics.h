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
// Running-job gauges carry the only unbounded label (`job`). They are written at scrape time, from
// the latest report of each job, and only for job ids that the store says are RUNNING: a `job`
// label never comes from a client's word alone, and it is removed once its job leaves RUNNING.
// Thread-safe.
#ifndef BPNAS_SERVER_SERVER_METRICS_H_
#define BPNAS_SERVER_SERVER_METRICS_H_

#include <chrono>
#include <map>
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
  // The hot path (every stored progress report): counts the report and keeps it as the latest of
  // `job_id`, as the reporter named it, until the next scrape. Takes one short lock; no I/O.
  void RecordProgress(const std::string& job_id, const bpnas::v1::Progress& progress);

  // Refreshes the database-backed gauges from `store` (jobs and workers by state; running-job
  // gauges from the reports kept since the last scrape, for the ids the store lists as RUNNING;
  // drops those of jobs no longer RUNNING) and returns the text exposition. Reads the store
  // without holding the lock RecordProgress takes. If the database cannot be reached, the gauges
  // keep their last values, the reports wait for the next scrape, and bpnas_store_up is 0.
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
  // The hot lock: only RecordProgress and the swap at the start of a scrape take it.
  std::mutex mu_;
  std::map<std::string, bpnas::v1::Progress> latest_;  // job id as reported -> latest report; guarded by mu_
  // Serializes scrapes (the HTTP server may run two at once); never held by RecordProgress.
  std::mutex scrape_mu_;
  std::set<std::string> labelled_jobs_;  // jobs with running-job gauges; guarded by scrape_mu_
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
