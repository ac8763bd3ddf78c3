// Coordinator: the coordinator's parts assembled over one JobStore — job manager (scheduler
// running), progress writer, SearchService and WorkerService on a gRPC server — plus its HTTP
// endpoints. bpnas-server's main, the service tests and the load benchmark all run this, so they
// run the same thing.
#ifndef BPNAS_SERVER_COORDINATOR_H_
#define BPNAS_SERVER_COORDINATOR_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/http_server.h"
#include "server/job_manager.h"
#include "server/job_store.h"
#include "server/progress_writer.h"
#include "server/search_service.h"
#include "server/server_metrics.h"
#include "server/worker_service.h"

namespace bpnas {

struct CoordinatorOptions {
  std::string listen = "127.0.0.1:50051";  // gRPC address; port 0 picks a free one
  JobManagerOptions manager;
  int progress_writers = 2;
  // gRPC threads kept polling: at least the calls expected in flight (a progress report holds its
  // thread until its batch commits; threads above this are created and destroyed per call).
  int grpc_max_pollers = 128;
  absl::Duration watch_poll = absl::Milliseconds(250);  // WatchJob's store polling interval
};

class Coordinator {
 public:
  // Starts serving on options.listen and starts the scheduler. `store` must outlive the result.
  // UNAVAILABLE if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(JobStore* store,
                                                            const CoordinatorOptions& options);
  // Stops the scheduler, then the gRPC server (calls in flight get up to 2 s).
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Registers /healthz, /readyz (database reachable, migrations applied) and /metrics on `http`.
  // The coordinator must outlive the handlers' use.
  void ServeHttp(HttpServer* http);

  int port() const { return port_; }
  JobManager& manager() { return *manager_; }
  ServerMetrics& metrics() { return metrics_; }

 private:
  Coordinator() = default;

  JobStore* store_ = nullptr;
  ServerMetrics metrics_;
  std::unique_ptr<JobManager> manager_;
  std::unique_ptr<ProgressWriter> progress_;
  std::unique_ptr<SearchServiceImpl> search_;
  std::unique_ptr<WorkerServiceImpl> workers_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_COORDINATOR_H_
