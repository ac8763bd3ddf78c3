#include "server/worker_service.h"

#include "common/grpc_status.h"
#include "server/blob_stream.h"

namespace bpnas {
namespace {

absl::Status RequireToken(const std::string& token) {
  if (token.empty()) return absl::InvalidArgumentError("attempt_token: required");
  return absl::OkStatus();
}

}  // namespace

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext*, const bpnas::v1::RegisterRequest* req,
                                         bpnas::v1::RegisterResponse* resp) {
  ScopedRpc rpc(metrics_, "Register");
  if (req->device() != bpnas::v1::CPU && req->device() != bpnas::v1::GPU) {
    return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("device: CPU or GPU")));
  }
  auto id = store_->RegisterWorker(*req, manager_->options().lease);
  if (!id.ok()) return rpc.Done(ToGrpcStatus(id.status()));
  resp->set_worker_id(*id);
  resp->set_heartbeat_interval_ms(
      uint32_t(absl::ToInt64Milliseconds(manager_->options().heartbeat_interval)));
  resp->set_lease_ms(uint32_t(absl::ToInt64Milliseconds(manager_->options().lease)));
  manager_->Poke();
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext*, const bpnas::v1::HeartbeatRequest* req,
                                          bpnas::v1::HeartbeatResponse* resp) {
  ScopedRpc rpc(metrics_, "Heartbeat");
  if (req->worker_id().empty())
    return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("worker_id: required")));
  auto r = store_->Heartbeat(req->worker_id(), req->attempt_token(), manager_->options().lease);
  if (!r.ok()) return rpc.Done(ToGrpcStatus(r.status()));
  *resp = std::move(*r);
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext*,
                                               const bpnas::v1::ReportProgressRequest* req,
                                               bpnas::v1::ReportProgressResponse* resp) {
  ScopedRpc rpc(metrics_, "ReportProgress");
  if (auto s = RequireToken(req->attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  ProgressReport report{req->attempt_token(), req->progress()};
  auto running = progress_->Write(report);
  if (!running.ok()) return rpc.Done(ToGrpcStatus(running.status()));
  resp->set_stop(!*running);
  if (*running && !req->job_id().empty()) metrics_->RecordProgress(req->job_id(), req->progress());
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::PublishRendezvous(grpc::ServerContext*,
                                                  const bpnas::v1::PublishRendezvousRequest* req,
                                                  bpnas::v1::PublishRendezvousResponse*) {
  ScopedRpc rpc(metrics_, "PublishRendezvous");
  if (auto s = RequireToken(req->attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  return rpc.Done(ToGrpcStatus(store_->PublishRendezvous(req->attempt_token(), req->address())));
}

grpc::Status WorkerServiceImpl::UploadCheckpoint(grpc::ServerContext*,
                                                 grpc::ServerReader<bpnas::v1::CheckpointChunk>* reader,
                                                 bpnas::v1::UploadCheckpointResponse* resp) {
  ScopedRpc rpc(metrics_, "UploadCheckpoint");
  bpnas::v1::CheckpointChunk first;
  if (!reader->Read(&first))
    return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("empty checkpoint stream")));
  if (auto s = RequireToken(first.attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  if (auto s = CheckSha256Hex("sha256", first.sha256()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  auto writer = store_->BeginCheckpoint(first.attempt_token(), first.step());
  if (!writer.ok()) return rpc.Done(ToGrpcStatus(writer.status()));
  // The store compares the worker's checksum with its own of the bytes that arrived.
  auto id = ReceiveBlob(
      first, [&](bpnas::v1::CheckpointChunk* m) { return reader->Read(m); }, writer->get(), first.sha256());
  if (!id.ok()) return rpc.Done(ToGrpcStatus(id.status()));
  resp->set_bytes((*writer)->bytes_written());
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::FetchCheckpoint(grpc::ServerContext* ctx,
                                                const bpnas::v1::FetchCheckpointRequest* req,
                                                grpc::ServerWriter<bpnas::v1::CheckpointChunk>* writer) {
  ScopedRpc rpc(metrics_, "FetchCheckpoint");
  if (auto s = RequireToken(req->attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  auto reader = store_->OpenLatestCheckpoint(req->attempt_token());
  if (!reader.ok()) return rpc.Done(ToGrpcStatus(reader.status()));
  bpnas::v1::CheckpointChunk header;
  header.set_step((*reader)->step());
  header.set_sha256((*reader)->sha256());
  return rpc.Done(ToGrpcStatus(SendBlob(
      reader->get(), header, [&](const bpnas::v1::CheckpointChunk& m) { return writer->Write(m); },
      [&] { return ctx->IsCancelled(); })));
}

grpc::Status WorkerServiceImpl::CompleteAttempt(grpc::ServerContext*,
                                                grpc::ServerReader<bpnas::v1::CompleteAttemptChunk>* reader,
                                                bpnas::v1::CompleteAttemptResponse* resp) {
  ScopedRpc rpc(metrics_, "CompleteAttempt");
  bpnas::v1::CompleteAttemptChunk first;
  if (!reader->Read(&first))
    return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("empty completion stream")));
  if (auto s = RequireToken(first.attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  int64_t artifact_id = 0;
  if (first.succeeded()) {
    if (auto s = CheckSha256Hex("sha256", first.sha256()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
    auto writer = store_->BeginArtifact(first.attempt_token());
    if (!writer.ok()) return rpc.Done(ToGrpcStatus(writer.status()));
    // The store compares the worker's checksum with its own of the bytes that arrived.
    auto id = ReceiveBlob(
        first, [&](bpnas::v1::CompleteAttemptChunk* m) { return reader->Read(m); }, writer->get(),
        first.sha256(), first.total_bytes() > 0 ? first.total_bytes() : -1);
    if (!id.ok()) return rpc.Done(ToGrpcStatus(id.status()));
    artifact_id = *id;
  } else {
    bpnas::v1::CompleteAttemptChunk rest;
    while (reader->Read(&rest)) {
    }
  }
  auto state = manager_->CompleteAttempt(
      first.attempt_token(), first.succeeded(),
      first.error().empty() && !first.succeeded() ? "the worker reported a failure" : first.error(),
      first.result(), artifact_id);
  if (!state.ok()) return rpc.Done(ToGrpcStatus(state.status()));
  resp->set_state(*state);
  return rpc.Done(grpc::Status::OK);
}

}  // namespace bpnas
