#include "cli/client_commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "artifact/model_file.h"
#include "bpnas/v1/service.grpc.pb.h"
#include "cli/cli_util.h"
#include "cli/export_command.h"
#include "cli/progress.h"
#include "common/grpc_status.h"
#include "common/sha256.h"
#include "common/status.h"
#include "spec/progress.h"
#include "spec/spec.h"

namespace bpnas {
namespace {

using bpnas::v1::Job;
using bpnas::v1::SearchService;

constexpr char kDefaultServer[] = "127.0.0.1:50051";

const std::set<std::string> kClientOptions = {"server", "timeout"};

std::set<std::string> With(std::set<std::string> a, const std::set<std::string>& b) {
  a.insert(b.begin(), b.end());
  return a;
}

struct Client {
  std::string address;
  double timeout_seconds = 10;
  std::unique_ptr<SearchService::Stub> stub;

  void Deadline(grpc::ClientContext* ctx, double seconds = -1) const {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(int64_t(1000 * (seconds > 0 ? seconds : timeout_seconds))));
  }
  // A failed call as a Status; an unreachable server says where it looked and what to do.
  absl::Status Error(const grpc::Status& s) const {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(
          absl::StrCat("cannot reach the coordinator at ", address, " (", s.error_message(),
                       "); start one with `bpnas up`, or pass --server / set BPNAS_SERVER"));
    }
    return FromGrpcStatus(s);
  }
};

absl::StatusOr<Client> MakeClient(const Args& args) {
  Client c;
  if (args.options.count("server"))
    c.address = args.options.at("server");
  else if (const char* env = std::getenv("BPNAS_SERVER"); env != nullptr && *env)
    c.address = env;
  else
    c.address = kDefaultServer;
  if (args.options.count("timeout")) {
    if (!absl::SimpleAtod(args.options.at("timeout"), &c.timeout_seconds) || !(c.timeout_seconds > 0)) {
      return absl::InvalidArgumentError("--timeout: a positive number of seconds");
    }
  }
  grpc::ChannelArguments ch;
  ch.SetMaxReceiveMessageSize(16 << 20);
  c.stub =
      SearchService::NewStub(grpc::CreateCustomChannel(c.address, grpc::InsecureChannelCredentials(), ch));
  return c;
}

bool IsTerminal(bpnas::v1::JobState s) {
  return s == bpnas::v1::SUCCEEDED || s == bpnas::v1::FAILED || s == bpnas::v1::CANCELLED;
}

int ExitCodeForState(bpnas::v1::JobState s) { return s == bpnas::v1::SUCCEEDED ? 0 : 1; }

std::string RandomRequestId() {
  std::random_device rd;
  std::mt19937_64 g((uint64_t(rd()) << 32) ^ rd() ^ uint64_t(getpid()));
  char buf[40];
  std::snprintf(buf, sizeof(buf), "cli-%016llx", (unsigned long long)g());
  return buf;
}

void PrintJob(const Job& j, FILE* out) {
  std::fprintf(out, "job %s  %s  state %s", j.id().c_str(), j.name().empty() ? "(no name)" : j.name().c_str(),
               bpnas::v1::JobState_Name(j.state()).c_str());
  if (j.state() == bpnas::v1::RUNNING && !j.phase().empty()) std::fprintf(out, " (%s)", j.phase().c_str());
  std::fprintf(out, "  attempts %u\n", j.attempts());
  if (j.has_latest_progress() && !IsTerminal(j.state())) {
    const auto& p = j.latest_progress();
    std::fprintf(out, "  progress: %s epoch %u/%u step %lld/%lld  ce %.3f  cost/budget %.3f %s  %.0f%% done",
                 p.phase().c_str(), p.epoch(), p.epochs(), (long long)p.epoch_step(),
                 (long long)p.epoch_steps(), p.cross_entropy(), p.expected_ratio(),
                 p.feasible() ? "feasible" : "OVER BUDGET", 100 * p.fraction_done());
    if (p.eta_seconds() > 0) std::fprintf(out, "  ETA %.0fs", p.eta_seconds());
    std::fputc('\n', out);
  }
  if (j.state() == bpnas::v1::SUCCEEDED) {
    const auto& r = j.result();
    std::fprintf(out, "  result: test accuracy %.2f%%  cost %s", r.test_accuracy(), Human(r.cost()).c_str());
    if (r.budget() > 0) {
      std::fprintf(out, " / budget %s (%.3f) %s", Human(r.budget()).c_str(), r.cost() / r.budget(),
                   r.within_budget() ? "within budget" : "OVER BUDGET");
    }
    if (const std::string check = UniformCheckSummary(r); !check.empty()) {
      std::fprintf(out, "\n  uniform check: %s", check.c_str());
    }
    std::fprintf(out, "\n  artifact: %lld bytes, sha256 %s\n", (long long)j.artifact_bytes(),
                 j.artifact_sha256().c_str());
  }
  if (!j.error().empty()) std::fprintf(out, "  error: %s\n", j.error().c_str());
}

