// The coordinator's services over real gRPC on loopback, backed by a real PostgreSQL (started by
// pg_test_env). A "worker" here is the test itself calling WorkerService, so every step of a job's
// life can be checked without training.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "artifact/builder.h"
#include "artifact/model_file.h"
#include "bpnas/v1/service.grpc.pb.h"
#include "common/http_server.h"
#include "common/sha256.h"
#include "common/subprocess.h"
#include "google/protobuf/util/json_util.h"
#include "server/coordinator.h"
#include "server/pg/pg_job_store.h"
#include "tests/pg_test_env.h"

namespace bpnas {
namespace {

using namespace bpnas::v1;

JobSpec SpecFromJson(const std::string& json) {
  JobSpec spec;
  auto st = google::protobuf::util::JsonStringToMessage(json, &spec);
  EXPECT_TRUE(st.ok()) << st.message();
  return spec;
}

JobSpec TinySpec() {
  return SpecFromJson(R"({"name": "svc", "model": {"name": "tiny"},
    "dataset": {"kind": "synthetic"},
    "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4}})");
}

// One coordinator (server/coordinator.h) on a loopback port with its HTTP endpoints, over a store
// of the test database. Destroying it is a coordinator shutdown; the database stays.
struct Coordinator {
  explicit Coordinator(JobManagerOptions mo) {
    auto s = PgJobStore::Open(PgTestEnv::Get().dsn(), 4);
    EXPECT_TRUE(s.ok()) << s.status();
    store = std::move(*s);
    CoordinatorOptions options;
    options.listen = "127.0.0.1:0";
    options.manager = mo;
    options.watch_poll = absl::Milliseconds(50);
    auto c = bpnas::Coordinator::Start(store.get(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    coordinator = std::move(*c);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(coordinator->port()),
                                       grpc::InsecureChannelCredentials());
    users = SearchService::NewStub(channel);
    worker_api = WorkerService::NewStub(channel);
    auto h = HttpServer::Start("127.0.0.1:0", 2);
    EXPECT_TRUE(h.ok()) << h.status();
    http = std::move(*h);
    coordinator->ServeHttp(http.get());
  }
  ~Coordinator() {
    http.reset();
    coordinator.reset();
  }

  std::unique_ptr<PgJobStore> store;
  std::unique_ptr<bpnas::Coordinator> coordinator;
  std::unique_ptr<SearchService::Stub> users;
  std::unique_ptr<WorkerService::Stub> worker_api;
  std::unique_ptr<HttpServer> http;
};

void Deadline(grpc::ClientContext* ctx, int seconds = 10) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(PgTestEnv::Get().Reset().ok());
    JobManagerOptions mo;
    mo.schedule_interval = absl::Milliseconds(50);
    mo.lease = absl::Milliseconds(1500);
    mo.heartbeat_interval = absl::Milliseconds(100);
    mo.max_attempts = 2;
    options_ = mo;
    c_ = std::make_unique<Coordinator>(mo);
  }

