#include "server/server_metrics.h"

#include "absl/status/status.h"

namespace bpnas {
namespace {

// The most running jobs a scrape reads (and so labels); far above what a coordinator runs.
constexpr int kMaxLabelledJobs = 10000;

const char* CodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "OK";
    case absl::StatusCode::kCancelled:
      return "CANCELLED";
    case absl::StatusCode::kUnknown:
      return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound:
      return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted:
      return "ABORTED";
    case absl::StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal:
      return "INTERNAL";
    case absl::StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss:
      return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

ServerMetrics::ServerMetrics() {
  jobs_ = registry_.AddGauge("bpnas_jobs", "Jobs by state.", {"state"});
  workers_ = registry_.AddGauge("bpnas_workers", "Registered workers by state.", {"state"});
  store_up_ = registry_.AddGauge("bpnas_store_up", "1 if the last scrape reached the database.");
  submissions_ = registry_.AddCounter("bpnas_job_submissions_total",
                                      "SubmitJob calls by result (created, duplicate, invalid).", {"result"});
  rpcs_ = registry_.AddCounter("bpnas_rpcs_total", "gRPC calls handled, by method and status code.",
                               {"method", "code"});
  rpc_seconds_ = registry_.AddHistogram("bpnas_rpc_duration_seconds", "gRPC call latency by method.",
                                        {"method"}, LatencyBucketsSeconds());
  progress_reports_ = registry_.AddCounter("bpnas_progress_reports_total", "Progress reports stored.");
  job_loss_ = registry_.AddGauge(
      "bpnas_running_job_loss",
      "Loss terms of a running job's latest report (cross_entropy, barrier, prob1).", {"job", "term"});
  job_cost_ratio_ = registry_.AddGauge("bpnas_running_job_cost_ratio",
                                       "Cost / budget of a running job: expected, or of the argmax network.",
                                       {"job", "kind"});
  job_feasible_ = registry_.AddGauge("bpnas_running_job_feasible",
                                     "1 if a running job's expected cost is within its budget.", {"job"});
  job_samples_ = registry_.AddGauge("bpnas_running_job_samples_per_second",
                                    "Training throughput of a running job (rank 0).", {"job"});
  for (const char* s : {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}) jobs_->Set({s}, 0);
  for (const char* s : {"IDLE", "BUSY", "LOST"}) workers_->Set({s}, 0);
}

void ServerMetrics::RecordRpc(const std::string& method, absl::StatusCode code, double seconds) {
  rpcs_->WithLabels({method, CodeName(code)}).Inc();
  rpc_seconds_->WithLabels({method}).Observe(seconds);
}

void ServerMetrics::RecordSubmission(const std::string& result) { submissions_->WithLabels({result}).Inc(); }

void ServerMetrics::RecordProgress(const std::string& job_id, const bpnas::v1::Progress& p) {
  progress_reports_->WithLabels({}).Inc();
  std::lock_guard<std::mutex> lock(mu_);
  latest_[job_id] = p;
}

std::string ServerMetrics::Scrape(JobStore* store) {
  std::lock_guard<std::mutex> scrape_lock(scrape_mu_);
  auto jobs = store->CountJobsByState();
  auto workers = store->CountWorkersByState();
  // One query for every running job: the ids a `job` label may carry.
  auto running = store->ListJobs(bpnas::v1::RUNNING, kMaxLabelledJobs);
  store_up_->Set({}, jobs.ok() && workers.ok() && running.ok() ? 1 : 0);
  if (jobs.ok()) {
    std::map<LabelValues, double> snap;
    for (const char* s : {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}) snap[{s}] = 0;
    for (const auto& [state, n] : *jobs) snap[{bpnas::v1::JobState_Name(state)}] = double(n);
    jobs_->Replace(snap);
  }
  if (workers.ok()) {
    std::map<LabelValues, double> snap;
    for (const char* s : {"IDLE", "BUSY", "LOST"}) snap[{s}] = 0;
    for (const auto& [state, n] : *workers) snap[{state}] = double(n);
    workers_->Replace(snap);
  }

  // The reports since the last scrape, taken whole; the hot lock is held only for the swap.
  std::map<std::string, bpnas::v1::Progress> reported;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reported.swap(latest_);
  }
  if (!running.ok()) {
    // Keep them for the next scrape, behind any report that arrived meanwhile.
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [job_id, p] : reported) latest_.emplace(job_id, std::move(p));
    return registry_.Expose();
  }
  std::set<std::string> running_ids;
  for (const bpnas::v1::Job& job : *running) running_ids.insert(job.id());
  // Reports naming a job that is not running (unknown, or already ended) are dropped here.
  for (const auto& [job_id, p] : reported) {
    if (!running_ids.count(job_id)) continue;
    labelled_jobs_.insert(job_id);
    job_loss_->Set({job_id, "cross_entropy"}, p.cross_entropy());
    job_loss_->Set({job_id, "barrier"}, p.barrier());
    job_loss_->Set({job_id, "prob1"}, p.prob1());
    job_cost_ratio_->Set({job_id, "expected"}, p.expected_ratio());
    job_cost_ratio_->Set({job_id, "argmax"}, p.argmax_ratio());
    job_feasible_->Set({job_id}, p.feasible() ? 1 : 0);
    job_samples_->Set({job_id}, p.samples_per_second());
  }
  // Running-job gauges disappear once their job has left RUNNING.
  for (auto it = labelled_jobs_.begin(); it != labelled_jobs_.end();) {
    if (running_ids.count(*it)) {
      ++it;
      continue;
    }
    for (auto* f : {job_loss_, job_cost_ratio_, job_feasible_, job_samples_}) f->RemoveMatching("job", *it);
    it = labelled_jobs_.erase(it);
  }
  return registry_.Expose();
}

}  // namespace bpnas