// Follows a job until it ends; reconnects (resuming after the last step seen) when the coordinator
// goes away, for up to `reconnect_seconds`. Returns the final job.
absl::StatusOr<Job> FollowJob(const Client& c, const std::string& job_id, bool json,
                              double reconnect_seconds) {
  ProgressPrinter printer(stderr, isatty(fileno(stderr)) != 0);
  int64_t after = -1;
  Job last;
  bool have_last = false;
  auto lost_since = std::chrono::steady_clock::now();
  bool lost = false;
  for (;;) {
    grpc::ClientContext ctx;
    c.Deadline(&ctx, 7 * 24 * 3600.0);
    bpnas::v1::WatchJobRequest req;
    req.set_job_id(job_id);
    req.set_after_step(after);
    auto stream = c.stub->WatchJob(&ctx, req);
    bpnas::v1::WatchJobEvent ev;
    while (stream->Read(&ev)) {
      lost = false;
      if (ev.has_progress()) {
        after = ev.progress().step();
        if (json)
          std::printf("%s\n", ToJson(ev).c_str());
        else
          printer(FromProgressProto(ev.progress()));
        std::fflush(stdout);
      }
      if (ev.has_job()) {
        const bool changed = !have_last || last.state() != ev.job().state();
        last = ev.job();
        have_last = true;
        if (json) {
          std::printf("%s\n", ToJson(ev).c_str());
          std::fflush(stdout);
        } else if (changed) {
          printer.Finish();
          std::fprintf(stderr, "job %s: %s\n", last.id().c_str(),
                       bpnas::v1::JobState_Name(last.state()).c_str());
        }
      }
    }
    grpc::Status s = stream->Finish();
    if (have_last && IsTerminal(last.state())) {
      printer.Finish();
      return last;
    }
    const bool retry = s.ok() || s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!retry) return c.Error(s);
    if (!lost) {
      lost = true;
      lost_since = std::chrono::steady_clock::now();
      printer.Finish();
      std::fprintf(stderr, "bpnas: lost the coordinator at %s; reconnecting\n", c.address.c_str());
    }
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - lost_since).count() >
        reconnect_seconds) {
      return c.Error(s);
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

absl::StatusOr<Job> GetJob(const Client& c, const std::string& id) {
  grpc::ClientContext ctx;
  c.Deadline(&ctx);
  bpnas::v1::GetJobRequest req;
  req.set_job_id(id);
  Job job;
  grpc::Status s = c.stub->GetJob(&ctx, req, &job);
  if (!s.ok()) return c.Error(s);
  return job;
}

}  // namespace

int CmdSubmit(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, With(kClientOptions, {"request-id"}), {"wait", "json"});
  if (!args.ok()) return Fail(args.status());
  if (args->positional.size() != 1)
    return Fail(absl::InvalidArgumentError("submit: exactly one SPEC.json expected"));
  auto spec = LoadSpecFile(args->positional[0]);
  if (!spec.ok()) return Fail(spec.status());
  auto c = MakeClient(*args);
  if (!c.ok()) return Fail(c.status());
  bpnas::v1::SubmitJobRequest req;
  req.set_request_id(args->options.count("request-id") ? args->options["request-id"] : RandomRequestId());
  *req.mutable_spec() = *spec;
  bpnas::v1::SubmitJobResponse resp;
  grpc::Status s;
  // Retrying is safe: the request id makes SubmitJob idempotent.
  for (int attempt = 0; attempt < 3; ++attempt) {
    grpc::ClientContext ctx;
    c->Deadline(&ctx);
    s = c->stub->SubmitJob(&ctx, req, &resp);
    if (s.ok() || s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300 << attempt));
  }
  if (!s.ok()) {
    absl::Status err = c->Error(s);
    if (err.code() == absl::StatusCode::kInvalidArgument) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(args->positional[0], ": ", err.message())));
    }
    return Fail(err);
  }
  const bool json = args->flags.count("json") > 0;
  if (json)
    std::printf("%s\n", ToJson(resp).c_str());
  else
    std::printf("%s\n", resp.job().id().c_str());
  std::fflush(stdout);
  if (!args->flags.count("wait")) return 0;
  auto final_job = FollowJob(*c, resp.job().id(), json, 600);
  if (!final_job.ok()) return Fail(final_job.status());
  if (!json) PrintJob(*final_job, stdout);
  return ExitCodeForState(final_job->state());
}