  absl::StatusOr<SubmitJobResponse> Submit(const JobSpec& spec, const std::string& request_id = "") {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    SubmitJobRequest req;
    req.set_request_id(request_id);
    *req.mutable_spec() = spec;
    SubmitJobResponse resp;
    grpc::Status s = c_->users->SubmitJob(&ctx, req, &resp);
    if (!s.ok()) return absl::Status(absl::StatusCode(s.error_code()), s.error_message());
    return resp;
  }
  Job Get(const std::string& id) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    GetJobRequest req;
    req.set_job_id(id);
    Job job;
    EXPECT_TRUE(c_->users->GetJob(&ctx, req, &job).ok());
    return job;
  }
  int CountJobs() {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ListJobsRequest req;
    ListJobsResponse resp;
    EXPECT_TRUE(c_->users->ListJobs(&ctx, req, &resp).ok());
    return resp.jobs_size();
  }
  std::string Register() {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    RegisterRequest req;
    req.set_name("test-worker");
    req.set_device(CPU);
    RegisterResponse resp;
    EXPECT_TRUE(c_->worker_api->Register(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.lease_ms(), 1500u);
    return resp.worker_id();
  }
  HeartbeatResponse Beat(const std::string& worker, const std::string& token = "") {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    HeartbeatRequest req;
    req.set_worker_id(worker);
    req.set_attempt_token(token);
    HeartbeatResponse resp;
    grpc::Status s = c_->worker_api->Heartbeat(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }
  // Heartbeats until the worker is told to run something (the scheduler runs every 50 ms).
  Assignment WaitForAssignment(const std::string& worker) {
    for (int i = 0; i < 100; ++i) {
      HeartbeatResponse r = Beat(worker);
      if (r.action() == HeartbeatResponse::RUN) return r.assignment();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "no assignment within 5 s";
    return Assignment();
  }
  grpc::Status Report(const Assignment& a, int64_t step, const std::string& phase, bool* stop = nullptr) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ReportProgressRequest req;
    req.set_attempt_token(a.attempt_token());
    req.set_job_id(a.job_id());
    req.mutable_progress()->set_attempt(a.attempt());
    req.mutable_progress()->set_step(step);
    req.mutable_progress()->set_phase(phase);
    req.mutable_progress()->set_cross_entropy(1.0 / double(step));
    req.mutable_progress()->set_expected_ratio(0.95);
    req.mutable_progress()->set_feasible(true);
    ReportProgressResponse resp;
    grpc::Status s = c_->worker_api->ReportProgress(&ctx, req, &resp);
    if (stop != nullptr) *stop = resp.stop();
    return s;
  }
  grpc::Status Complete(const Assignment& a, const std::string& artifact, const std::string& claimed_sha,
                        JobState* state = nullptr) {
    grpc::ClientContext ctx;
    Deadline(&ctx, 30);
    CompleteAttemptResponse resp;
    auto w = c_->worker_api->CompleteAttempt(&ctx, &resp);
    CompleteAttemptChunk first;
    first.set_attempt_token(a.attempt_token());
    first.set_succeeded(true);
    first.mutable_result()->set_test_accuracy(77.5);
    first.mutable_result()->set_within_budget(true);
    first.set_sha256(claimed_sha);
    first.set_total_bytes(int64_t(artifact.size()));
    const size_t chunk = 1 << 20;
    for (size_t off = 0; off < artifact.size(); off += chunk) {
      CompleteAttemptChunk m = off == 0 ? first : CompleteAttemptChunk();
      m.set_data(artifact.substr(off, chunk));
      EXPECT_TRUE(w->Write(m));
    }
    w->WritesDone();
    grpc::Status s = w->Finish();
    if (state != nullptr) *state = resp.state();
    return s;
  }

  // Uploads `data` as a checkpoint at `step`, stating `claimed_sha` as the worker's checksum.
  grpc::Status UploadCheckpoint(const Assignment& a, int64_t step, const std::string& data,
                                const std::string& claimed_sha) {
    grpc::ClientContext ctx;
    Deadline(&ctx, 30);
    UploadCheckpointResponse resp;
    auto w = c_->worker_api->UploadCheckpoint(&ctx, &resp);
    CheckpointChunk first;
    first.set_attempt_token(a.attempt_token());
    first.set_step(step);
    first.set_sha256(claimed_sha);
    const size_t chunk = 1 << 20;
    size_t off = 0;
    do {
      CheckpointChunk m = off == 0 ? first : CheckpointChunk();
      m.set_data(data.substr(off, chunk));
      off += chunk;
      if (!w->Write(m)) break;
    } while (off < data.size());
    w->WritesDone();
    return w->Finish();
  }
  // The latest checkpoint as FetchCheckpoint streams it: {step, sha256 of the first message, bytes}.
  grpc::Status FetchCheckpoint(const Assignment& a, int64_t* step, std::string* sha, std::string* data) {
    grpc::ClientContext ctx;
    Deadline(&ctx, 30);
    FetchCheckpointRequest req;
    req.set_attempt_token(a.attempt_token());
    auto stream = c_->worker_api->FetchCheckpoint(&ctx, req);
    CheckpointChunk chunk;
    bool first = true;
    while (stream->Read(&chunk)) {
      if (first) {
        *step = chunk.step();
        *sha = chunk.sha256();
        first = false;
      }
      *data += chunk.data();
    }
    return stream->Finish();
  }

  JobManagerOptions options_;
  std::unique_ptr<Coordinator> c_;
};

TEST_F(ServiceTest, RepeatedRequestIdReturnsTheSameJob) {
  auto first = Submit(TinySpec(), "req-1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->created());
  EXPECT_EQ(first->job().state(), QUEUED);
  auto again = Submit(TinySpec(), "req-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created());
  EXPECT_EQ(again->job().id(), first->job().id());
  EXPECT_EQ(CountJobs(), 1);
  auto other = Submit(TinySpec(), "req-2");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->job().id(), first->job().id());
  EXPECT_EQ(CountJobs(), 2);
}

TEST_F(ServiceTest, BadSpecsAreInvalidArgumentNamingTheFieldAndStoreNothing) {
  struct Case {
    std::string json, field;
  };
  const std::vector<Case> cases = {
      {R"({"model": {"name": "tiny"}, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4},
           "search": {"arch_lr": -1}})",
       "search.arch_lr"},
      {R"({"model": {"name": "vgg99"}, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4}})",
       "model.name"},
      {R"({"model": {"name": "tiny"}, "constraint": {"metric": "BITOPS", "max": 1}})", "constraint.max"},
      {R"({"model": {"name": "tiny"}, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4},
           "search": {"batch_size": 0}})",
       "search.batch_size"},
      {R"({"model": {"name": "tiny"}, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4},
           "ranks": 100})",
       "ranks"},
      {R"({"model": {"name": "tiny"}, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4},
           "search_space": {"weight_bits": [2, 99]}})",
       "search_space.weight_bits"},
  };
  for (const Case& c : cases) {
    auto r = Submit(SpecFromJson(c.json), "bad-" + c.field);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(c.field), std::string::npos) << r.status();
  }
  EXPECT_EQ(CountJobs(), 0) << "a refused spec must leave the jobs table unchanged";
  // An infeasible budget says what is achievable.
  auto r =
      Submit(SpecFromJson(R"({"model": {"name": "tiny"}, "constraint": {"metric": "BITOPS", "max": 1}})"));
  EXPECT_NE(r.status().message().find("cheapest network"), std::string::npos) << r.status();
}

