#include "worker/agent.h"

#include <unistd.h>

#include <chrono>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/status.h"
#include "spec/progress.h"
#include "spec/spec.h"
#include "worker/collective.h"
#include "worker/engine/artifact.h"
#include "worker/engine/data.h"
#include "worker/engine/search.h"

namespace bpnas {

struct WorkerAgent::Running {
  bpnas::v1::Assignment assignment;
  std::atomic<bool> stop{false};  // set by a STOP (cancel / attempt ended) or shutdown
  std::atomic<bool> done{false};  // the thread has finished
  std::thread thread;
  std::mutex mu;
  std::unique_ptr<Collective> collective;  // world_size > 1; guarded by mu

  // Stops the search: the next step boundary sees `stop`, and a collective in flight is aborted.
  void RequestStop() {
    stop = true;
    std::lock_guard<std::mutex> lock(mu);
    if (collective) collective->Abort();
  }
};

namespace {

constexpr char kComponent[] = "worker";

// Streams `first`, then `data` in chunks of at most `chunk_bytes` (the first chunk rides in `first`),
// and half-closes the stream. A write the server refused ends the loop; Finish() then says why.
template <typename Message, typename Stream>
void WriteChunked(Stream* stream, const Message& first, const std::string& data, size_t chunk_bytes) {
  size_t off = 0;
  bool ok = true;
  do {
    Message msg = off == 0 ? first : Message();
    const size_t n = std::min(chunk_bytes, data.size() - off);
    msg.set_data(data.substr(off, n));
    off += n;
    ok = stream->Write(msg);
  } while (ok && off < data.size());
  stream->WritesDone();
}

std::string DefaultName() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, ":", getpid());
}

}  // namespace

WorkerAgent::WorkerAgent(WorkerOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments ch;
  ch.SetMaxSendMessageSize(16 << 20);
  ch.SetMaxReceiveMessageSize(16 << 20);
  // Reconnect within about a second once a restarted coordinator is back: gRPC's default backoff
  // grows to minutes, longer than a lease, and the worker would be declared lost meanwhile. The
  // "min" value is also how long one connection attempt may take: keep it generous, or attempts to
  // a coordinator that is busy starting are cut off ("tcp handshaker shutdown") again and again.
  ch.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  ch.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  ch.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  stub_ = bpnas::v1::WorkerService::NewStub(
      grpc::CreateCustomChannel(options_.server, grpc::InsecureChannelCredentials(), ch));
  busy_ = registry_.AddGauge("bpnas_worker_busy", "1 while the worker runs an assignment.");
  connected_ =
      registry_.AddGauge("bpnas_worker_connected", "1 if the last heartbeat reached the coordinator.");
  steps_reported_ = registry_.AddCounter("bpnas_worker_progress_reports_total",
                                         "Progress reports sent, by result (stored, dropped).", {"result"});
  attempts_ = registry_.AddCounter("bpnas_worker_attempts_total",
                                   "Assignments run, by outcome (succeeded, failed, stopped).", {"outcome"});
  checkpoints_ = registry_.AddCounter("bpnas_worker_checkpoints_total",
                                      "Checkpoint uploads, by result (stored, failed).", {"result"});
  samples_per_second_ =
      registry_.AddGauge("bpnas_worker_samples_per_second", "Training throughput, latest report.");
}

WorkerAgent::~WorkerAgent() {
  if (running_ != nullptr) {
    running_->stop = true;
    if (running_->thread.joinable()) running_->thread.join();
  }
}

void WorkerAgent::Deadline(grpc::ClientContext* ctx) const {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(int64_t(1000 * options_.rpc_timeout_seconds)));
}