int CmdStatus(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, kClientOptions, {"json"});
  if (!args.ok()) return Fail(args.status());
  if (args->positional.size() != 1)
    return Fail(absl::InvalidArgumentError("status: exactly one JOB id expected"));
  auto c = MakeClient(*args);
  if (!c.ok()) return Fail(c.status());
  auto job = GetJob(*c, args->positional[0]);
  if (!job.ok()) return Fail(job.status());
  if (args->flags.count("json"))
    std::printf("%s\n", ToJson(*job).c_str());
  else
    PrintJob(*job, stdout);
  return 0;
}

int CmdList(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, With(kClientOptions, {"state", "limit"}), {"json"});
  if (!args.ok()) return Fail(args.status());
  auto c = MakeClient(*args);
  if (!c.ok()) return Fail(c.status());
  bpnas::v1::ListJobsRequest req;
  if (args->options.count("state")) {
    bpnas::v1::JobState st;
    if (!bpnas::v1::JobState_Parse(args->options["state"], &st) || st == bpnas::v1::JOB_STATE_UNSPECIFIED) {
      return Fail(
          absl::InvalidArgumentError("--state: one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED"));
    }
    req.set_state(st);
  }
  if (args->options.count("limit")) {
    uint32_t n = 0;
    if (!absl::SimpleAtoi(args->options["limit"], &n) || n == 0) {
      return Fail(absl::InvalidArgumentError("--limit: a positive integer"));
    }
    req.set_limit(n);
  }
  grpc::ClientContext ctx;
  c->Deadline(&ctx);
  bpnas::v1::ListJobsResponse resp;
  grpc::Status s = c->stub->ListJobs(&ctx, req, &resp);
  if (!s.ok()) return Fail(c->Error(s));
  if (args->flags.count("json")) {
    std::printf("%s\n", ToJson(resp).c_str());
    return 0;
  }
  std::printf("%-16s %-10s %-9s %-24s %9s %9s\n", "JOB", "STATE", "PHASE", "NAME", "ACCURACY", "COST/BUD");
  for (const Job& j : resp.jobs()) {
    std::string acc = j.state() == bpnas::v1::SUCCEEDED ? absl::StrCat(j.result().test_accuracy()) : "-";
    std::string ratio = "-";
    if (j.state() == bpnas::v1::SUCCEEDED && j.result().budget() > 0) {
      char b[32];
      std::snprintf(b, sizeof(b), "%.3f", j.result().cost() / j.result().budget());
      ratio = b;
      std::snprintf(b, sizeof(b), "%.2f%%", j.result().test_accuracy());
      acc = b;
    }
    std::printf("%-16s %-10s %-9s %-24s %9s %9s\n", j.id().c_str(),
                bpnas::v1::JobState_Name(j.state()).c_str(),
                j.state() == bpnas::v1::RUNNING ? j.phase().c_str() : "-", j.name().substr(0, 24).c_str(),
                acc.c_str(), ratio.c_str());
  }
  return 0;
}

int CmdWatch(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, kClientOptions, {"json"});
  if (!args.ok()) return Fail(args.status());
  if (args->positional.size() != 1)
    return Fail(absl::InvalidArgumentError("watch: exactly one JOB id expected"));
  auto c = MakeClient(*args);
  if (!c.ok()) return Fail(c.status());
  const bool json = args->flags.count("json") > 0;
  // An unknown job or unreachable server fails at once rather than after the reconnect window.
  auto first = GetJob(*c, args->positional[0]);
  if (!first.ok()) return Fail(first.status());
  auto job = FollowJob(*c, args->positional[0], json, 600);
  if (!job.ok()) return Fail(job.status());
  if (!json) PrintJob(*job, stdout);
  return ExitCodeForState(job->state());
}

int CmdCancel(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, kClientOptions, {"json"});
  if (!args.ok()) return Fail(args.status());
  if (args->positional.size() != 1)
    return Fail(absl::InvalidArgumentError("cancel: exactly one JOB id expected"));
  auto c = MakeClient(*args);
  if (!c.ok()) return Fail(c.status());
  grpc::ClientContext ctx;
  c->Deadline(&ctx);
  bpnas::v1::CancelJobRequest req;
  req.set_job_id(args->positional[0]);
  Job job;
  grpc::Status s = c->stub->CancelJob(&ctx, req, &job);
  if (!s.ok()) return Fail(c->Error(s));
  if (args->flags.count("json"))
    std::printf("%s\n", ToJson(job).c_str());
  else
    PrintJob(job, stdout);
  return 0;
}