TEST_F(ServiceTest, AJobRunsToSuccessAndItsArtifactStreamsBackIntact) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok()) << sub.status();
  const std::string id = sub->job().id();
  const std::string worker = Register();
  Assignment a = WaitForAssignment(worker);
  ASSERT_EQ(a.job_id(), id);
  EXPECT_EQ(a.rank(), 0u);
  EXPECT_EQ(a.world_size(), 1u);
  EXPECT_EQ(a.spec().search().batch_size(), 128u) << "the assignment carries the normalized spec";
  EXPECT_EQ(Get(id).state(), RUNNING);

  // A watcher sees every report once, then the end.
  std::vector<int64_t> watched;
  JobState watched_final = JOB_STATE_UNSPECIFIED;
  std::thread watcher([&] {
    grpc::ClientContext ctx;
    Deadline(&ctx, 30);
    WatchJobRequest req;
    req.set_job_id(id);
    req.set_after_step(-1);
    auto stream = c_->users->WatchJob(&ctx, req);
    WatchJobEvent ev;
    while (stream->Read(&ev)) {
      if (ev.has_progress()) watched.push_back(ev.progress().step());
      if (ev.has_job()) watched_final = ev.job().state();
    }
    EXPECT_TRUE(stream->Finish().ok());
  });

  for (int64_t step = 1; step <= 5; ++step) ASSERT_TRUE(Report(a, step, "search").ok());
  ASSERT_TRUE(Report(a, 5, "search").ok()) << "a repeated report is accepted";
  Job running = Get(id);
  EXPECT_EQ(running.phase(), "search");
  EXPECT_EQ(running.latest_progress().step(), 5);

  std::string artifact(3 * (1 << 20) + 12345, '\0');
  for (size_t i = 0; i < artifact.size(); ++i) artifact[i] = char((i * 131) ^ (i >> 7));
  JobState state;
  grpc::Status done = Complete(a, artifact, Sha256Hex(artifact), &state);
  ASSERT_TRUE(done.ok()) << done.error_message();
  EXPECT_EQ(state, SUCCEEDED);
  watcher.join();
  EXPECT_EQ(watched, (std::vector<int64_t>{1, 2, 3, 4, 5})) << "each step exactly once";
  EXPECT_EQ(watched_final, SUCCEEDED);

  Job finished = Get(id);
  EXPECT_EQ(finished.state(), SUCCEEDED);
  EXPECT_DOUBLE_EQ(finished.result().test_accuracy(), 77.5);
  EXPECT_EQ(finished.artifact_sha256(), Sha256Hex(artifact));

  grpc::ClientContext ctx;
  Deadline(&ctx, 30);
  FetchArtifactRequest req;
  req.set_job_id(id);
  auto stream = c_->users->FetchArtifact(&ctx, req);
  ArtifactChunk chunk;
  std::string got, sha;
  int64_t total = -1;
  bool first = true;
  while (stream->Read(&chunk)) {
    if (first) {
      sha = chunk.sha256();
      total = chunk.total_bytes();
      first = false;
    }
    got += chunk.data();
  }
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_EQ(sha, Sha256Hex(artifact)) << "the checksum comes first";
  EXPECT_EQ(total, int64_t(artifact.size()));
  EXPECT_TRUE(got == artifact);

  // The attempt is over: its token can no longer write, and the worker is idle.
  bool stop = false;
  grpc::Status late = Report(a, 6, "search", &stop);
  EXPECT_TRUE(!late.ok() || stop) << "a stale token must not be told to go on";
  EXPECT_EQ(Beat(worker, a.attempt_token()).action(), HeartbeatResponse::STOP);
  EXPECT_EQ(Get(id).latest_progress().step(), 5) << "nothing stored from the ended attempt";
}

