// SearchService: the users' API. Translates protos, calls the job manager (state changes), the
// store (reads) or the job watcher (WatchJob), streams artifacts with the blob helpers
// (blob_stream.h), maps Status to gRPC codes, and records RPC metrics. No logic of its own.
#ifndef BPNAS_SERVER_SEARCH_SERVICE_H_
#define BPNAS_SERVER_SEARCH_SERVICE_H_

#include "absl/time/time.h"
#include "bpnas/v1/service.grpc.pb.h"
#include "server/job_manager.h"
#include "server/job_store.h"
#include "server/job_watcher.h"
#include "server/server_metrics.h"

namespace bpnas {

class SearchServiceImpl final : public bpnas::v1::SearchService::Service {
 public:
  SearchServiceImpl(JobStore* store, JobManager* manager, ServerMetrics* metrics,
                    absl::Duration watch_poll = absl::Milliseconds(250))
      : store_(store), manager_(manager), metrics_(metrics), watcher_(store, watch_poll) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const bpnas::v1::SubmitJobRequest* req,
                         bpnas::v1::SubmitJobResponse* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const bpnas::v1::GetJobRequest* req,
                      bpnas::v1::Job* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const bpnas::v1::ListJobsRequest* req,
                        bpnas::v1::ListJobsResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const bpnas::v1::CancelJobRequest* req,
                         bpnas::v1::Job* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const bpnas::v1::WatchJobRequest* req,
                        grpc::ServerWriter<bpnas::v1::WatchJobEvent>* writer) override;
  grpc::Status FetchArtifact(grpc::ServerContext* ctx, const bpnas::v1::FetchArtifactRequest* req,
                             grpc::ServerWriter<bpnas::v1::ArtifactChunk>* writer) override;

 private:
  JobStore* store_;
  JobManager* manager_;
  ServerMetrics* metrics_;
  JobWatcher watcher_;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_SEARCH_SERVICE_H_
