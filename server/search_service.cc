#include "server/search_service.h"

#include <algorithm>

#include "common/grpc_status.h"
#include "server/blob_stream.h"

namespace bpnas {
namespace {

absl::Status RequireJobId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("job_id: required");
  return absl::OkStatus();
}

}  // namespace

grpc::Status SearchServiceImpl::SubmitJob(grpc::ServerContext*, const bpnas::v1::SubmitJobRequest* req,
                                          bpnas::v1::SubmitJobResponse* resp) {
  ScopedRpc rpc(metrics_, "SubmitJob");
  auto r = manager_->Submit(req->request_id(), req->spec());
  if (!r.ok()) {
    if (r.status().code() == absl::StatusCode::kInvalidArgument) metrics_->RecordSubmission("invalid");
    return rpc.Done(ToGrpcStatus(r.status()));
  }
  metrics_->RecordSubmission(r->second ? "created" : "duplicate");
  *resp->mutable_job() = std::move(r->first);
  resp->set_created(r->second);
  return rpc.Done(grpc::Status::OK);
}

grpc::Status SearchServiceImpl::GetJob(grpc::ServerContext*, const bpnas::v1::GetJobRequest* req,
                                       bpnas::v1::Job* resp) {
  ScopedRpc rpc(metrics_, "GetJob");
  if (auto s = RequireJobId(req->job_id()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  auto job = store_->GetJob(req->job_id());
  if (!job.ok()) return rpc.Done(ToGrpcStatus(job.status()));
  *resp = std::move(*job);
  return rpc.Done(grpc::Status::OK);
}

grpc::Status SearchServiceImpl::ListJobs(grpc::ServerContext*, const bpnas::v1::ListJobsRequest* req,
                                         bpnas::v1::ListJobsResponse* resp) {
  ScopedRpc rpc(metrics_, "ListJobs");
  const int limit = req->limit() == 0 ? 100 : int(std::min<uint32_t>(req->limit(), 10000));
  auto jobs = store_->ListJobs(req->state(), limit);
  if (!jobs.ok()) return rpc.Done(ToGrpcStatus(jobs.status()));
  for (auto& j : *jobs) *resp->add_jobs() = std::move(j);
  return rpc.Done(grpc::Status::OK);
}

grpc::Status SearchServiceImpl::CancelJob(grpc::ServerContext*, const bpnas::v1::CancelJobRequest* req,
                                          bpnas::v1::Job* resp) {
  ScopedRpc rpc(metrics_, "CancelJob");
  auto job = manager_->Cancel(req->job_id());
  if (!job.ok()) return rpc.Done(ToGrpcStatus(job.status()));
  *resp = std::move(*job);
  return rpc.Done(grpc::Status::OK);
}

grpc::Status SearchServiceImpl::WatchJob(grpc::ServerContext* ctx, const bpnas::v1::WatchJobRequest* req,
                                         grpc::ServerWriter<bpnas::v1::WatchJobEvent>* writer) {
  ScopedRpc rpc(metrics_, "WatchJob");
  if (auto s = RequireJobId(req->job_id()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  return rpc.Done(ToGrpcStatus(watcher_.Watch(
      req->job_id(), req->after_step(), [&](const bpnas::v1::WatchJobEvent& e) { return writer->Write(e); },
      [&] { return ctx->IsCancelled(); })));
}

grpc::Status SearchServiceImpl::FetchArtifact(grpc::ServerContext* ctx,
                                              const bpnas::v1::FetchArtifactRequest* req,
                                              grpc::ServerWriter<bpnas::v1::ArtifactChunk>* writer) {
  ScopedRpc rpc(metrics_, "FetchArtifact");
  if (auto s = RequireJobId(req->job_id()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  auto reader = store_->OpenArtifact(req->job_id());
  if (!reader.ok()) return rpc.Done(ToGrpcStatus(reader.status()));
  bpnas::v1::ArtifactChunk header;
  header.set_sha256((*reader)->sha256());
  header.set_total_bytes((*reader)->total_bytes());
  return rpc.Done(ToGrpcStatus(SendBlob(
      reader->get(), header, [&](const bpnas::v1::ArtifactChunk& m) { return writer->Write(m); },
      [&] { return ctx->IsCancelled(); })));
}

}  // namespace bpnas