TEST_F(ServiceTest, DamagedArtifactIsRefusedAndTheJobKeepsRunning) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok());
  Assignment a = WaitForAssignment(Register());
  const std::string artifact(100000, 'x');
  grpc::Status s = Complete(a, artifact, Sha256Hex("something else"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  EXPECT_EQ(Get(sub->job().id()).state(), RUNNING);
  grpc::ClientContext ctx;
  Deadline(&ctx);
  FetchArtifactRequest req;
  req.set_job_id(sub->job().id());
  auto stream = c_->users->FetchArtifact(&ctx, req);
  ArtifactChunk chunk;
  while (stream->Read(&chunk)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

// `bpnas fetch` runs the downloaded bytes through ParseModel before it writes anything: bytes the
// coordinator stored intact (their sha256 matches) but that are not a consistent model leave no file
// and exit 2 naming the job, the output and what is wrong; a real model is written.
TEST_F(ServiceTest, FetchWritesOnlyAModelThatParses) {
  const std::string bpnas =
      std::string(std::getenv("BPNAS_BIN_DIR") ? std::getenv("BPNAS_BIN_DIR") : ".") + "/bpnas";
  if (access(bpnas.c_str(), X_OK) != 0) GTEST_SKIP() << "no bpnas binary (a build without LibTorch)";
  auto fetch = [&](const std::string& job, const std::string& out) {
    SubprocessOptions o;
    o.stdout_to = SubprocessOptions::Output::kCapture;
    o.stderr_to = SubprocessOptions::Output::kStdout;
    auto r = RunSubprocess(
        {bpnas, "fetch", job, "-o", out, "--server", "127.0.0.1:" + std::to_string(c_->coordinator->port())},
        o, absl::Seconds(60));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : SubprocessResult{};
  };
  auto graph = BuildModelGraph({.name = "tiny"});
  ASSERT_TRUE(graph.ok());
  auto model = MakeRandomModel(*graph, {.weight_bits = 4, .activation_bits = 4});
  ASSERT_TRUE(model.ok());
  bpnas::v1::QuantizedModel inconsistent = *model;
  inconsistent.mutable_nodes(0)->mutable_conv()->set_stride(0);
  inconsistent.set_checksum(ModelChecksum(inconsistent));
  const std::string good = SerializeModel(*model);
  struct Case {
    std::string what, bytes, message;
  };
  const Case bad[] = {
      {"random bytes", "definitely not a model", "not a bpnas model"},
      {"a truncated model", good.substr(0, good.size() / 2), "not a bpnas model"},
      {"a flipped checksum", good.substr(0, good.size() - 1) + char(good.back() ^ 1), "checksum mismatch"},
      {"a checksummed inconsistent model", SerializeModel(inconsistent), "stride 0"},
  };
  const std::string dir = ::testing::TempDir();
  for (const Case& c : bad) {
    SCOPED_TRACE(c.what);
    auto sub = Submit(TinySpec(), "fetch-" + c.what);
    ASSERT_TRUE(sub.ok()) << sub.status();
    Assignment a = WaitForAssignment(Register());
    ASSERT_TRUE(Complete(a, c.bytes, Sha256Hex(c.bytes)).ok());
    const std::string out = dir + "/fetched_bad.bpq";
    std::remove(out.c_str());
    SubprocessResult r = fetch(a.job_id(), out);
    EXPECT_EQ(r.exit_code, 2) << r.stdout_text;
    EXPECT_NE(r.stdout_text.find("job " + a.job_id()), std::string::npos) << r.stdout_text;
    EXPECT_NE(r.stdout_text.find("nothing written to " + out), std::string::npos) << r.stdout_text;
    EXPECT_NE(r.stdout_text.find(c.message), std::string::npos) << r.stdout_text;
    EXPECT_NE(access(out.c_str(), F_OK), 0) << "no file";
    EXPECT_NE(access((out + ".part").c_str(), F_OK), 0) << "no partial file";
  }
  auto sub = Submit(TinySpec(), "fetch-good");
  ASSERT_TRUE(sub.ok());
  Assignment a = WaitForAssignment(Register());
  ASSERT_TRUE(Complete(a, good, Sha256Hex(good)).ok());
  const std::string out = dir + "/fetched_good.bpq";
  SubprocessResult r = fetch(a.job_id(), out);
  ASSERT_EQ(r.exit_code, 0) << r.stdout_text;
  auto read = ReadModelFile(out);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->checksum(), model->checksum());
}

TEST_F(ServiceTest, ACheckpointUploadedWithItsChecksumComesBackWithIt) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok());
  const std::string worker = Register();
  Assignment a = WaitForAssignment(worker);
  std::string state(2 * (1 << 20) + 77, '\0');
  for (size_t i = 0; i < state.size(); ++i) state[i] = char((i * 7) ^ (i >> 9));
  grpc::Status up = UploadCheckpoint(a, 40, state, Sha256Hex(state));
  ASSERT_TRUE(up.ok()) << up.error_message();
  EXPECT_TRUE(Beat(worker, a.attempt_token()).assignment().has_checkpoint());
  int64_t step = -1;
  std::string sha, data;
  ASSERT_TRUE(FetchCheckpoint(a, &step, &sha, &data).ok());
  EXPECT_EQ(step, 40);
  EXPECT_EQ(sha, Sha256Hex(state));
  EXPECT_TRUE(data == state);
}

