#include "server/worker_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/sha256.h"

namespace bpnas {
namespace {

absl::Status RequireToken(const std::string& token) {
  if (token.empty()) return absl::InvalidArgumentError("attempt_token: required");
  return absl::OkStatus();
}

// Appends `data` to `writer` while hashing it.
absl::Status AppendHashed(BlobWriter* writer, Sha256* hash, const std::string& data) {
  if (data.empty()) return absl::OkStatus();
  hash->Update(data);
  return writer->Append(data);
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
  resp->set_heartbeat_interval_ms(uint32_t(absl::ToInt64Milliseconds(manager_->options().heartbeat_interval)));
  resp->set_lease_ms(uint32_t(absl::ToInt64Milliseconds(manager_->options().lease)));
  manager_->Poke();
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext*, const bpnas::v1::HeartbeatRequest* req,
                                          bpnas::v1::HeartbeatResponse* resp) {
  ScopedRpc rpc(metrics_, "Heartbeat");
  if (req->worker_id().empty()) return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("worker_id: required")));
  auto r = store_->Heartbeat(req->worker_id(), req->attempt_token(), manager_->options().lease);
  if (!r.ok()) return rpc.Done(ToGrpcStatus(r.status()));
  *resp = std::move(*r);
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext*, const bpnas::v1::ReportProgressRequest* req,
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

grpc::Status WorkerServiceImpl::PublishRendezvous(grpc::ServerContext*, const bpnas::v1::PublishRendezvousRequest* req,
                                                  bpnas::v1::PublishRendezvousResponse*) {
  ScopedRpc rpc(metrics_, "PublishRendezvous");
  if (auto s = RequireToken(req->attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  return rpc.Done(ToGrpcStatus(store_->PublishRendezvous(req->attempt_token(), req->address())));
}

grpc::Status WorkerServiceImpl::UploadCheckpoint(grpc::ServerContext*,
                                                 grpc::ServerReader<bpnas::v1::CheckpointChunk>* reader,
                                                 bpnas::v1::UploadCheckpointResponse* resp) {
  ScopedRpc rpc(metrics_, "UploadCheckpoint");
  bpnas::v1::CheckpointChunk msg;
  if (!reader->Read(&msg)) return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("empty checkpoint stream")));
  if (auto s = RequireToken(msg.attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  auto writer = store_->BeginCheckpoint(msg.attempt_token(), msg.step());
  if (!writer.ok()) return rpc.Done(ToGrpcStatus(writer.status()));
  Sha256 hash;
  do {
    if (auto s = AppendHashed(writer->get(), &hash, msg.data()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  } while (reader->Read(&msg));
  auto id = (*writer)->Finish(hash.HexDigest());
  if (!id.ok()) return rpc.Done(ToGrpcStatus(id.status()));
  resp->set_bytes((*writer)->bytes_written());
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::FetchCheckpoint(grpc::ServerContext* ctx, const bpnas::v1::FetchCheckpointRequest* req,
                                                grpc::ServerWriter<bpnas::v1::CheckpointChunk>* writer) {
  ScopedRpc rpc(metrics_, "FetchCheckpoint");
  if (auto s = RequireToken(req->attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  auto reader = store_->OpenLatestCheckpoint(req->attempt_token());
  if (!reader.ok()) return rpc.Done(ToGrpcStatus(reader.status()));
  std::string chunk;
  bool sent = false;
  for (;;) {
    if (ctx->IsCancelled()) return rpc.Done(grpc::Status::CANCELLED);
    auto more = (*reader)->Next(&chunk);
    if (!more.ok()) return rpc.Done(ToGrpcStatus(more.status()));
    if (!*more && sent) break;
    bpnas::v1::CheckpointChunk msg;
    if (!sent) msg.set_step((*reader)->step());
    if (*more) msg.set_data(std::move(chunk));
    if (!writer->Write(msg)) return rpc.Done(grpc::Status::CANCELLED);
    sent = true;
    if (!*more) break;
  }
  return rpc.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::CompleteAttempt(grpc::ServerContext*,
                                                grpc::ServerReader<bpnas::v1::CompleteAttemptChunk>* reader,
                                                bpnas::v1::CompleteAttemptResponse* resp) {
  ScopedRpc rpc(metrics_, "CompleteAttempt");
  bpnas::v1::CompleteAttemptChunk first;
  if (!reader->Read(&first)) return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("empty completion stream")));
  if (auto s = RequireToken(first.attempt_token()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
  int64_t artifact_id = 0;
  if (first.succeeded()) {
    if (first.sha256().size() != 64) {
      return rpc.Done(ToGrpcStatus(absl::InvalidArgumentError("sha256: 64 hex characters required on success")));
    }
    auto writer = store_->BeginArtifact(first.attempt_token());
    if (!writer.ok()) return rpc.Done(ToGrpcStatus(writer.status()));
    // The store checks the checksum the worker claims against the bytes it stored.
    bpnas::v1::CompleteAttemptChunk msg = first;
    do {
      if (!msg.data().empty()) {
        if (auto s = (*writer)->Append(msg.data()); !s.ok()) return rpc.Done(ToGrpcStatus(s));
      }
    } while (reader->Read(&msg));
    if (first.total_bytes() > 0 && (*writer)->bytes_written() != first.total_bytes()) {
      return rpc.Done(ToGrpcStatus(absl::DataLossError(absl::StrCat("artifact arrived damaged: ",
                                                                    (*writer)->bytes_written(), " bytes of ",
                                                                    first.total_bytes()))));
    }
    auto id = (*writer)->Finish(first.sha256());
    if (!id.ok()) return rpc.Done(ToGrpcStatus(id.status()));
    artifact_id = *id;
  } else {
    bpnas::v1::CompleteAttemptChunk rest;
    while (reader->Read(&rest)) {
    }
  }
  auto state = manager_->CompleteAttempt(first.attempt_token(), first.succeeded(),
                                         first.error().empty() && !first.succeeded() ? "the worker reported a failure"
                                                                                     : first.error(),
                                         first.result(), artifact_id);
  if (!state.ok()) return rpc.Done(ToGrpcStatus(state.status()));
  resp->set_state(*state);
  return rpc.Done(grpc::Status::OK);
}

}  // namespace bpnas