int CmdFetch(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, With(kClientOptions, {"o", "out", "onnx"}), {"json"});
  if (!args.ok()) return Fail(args.status());
  if (args->positional.size() != 1)
    return Fail(absl::InvalidArgumentError("fetch: exactly one JOB id expected"));
  const std::string job_id = args->positional[0];
  std::string out = args->options.count("o")     ? args->options["o"]
                    : args->options.count("out") ? args->options["out"]
                                                 : "";
  const std::string onnx = args->options.count("onnx") ? args->options["onnx"] : "";
  if (out.empty() && onnx.empty()) {
    return Fail(absl::InvalidArgumentError("fetch: -o MODEL.bpq or --onnx MODEL.onnx (or both) is required"));
  }
  auto c = MakeClient(*args);
  if (!c.ok()) return Fail(c.status());
  const std::string part = out + ".part";
  if (!out.empty()) {
    // Fail on an unwritable output before the download, not after.
    std::ofstream probe(part, std::ios::binary | std::ios::trunc);
    if (!probe) return Fail(absl::InvalidArgumentError(absl::StrCat("-o ", out, ": cannot write there")));
  }
  grpc::ClientContext ctx;
  c->Deadline(&ctx, std::max(600.0, c->timeout_seconds));
  bpnas::v1::FetchArtifactRequest req;
  req.set_job_id(job_id);
  auto stream = c->stub->FetchArtifact(&ctx, req);
  bpnas::v1::ArtifactChunk chunk;
  std::string want_sha, bytes;
  int64_t want_bytes = -1;
  Sha256 hash;
  bool first = true;
  while (stream->Read(&chunk)) {
    if (first) {
      want_sha = chunk.sha256();
      want_bytes = chunk.total_bytes();
      first = false;
    }
    hash.Update(chunk.data());
    bytes += chunk.data();
  }
  grpc::Status s = stream->Finish();
  auto fail = [&](const absl::Status& st) {
    if (!out.empty()) std::remove(part.c_str());
    return Fail(st);
  };
  if (!s.ok()) return fail(c->Error(s));
  const int64_t got_bytes = int64_t(bytes.size());
  const std::string got_sha = hash.HexDigest();
  if (got_sha != want_sha || got_bytes != want_bytes) {
    return fail(absl::DataLossError(absl::StrCat("fetch: the artifact arrived damaged (", got_bytes,
                                                 " bytes, sha256 ", got_sha, "; expected ", want_bytes,
                                                 " bytes, sha256 ", want_sha, "); nothing written")));
  }
  // The bytes arrived as the coordinator stored them; they must also be a model this bpnas reads
  // (checksum, format, every node consistent) before they become a file anyone runs, in either form.
  auto parsed = ParseModel(bytes, absl::StrCat("fetch: job ", job_id, "'s artifact"));
  if (!parsed.ok()) {
    const std::string where = out.empty() ? onnx : out;
    return fail(absl::Status(parsed.status().code(),
                             absl::StrCat(parsed.status().message(), "; nothing written to ", where)));
  }
  const bpnas::v1::QuantizedModel model = std::move(*parsed);
  if (!out.empty()) {
    std::ofstream f(part, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    f.close();
    if (!f || std::rename(part.c_str(), out.c_str()) != 0) {
      return fail(absl::InvalidArgumentError(absl::StrCat("-o ", out, ": cannot write there")));
    }
  }
  int64_t onnx_bytes = 0;
  if (!onnx.empty()) {
    auto written = WriteOnnxFile(model, OnnxExportOptions{}, onnx);
    if (!written.ok()) {
      const absl::Status& st = written.status();
      return Fail(st.code() == absl::StatusCode::kInvalidArgument
                      ? absl::InvalidArgumentError(absl::StrCat("--onnx ", st.message()))
                      : st);
    }
    onnx_bytes = *written;
  }
  if (args->flags.count("json")) {
    JsonObject o;
    o.String("job_id", job_id)
        .Number("bytes", double(got_bytes))
        .String("sha256", got_sha)
        .Bool("verified", true);
    if (!out.empty()) o.String("path", out);
    if (!onnx.empty()) o.String("onnx", onnx).Number("onnx_bytes", double(onnx_bytes));
    std::printf("%s\n", o.ToJson(/*single_line=*/true).c_str());
  } else {
    if (!out.empty()) {
      std::printf("wrote %s: %lld bytes, sha256 %s (verified)\n", out.c_str(), (long long)got_bytes,
                  got_sha.c_str());
    }
    if (!onnx.empty()) {
      std::printf("wrote %s: %lld bytes, ONNX QDQ graph of job %s's model (sha256 %s, verified)\n",
                  onnx.c_str(), (long long)onnx_bytes, job_id.c_str(), got_sha.c_str());
    }
  }
  return 0;
}

}  // namespace bpnas