// The checksum is the worker's (of the bytes it sent), compared with the coordinator's (of the
// bytes that arrived): a mismatch is DATA_LOSS, a missing one INVALID_ARGUMENT, and neither stores
// anything.
TEST_F(ServiceTest, ACheckpointWhoseStatedChecksumDoesNotMatchIsRefusedAndNotStored) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok());
  const std::string worker = Register();
  Assignment a = WaitForAssignment(worker);
  const std::string state(300000, 'c');
  grpc::Status damaged = UploadCheckpoint(a, 10, state, Sha256Hex("what the worker meant to send"));
  EXPECT_EQ(damaged.error_code(), grpc::StatusCode::DATA_LOSS) << damaged.error_message();
  grpc::Status unstated = UploadCheckpoint(a, 11, state, "");
  EXPECT_EQ(unstated.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << unstated.error_message();

  EXPECT_FALSE(Beat(worker, a.attempt_token()).assignment().has_checkpoint());
  int64_t step = -1;
  std::string sha, data;
  grpc::Status fetched = FetchCheckpoint(a, &step, &sha, &data);
  EXPECT_EQ(fetched.error_code(), grpc::StatusCode::NOT_FOUND) << fetched.error_message();
  EXPECT_EQ(data, "");
  EXPECT_EQ(Get(sub->job().id()).state(), RUNNING) << "a refused upload does not end the attempt";
}