absl::Status WorkerAgent::RegisterOnce() {
  bpnas::v1::RegisterRequest req;
  req.set_name(options_.name.empty() ? DefaultName() : options_.name);
  req.set_device(options_.device);
  req.set_threads(uint32_t(std::max(0, options_.threads)));
  req.set_metrics_address(options_.metrics_address);
  bpnas::v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub_->Register(&ctx, req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  worker_id_ = resp.worker_id();
  heartbeat_ms_ = std::max<int>(50, int(resp.heartbeat_interval_ms()));
  LogInfo(kComponent, "registered with ", options_.server, " as ", worker_id_);
  return absl::OkStatus();
}

void WorkerAgent::Run(const std::atomic<bool>* stop) {
  int backoff_ms = 200;
  std::string last_error;
  auto note_error = [&](const absl::Status& s) {
    std::string msg = StatusToString(s);
    if (msg != last_error) LogWarning(kComponent, msg);
    last_error = msg;
  };
  while (!*stop) {
    // Reap a finished search.
    if (running_ != nullptr && running_->done) {
      finished_token_ = running_->assignment.attempt_token();
      running_->thread.join();
      running_.reset();
      busy_->Set({}, 0);
    }
    if (worker_id_.empty()) {
      absl::Status s = RegisterOnce();
      if (!s.ok()) {
        connected_->Set({}, 0);
        note_error(absl::Status(s.code(),
                                absl::StrCat("cannot register with ", options_.server, ": ", s.message())));
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
        backoff_ms = std::min(5000, backoff_ms * 2);
        continue;
      }
    }
    bpnas::v1::HeartbeatRequest req;
    req.set_worker_id(worker_id_);
    if (running_ != nullptr && !running_->stop) req.set_attempt_token(running_->assignment.attempt_token());
    bpnas::v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    // Wait for the channel (up to the deadline) instead of failing at once while it is between
    // connection attempts: the heartbeat lands as soon as a restarted coordinator listens again.
    ctx.set_wait_for_ready(true);
    grpc::Status s = stub_->Heartbeat(&ctx, req, &resp);
    if (!s.ok()) {
      connected_->Set({}, 0);
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        // The coordinator forgot us or declared us lost: whatever we run is no longer ours.
        if (running_ != nullptr) running_->RequestStop();
        worker_id_.clear();
        LogInfo(kComponent, "the coordinator does not know this worker any more; registering again");
        continue;
      }
      note_error(FromGrpcStatus(s));
      // Short: a heartbeat that arrives late after a coordinator restart costs the attempt.
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
      backoff_ms = std::min(heartbeat_ms_, backoff_ms * 2);
      continue;
    }
    connected_->Set({}, 1);
    if (!last_error.empty()) LogInfo(kComponent, "connected to the coordinator again");
    last_error.clear();
    backoff_ms = 200;
    switch (resp.action()) {
      case bpnas::v1::HeartbeatResponse::RUN:
        if (running_ == nullptr) {
          // A rank > 0 that finished waits here until rank 0 ends the attempt: not again.
          if (resp.assignment().attempt_token() != finished_token_) StartAssignment(resp.assignment());
        } else if (running_->assignment.attempt_token() != resp.assignment().attempt_token()) {
          running_->RequestStop();  // a different assignment: finish stopping this one first
        }
        break;
      case bpnas::v1::HeartbeatResponse::STOP:
        if (running_ != nullptr && !running_->stop) {
          LogInfo(kComponent, "stopping job ", running_->assignment.job_id(),
                  " (the coordinator ended its attempt)");
          running_->RequestStop();
        }
        break;
      default:
        break;
    }
    // Sleep one heartbeat interval, waking early when the search finishes.
    for (int waited = 0; waited < heartbeat_ms_ && !*stop; waited += 20) {
      if (running_ != nullptr && running_->done) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (running_ != nullptr) {
    running_->RequestStop();
    running_->thread.join();
    running_.reset();
  }
}

void WorkerAgent::StartAssignment(const bpnas::v1::Assignment& a) {
  LogInfo(kComponent, "running job ", a.job_id(), " attempt ", a.attempt(), " rank ", a.rank(), "/",
          a.world_size());
  running_ = std::make_unique<Running>();
  running_->assignment = a;
  busy_->Set({}, 1);
  Running* r = running_.get();
  r->thread = std::thread([this, r] {
    RunAssignment(r);
    r->done = true;
  });
}

void WorkerAgent::RunAssignment(Running* r) {
  const auto& a = r->assignment;
  bpnas::v1::JobSpec spec = a.spec();
  if (options_.threads > 0) spec.set_threads(uint32_t(options_.threads));
  auto fail = [&](const absl::Status& s) {
    // A rank whose peer stopped sees its collective fail before its own heartbeat says STOP: if the
    // coordinator has ended the attempt, this is a stop, not a failure to report.
    if (r->stop || !AttemptStillActive(r)) {
      attempts_->WithLabels({"stopped"}).Inc();
      LogInfo(kComponent, "job ", a.job_id(), " stopped");
      return;
    }
    attempts_->WithLabels({"failed"}).Inc();
    LogWarning(kComponent, "job ", a.job_id(), " failed: ", StatusToString(s));
    (void)Complete(r, false, StatusToString(s), "", bpnas::v1::SearchResult());
  };
  const bool leader = a.rank() == 0;
  auto plan = PlanJob(spec);
  if (!plan.ok()) return fail(plan.status());
  auto data = LoadDataset(plan->spec.dataset(), plan->spec.seed());
  if (!data.ok()) return fail(data.status());
  if (a.world_size() > 1) {
    absl::Status joined = JoinRanks(r);
    if (!joined.ok()) {
      if (r->stop) return;
      return fail(joined);
    }
  }

  bool dropped_logged = false;
  RunOptions run;
  run.report_every = std::max(1, options_.report_every);
  run.should_stop = [r] { return r->stop.load(); };
  if (options_.device == bpnas::v1::GPU) run.device = torch::Device(torch::kCUDA, 0);
  {
    std::lock_guard<std::mutex> lock(r->mu);
    run.collective = r->collective.get();
  }
  run.progress = [&](const ProgressEvent& ev) {
    if (!leader) return;  // rank 0 speaks for the attempt
    bpnas::v1::ReportProgressRequest req;
    req.set_attempt_token(a.attempt_token());
    req.set_job_id(a.job_id());
    *req.mutable_progress() = ToProgressProto(plan->spec, ev, ev.job_step);
    req.mutable_progress()->set_attempt(a.attempt());
    samples_per_second_->Set({}, ev.samples_per_second);
    bpnas::v1::ReportProgressResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    grpc::Status s = stub_->ReportProgress(&ctx, req, &resp);
    if (!s.ok()) {
      steps_reported_->WithLabels({"dropped"}).Inc();
      if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) r->stop = true;  // attempt ended
      if (!dropped_logged)
        LogWarning(kComponent, "progress report not stored (", s.error_message(), "); training on");
      dropped_logged = true;
      return;
    }
    dropped_logged = false;
    steps_reported_->WithLabels({"stored"}).Inc();
    if (resp.stop()) r->stop = true;
  };
  if (leader) {
    run.checkpoint = [&](const std::string& phase, const std::string& state, int64_t job_step) {
      absl::Status up = UploadCheckpoint(r, job_step, state);
      checkpoints_->WithLabels({up.ok() ? "stored" : "failed"}).Inc();
      if (!up.ok()) LogWarning(kComponent, "checkpoint (", phase, ") not stored: ", StatusToString(up));
    };
  }
  if (a.has_checkpoint()) {
    auto state = FetchCheckpoint(r);
    if (!state.ok()) return fail(state.status());
    LogInfo(kComponent, "job ", a.job_id(), " resumes from its checkpoint at step ", state->first);
    run.resume_from = std::move(state->second);
  }
  auto model = RunJob(*plan, *data, run);
  if (!model.ok()) {
    if (model.status().code() == absl::StatusCode::kCancelled && r->stop) {
      attempts_->WithLabels({"stopped"}).Inc();
      LogInfo(kComponent, "job ", a.job_id(), " stopped");
      return;
    }
    return fail(model.status());
  }
  if (!leader) {
    // Rank 0 hands in the model (every rank holds the same one); this rank is done.
    attempts_->WithLabels({"succeeded"}).Inc();
    LogInfo(kComponent, "job ", a.job_id(), " rank ", a.rank(), " done");
    return;
  }
  const std::string bytes = SerializeModel(*model);
  absl::Status done = Complete(r, true, "", bytes, model->result());
  if (done.ok()) {
    attempts_->WithLabels({"succeeded"}).Inc();
    LogInfo(kComponent, "job ", a.job_id(), " done: ", bytes.size(), " bytes uploaded, test accuracy ",
            model->result().test_accuracy(), "%");
  } else {
    attempts_->WithLabels({"failed"}).Inc();
    LogWarning(kComponent, "job ", a.job_id(), ": could not hand in the result: ", StatusToString(done));
  }
}

bool WorkerAgent::AttemptStillActive(Running* r) {
  bpnas::v1::HeartbeatRequest req;
  req.set_worker_id(worker_id_);
  req.set_attempt_token(r->assignment.attempt_token());
  bpnas::v1::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub_->Heartbeat(&ctx, req, &resp);
  if (!s.ok()) return s.error_code() != grpc::StatusCode::NOT_FOUND;  // unknown: assume active
  return resp.action() == bpnas::v1::HeartbeatResponse::RUN &&
         resp.assignment().attempt_token() == r->assignment.attempt_token();
}

absl::Status WorkerAgent::JoinRanks(Running* r) {
  const auto& a = r->assignment;
  CollectiveOptions o;
  o.rank = int(a.rank());
  o.world_size = int(a.world_size());
  o.timeout = absl::Seconds(options_.collective_timeout_seconds);
  o.interface_host = options_.advertise_host;
  o.prefix = absl::StrCat(a.job_id(), "/", a.attempt(), "/");
  std::unique_ptr<RendezvousHost> host;
  if (o.rank == 0) {
    BPNAS_ASSIGN_OR_RETURN(host, RendezvousHost::Listen(o));
    bpnas::v1::PublishRendezvousRequest req;
    req.set_attempt_token(a.attempt_token());
    req.set_address(absl::StrCat(options_.advertise_host, ":", host->port()));
    bpnas::v1::PublishRendezvousResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    grpc::Status s = stub_->PublishRendezvous(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s);
  } else {
    // Wait for rank 0's address in this rank's own heartbeats.
    const auto give_up = std::chrono::steady_clock::now() + absl::ToChronoSeconds(o.timeout);
    std::string address;
    while (address.empty()) {
      if (r->stop) return absl::CancelledError("stopped while waiting for rank 0");
      if (std::chrono::steady_clock::now() > give_up) {
        return absl::DeadlineExceededError(absl::StrCat("rank 0 did not publish its rendezvous within ",
                                                        options_.collective_timeout_seconds, " s"));
      }
      bpnas::v1::HeartbeatRequest req;
      req.set_worker_id(worker_id_);
      req.set_attempt_token(a.attempt_token());
      bpnas::v1::HeartbeatResponse resp;
      grpc::ClientContext ctx;
      Deadline(&ctx);
      if (stub_->Heartbeat(&ctx, req, &resp).ok()) {
        if (resp.action() == bpnas::v1::HeartbeatResponse::STOP) return absl::CancelledError("attempt ended");
        if (resp.assignment().attempt_token() == a.attempt_token()) address = resp.assignment().rendezvous();
      }
      if (address.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    const auto colon = address.rfind(':');
    o.store_host = address.substr(0, colon);
    o.store_port = std::atoi(address.c_str() + colon + 1);
  }
  std::unique_ptr<Collective> collective;
#ifdef BPNAS_WITH_NCCL
  if (options_.device == bpnas::v1::GPU) {
    BPNAS_ASSIGN_OR_RETURN(collective, CreateNcclCollective(o, std::move(host)));
  }
#endif
  if (collective == nullptr) {
    BPNAS_ASSIGN_OR_RETURN(collective, CreateGlooCollective(o, std::move(host)));
  }
  std::lock_guard<std::mutex> lock(r->mu);
  r->collective = std::move(collective);
  if (r->stop) r->collective->Abort();
  LogInfo(kComponent, "rank ", a.rank(), "/", a.world_size(), " joined its peers");
  return absl::OkStatus();
}

absl::StatusOr<std::pair<int64_t, std::string>> WorkerAgent::FetchCheckpoint(Running* r) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  bpnas::v1::FetchCheckpointRequest req;
  req.set_attempt_token(r->assignment.attempt_token());
  auto stream = stub_->FetchCheckpoint(&ctx, req);
  bpnas::v1::CheckpointChunk chunk;
  std::pair<int64_t, std::string> out{0, ""};
  std::string stored_sha256;  // the coordinator's hash of the checkpoint it stored
  bool first = true;
  while (stream->Read(&chunk)) {
    if (first) {
      out.first = chunk.step();
      stored_sha256 = chunk.sha256();
    }
    first = false;
    out.second += chunk.data();
  }
  grpc::Status s = stream->Finish();
  if (!s.ok()) return FromGrpcStatus(s);
  // A checkpoint damaged on the way is not resumed from: this attempt fails and the next one
  // fetches it again.
  if (!stored_sha256.empty() && Sha256Hex(out.second) != stored_sha256) {
    return absl::DataLossError(absl::StrCat("the checkpoint of step ", out.first, " arrived with sha256 ",
                                            Sha256Hex(out.second), ", the coordinator stored ",
                                            stored_sha256));
  }
  return out;
}

absl::Status WorkerAgent::UploadCheckpoint(Running* r, int64_t step, const std::string& state) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  bpnas::v1::UploadCheckpointResponse resp;
  auto stream = stub_->UploadCheckpoint(&ctx, &resp);
  bpnas::v1::CheckpointChunk first;
  first.set_attempt_token(r->assignment.attempt_token());
  first.set_step(step);
  first.set_sha256(Sha256Hex(state));  // the coordinator stores the checkpoint only if its bytes match
  WriteChunked(stream.get(), first, state, options_.chunk_bytes);
  grpc::Status s = stream->Finish();
  if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) r->stop = true;  // the attempt ended
  return FromGrpcStatus(s);
}

