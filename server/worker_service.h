// WorkerService: the workers' API. Translates protos, calls the store / job manager / progress
// writer, maps Status to gRPC codes. Artifacts and checkpoints stream straight into the store chunk
// by chunk (never whole in memory; blob_stream.h), and are stored only if the sha256 the worker
// computed matches the store's hash of the bytes that arrived (DATA_LOSS otherwise).
#ifndef BPNAS_SERVER_WORKER_SERVICE_H_
#define BPNAS_SERVER_WORKER_SERVICE_H_

#include "bpnas/v1/service.grpc.pb.h"
#include "server/job_manager.h"
#include "server/job_store.h"
#include "server/progress_writer.h"
#include "server/server_metrics.h"

namespace bpnas {

class WorkerServiceImpl final : public bpnas::v1::WorkerService::Service {
 public:
  WorkerServiceImpl(JobStore* store, JobManager* manager, ProgressWriter* progress, ServerMetrics* metrics)
      : store_(store), manager_(manager), progress_(progress), metrics_(metrics) {}

  grpc::Status Register(grpc::ServerContext* ctx, const bpnas::v1::RegisterRequest* req,
                        bpnas::v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const bpnas::v1::HeartbeatRequest* req,
                         bpnas::v1::HeartbeatResponse* resp) override;
  grpc::Status ReportProgress(grpc::ServerContext* ctx, const bpnas::v1::ReportProgressRequest* req,
                              bpnas::v1::ReportProgressResponse* resp) override;
  grpc::Status PublishRendezvous(grpc::ServerContext* ctx, const bpnas::v1::PublishRendezvousRequest* req,
                                 bpnas::v1::PublishRendezvousResponse* resp) override;
  grpc::Status UploadCheckpoint(grpc::ServerContext* ctx,
                                grpc::ServerReader<bpnas::v1::CheckpointChunk>* reader,
                                bpnas::v1::UploadCheckpointResponse* resp) override;
  grpc::Status FetchCheckpoint(grpc::ServerContext* ctx, const bpnas::v1::FetchCheckpointRequest* req,
                               grpc::ServerWriter<bpnas::v1::CheckpointChunk>* writer) override;
  grpc::Status CompleteAttempt(grpc::ServerContext* ctx,
                               grpc::ServerReader<bpnas::v1::CompleteAttemptChunk>* reader,
                               bpnas::v1::CompleteAttemptResponse* resp) override;

 private:
  JobStore* store_;
  JobManager* manager_;
  ProgressWriter* progress_;
  ServerMetrics* metrics_;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_WORKER_SERVICE_H_