TEST_F(ServiceTest, CancelOfARunningJobStopsItsWorker) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok());
  const std::string worker = Register();
  Assignment a = WaitForAssignment(worker);
  ASSERT_TRUE(Report(a, 1, "warmup").ok());

  grpc::ClientContext ctx;
  Deadline(&ctx);
  CancelJobRequest req;
  req.set_job_id(sub->job().id());
  Job cancelled;
  ASSERT_TRUE(c_->users->CancelJob(&ctx, req, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), CANCELLED);

  EXPECT_EQ(Beat(worker, a.attempt_token()).action(), HeartbeatResponse::STOP);
  bool stop = false;
  grpc::Status s = Report(a, 2, "warmup", &stop);
  EXPECT_TRUE(!s.ok() || stop);
  JobState state;
  EXPECT_EQ(Complete(a, "x", Sha256Hex("x"), &state).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Get(sub->job().id()).state(), CANCELLED);
  EXPECT_EQ(Beat(worker).action(), HeartbeatResponse::IDLE) << "the worker is free again";
}

TEST_F(ServiceTest, ASilentWorkerLosesItsJobWhichRunsAgainElsewhere) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok());
  const std::string lost = Register();
  Assignment first = WaitForAssignment(lost);
  EXPECT_EQ(first.attempt(), 1u);
  // No heartbeats: the lease (1.5 s) expires and the job goes back to the queue.
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));
  Job job = Get(sub->job().id());
  EXPECT_EQ(job.state(), QUEUED) << job.error();
  EXPECT_NE(job.error().find(lost), std::string::npos) << "the reason names the worker: " << job.error();
  Assignment second = WaitForAssignment(Register());
  EXPECT_EQ(second.job_id(), sub->job().id());
  EXPECT_EQ(second.attempt(), 2u);
  // The lost worker must register again; its old token writes nothing.
  grpc::ClientContext ctx;
  Deadline(&ctx);
  HeartbeatRequest hb;
  hb.set_worker_id(lost);
  HeartbeatResponse resp;
  EXPECT_EQ(c_->worker_api->Heartbeat(&ctx, hb, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  bool stop = false;
  grpc::Status s = Report(first, 1, "warmup", &stop);
  EXPECT_TRUE(!s.ok() || stop);
}

TEST_F(ServiceTest, ACoordinatorRestartKeepsEveryJob) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto sub = Submit(TinySpec(), "restart-" + std::to_string(i));
    ASSERT_TRUE(sub.ok());
    ids.push_back(sub->job().id());
  }
  c_.reset();  // the coordinator goes away
  c_ = std::make_unique<Coordinator>(options_);
  EXPECT_EQ(CountJobs(), 3);
  for (const auto& id : ids) EXPECT_EQ(Get(id).state(), QUEUED);
  auto again = Submit(TinySpec(), "restart-1");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created()) << "idempotency survives the restart";
  EXPECT_EQ(again->job().id(), ids[1]);
}

TEST_F(ServiceTest, RankZeroPublishesTheRendezvousEveryRankSees) {
  JobSpec spec = TinySpec();
  spec.set_ranks(2);
  auto sub = Submit(spec);
  ASSERT_TRUE(sub.ok()) << sub.status();
  const std::string w0 = Register(), w1 = Register();
  Assignment a = WaitForAssignment(w0), b = WaitForAssignment(w1);
  ASSERT_EQ(a.job_id(), b.job_id());
  ASSERT_EQ(a.world_size(), 2u);
  const Assignment& rank0 = a.rank() == 0 ? a : b;
  const Assignment& rank1 = a.rank() == 0 ? b : a;
  const std::string& w_rank1 = a.rank() == 0 ? w1 : w0;
  EXPECT_EQ(rank1.rendezvous(), "") << "nothing published yet";
  auto publish = [&](const Assignment& who, const std::string& address) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    PublishRendezvousRequest req;
    req.set_attempt_token(who.attempt_token());
    req.set_address(address);
    PublishRendezvousResponse resp;
    return c_->worker_api->PublishRendezvous(&ctx, req, &resp);
  };
  EXPECT_EQ(publish(rank1, "10.0.0.2:1234").error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << "only rank 0 hosts the store";
  ASSERT_TRUE(publish(rank0, "10.0.0.1:29500").ok());
  EXPECT_EQ(Beat(w_rank1, rank1.attempt_token()).assignment().rendezvous(), "10.0.0.1:29500");
}