absl::Status WorkerAgent::Complete(Running* r, bool succeeded, const std::string& error,
                                   const std::string& artifact, const bpnas::v1::SearchResult& result) {
  const std::string sha = Sha256Hex(artifact);
  const auto give_up = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(int64_t(1000 * options_.completion_retry_seconds));
  int backoff_ms = 250;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
    bpnas::v1::CompleteAttemptResponse resp;
    auto stream = stub_->CompleteAttempt(&ctx, &resp);
    bpnas::v1::CompleteAttemptChunk first;
    first.set_attempt_token(r->assignment.attempt_token());
    first.set_succeeded(succeeded);
    first.set_error(error);
    if (succeeded) {
      *first.mutable_result() = result;
      first.set_sha256(sha);
      first.set_total_bytes(int64_t(artifact.size()));
    }
    WriteChunked(stream.get(), first, artifact, options_.chunk_bytes);
    grpc::Status s = stream->Finish();
    if (s.ok()) return absl::OkStatus();
    // Only an unreachable coordinator is worth retrying; anything else (the attempt ended, a
    // damaged upload refused) is final for this attempt.
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE || std::chrono::steady_clock::now() > give_up ||
        r->stop) {
      return FromGrpcStatus(s);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(5000, backoff_ms * 2);
  }
}

}  // namespace bpnas
