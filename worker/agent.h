// WorkerAgent: the process side of a worker (DESIGN.md §1). Registers with the coordinator,
// heartbeats, runs the assignment it is given with the engine (one rank), reports progress every
// few steps, and uploads the finished artifact with the result. Stops the running search promptly
// when the coordinator says STOP (cancel, or its attempt ended) and carries on training through a
// coordinator outage (reports are dropped while it is away; completion is retried until it is back).
//
// Run() is meant for one thread; Metrics() may be called from any thread.
#ifndef BPNAS_WORKER_AGENT_H_
#define BPNAS_WORKER_AGENT_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bpnas/v1/service.grpc.pb.h"
#include "common/metrics.h"

namespace bpnas {

struct WorkerOptions {
  std::string server = "127.0.0.1:50051";  // coordinator gRPC address
  bpnas::v1::DeviceKind device = bpnas::v1::CPU;
  int threads = 0;                        // CPU threads for training; 0: the spec's, else every core
  std::string name;                       // shown by the coordinator; default host:pid
  std::string metrics_address;            // told to the coordinator (informational)
  double rpc_timeout_seconds = 10;        // deadline of every unary call
  int report_every = 10;                  // training steps between progress reports
  size_t chunk_bytes = 1 << 20;           // artifact upload chunk size
  double completion_retry_seconds = 600;  // how long to keep retrying an upload while the coordinator is away
  // Data-parallel ranks: the address other ranks reach this worker's c10d store at (when it is
  // rank 0), and the timeout of every collective and of the rendezvous.
  std::string advertise_host = "127.0.0.1";
  double collective_timeout_seconds = 60;
};

class WorkerAgent {
 public:
  explicit WorkerAgent(WorkerOptions options);
  ~WorkerAgent();

  // Serves until *stop becomes true; a running search is stopped and joined before returning.
  void Run(const std::atomic<bool>* stop);

  // Text exposition of the worker's metrics.
  std::string Metrics() const { return registry_.Expose(); }

 private:
  struct Running;
  absl::Status RegisterOnce();
  void StartAssignment(const bpnas::v1::Assignment& a);
  void RunAssignment(Running* r);
  absl::Status Complete(Running* r, bool succeeded, const std::string& error, const std::string& artifact,
                        const bpnas::v1::SearchResult& result);
  absl::Status UploadCheckpoint(Running* r, int64_t step, const std::string& state);
  // The latest checkpoint of the assignment's job: (job step, training state).
  absl::StatusOr<std::pair<int64_t, std::string>> FetchCheckpoint(Running* r);
  // Joins the attempt's other ranks (rank 0 hosts the store and publishes it through the
  // coordinator; the others wait for it in their heartbeats).
  absl::Status JoinRanks(Running* r);
  // Asks the coordinator whether the assignment's attempt is still running.
  bool AttemptStillActive(Running* r);
  void Deadline(grpc::ClientContext* ctx) const;

  const WorkerOptions options_;
  std::unique_ptr<bpnas::v1::WorkerService::Stub> stub_;
  std::string worker_id_;
  int heartbeat_ms_ = 1000;
  std::unique_ptr<Running> running_;
  std::string finished_token_;  // the last assignment run to its end: not started again

  MetricsRegistry registry_;
  GaugeFamily* busy_;
  GaugeFamily* connected_;
  CounterFamily* steps_reported_;
  CounterFamily* attempts_;
  CounterFamily* checkpoints_;
  GaugeFamily* samples_per_second_;
};

}  // namespace bpnas

#endif  // BPNAS_WORKER_AGENT_H_