TEST_F(ServiceTest, UnknownJobsAreNotFoundAndEmptyIdsInvalid) {
  grpc::ClientContext ctx;
  Deadline(&ctx);
  GetJobRequest req;
  req.set_job_id("j-doesnotexist");
  Job job;
  EXPECT_EQ(c_->users->GetJob(&ctx, req, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ctx2;
  Deadline(&ctx2);
  CancelJobRequest cancel;
  EXPECT_EQ(c_->users->CancelJob(&ctx2, cancel, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, MetricsPassPromtoolAndShowRpcsJobsAndRunningJobGauges) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok());
  ASSERT_FALSE(Submit(SpecFromJson(R"({"model": {"name": "nope"}})")).ok());
  Assignment a = WaitForAssignment(Register());
  ASSERT_TRUE(Report(a, 1, "search").ok());
  auto body = HttpGet("127.0.0.1", c_->http->port(), "/metrics", 5000);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_NE(body->find("bpnas_rpcs_total{method=\"SubmitJob\",code=\"OK\"} 1"), std::string::npos) << *body;
  EXPECT_NE(body->find("bpnas_rpcs_total{method=\"SubmitJob\",code=\"INVALID_ARGUMENT\"} 1"),
            std::string::npos);
  EXPECT_NE(body->find("bpnas_job_submissions_total{result=\"invalid\"} 1"), std::string::npos);
  EXPECT_NE(body->find("bpnas_jobs{state=\"RUNNING\"} 1"), std::string::npos);
  EXPECT_NE(body->find("bpnas_workers{state=\"BUSY\"} 1"), std::string::npos);
  EXPECT_NE(body->find("bpnas_running_job_cost_ratio{job=\"" + a.job_id() + "\",kind=\"expected\"} 0.95"),
            std::string::npos)
      << *body;
  EXPECT_NE(body->find("bpnas_rpc_duration_seconds_bucket{method=\"ReportProgress\",le=\"+Inf\"}"),
            std::string::npos);

  const std::string path = ::testing::TempDir() + "/server_metrics.txt";
  std::ofstream(path) << *body;
  SubprocessOptions options;
  options.stdin_file = path;
  options.stdout_to = SubprocessOptions::Output::kCapture;
  options.stderr_to = SubprocessOptions::Output::kStdout;
  absl::StatusOr<SubprocessResult> check =
      RunSubprocess({"promtool", "check", "metrics"}, options, absl::Seconds(60));
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->exit_code, 0) << check->stdout_text;
  EXPECT_EQ(check->stdout_text, "") << check->stdout_text;

  // Once the job ends, its gauges go.
  grpc::ClientContext ctx;
  Deadline(&ctx);
  CancelJobRequest req;
  req.set_job_id(a.job_id());
  Job job;
  ASSERT_TRUE(c_->users->CancelJob(&ctx, req, &job).ok());
  auto after = HttpGet("127.0.0.1", c_->http->port(), "/metrics", 5000);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->find("job=\"" + a.job_id() + "\""), std::string::npos) << *after;
}

// A `job` label comes from the store's running jobs, never from the job_id a reporter claims.
TEST_F(ServiceTest, ProgressNamingAnUnknownJobCreatesNoLabelledSeries) {
  auto sub = Submit(TinySpec());
  ASSERT_TRUE(sub.ok());
  Assignment a = WaitForAssignment(Register());
  Assignment lying = a;
  lying.set_job_id("j-nosuchjob0");
  ASSERT_TRUE(Report(lying, 1, "search").ok());
  lying.set_job_id("made-up \"label\" of any length");
  ASSERT_TRUE(Report(lying, 2, "search").ok());
  auto body = HttpGet("127.0.0.1", c_->http->port(), "/metrics", 5000);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_NE(body->find("bpnas_progress_reports_total 2"), std::string::npos) << *body;
  EXPECT_EQ(body->find("j-nosuchjob0"), std::string::npos) << *body;
  EXPECT_EQ(body->find("made-up"), std::string::npos) << *body;
  EXPECT_EQ(body->find("bpnas_running_job_loss{"), std::string::npos) << *body;

  // The same reporter naming its own job does get the series.
  ASSERT_TRUE(Report(a, 3, "search").ok());
  auto after = HttpGet("127.0.0.1", c_->http->port(), "/metrics", 5000);
  ASSERT_TRUE(after.ok());
  EXPECT_NE(after->find("bpnas_running_job_feasible{job=\"" + a.job_id() + "\"} 1"), std::string::npos)
      << *after;
}

}  // namespace
}  // namespace bpnas
