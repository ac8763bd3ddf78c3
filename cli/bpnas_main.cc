// bpnas: the command-line front of the engine.
//
//   bpnas cost   --spec F [--json]             price the model; no training
//   bpnas search --spec F --out M.bpq [--json]  one search in this process
//   bpnas eval   M.bpq [--data DIR] [--integer] [--json]   accuracy from the artifact alone
//   bpnas export M.bpq -o M.onnx [--json]       the model as an ONNX QDQ graph (cli/export_command.h)
//   bpnas up / submit / status / list / watch / cancel / fetch   the service (cli/client_commands.h)
//
// Exit codes: 0 success; 2 the input must be fixed (bad spec, missing or corrupt file, infeasible
// budget); 1 anything else.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "cli/cli_util.h"
#include "cli/client_commands.h"
#include "cli/export_command.h"
#include "cli/progress.h"
#include "common/memory.h"
#include "common/openmp_wait.h"
#include "common/status.h"
#include "google/protobuf/util/json_util.h"
#include "spec/spec.h"
#include "worker/engine/artifact.h"
#include "worker/engine/data.h"
#include "worker/engine/search.h"
#include "worker/engine/weights.h"

namespace bpnas {
namespace {

constexpr char kUsage[] =
    "usage: bpnas <command> [options]\n"
    "\n"
    "Mixed-precision quantization search under a hard budget (BP-NAS).\n"
    "\n"
    "commands:\n"
    "  cost   --spec FILE [--json]               layer table, min/max/uniform costs, budget, feasibility\n"
    "  search --spec FILE --out MODEL.bpq [--json] [--quiet] [--trace FILE.jsonl]\n"
    "                                            run one search in this process and write the model\n"
    "  eval   MODEL.bpq [--data DIR] [--test-limit N] [--integer] [--predictions FILE] [--json]\n"
    "                                            accuracy of a model file on a test split: --data DIR,\n"
    "                                            else the model's named data set under BPNAS_DATA_ROOT\n"
    "                                            (default /usr/share/datasets/<kind>); --integer: the\n"
    "                                            integer-only engine beside the fake-quantized one;\n"
    "                                            --predictions writes each test image's class, one a line\n"
    "  export MODEL.bpq -o MODEL.onnx [--activations] [--float] [--json]\n"
    "                                            the model as an ONNX QDQ graph (opset 13) for ONNX Runtime\n"
    "                                            and other runtimes (bpnas export --help)\n"
    "  pretrain --spec FILE --out WEIGHTS.pt [--epochs N] [--lr X] [--json]\n"
    "                                            train the unquantized network (a shared starting point\n"
    "                                            for searches and baselines: spec field init_weights)\n"
    "\n"
    "service commands (a coordinator: --server HOST:PORT or BPNAS_SERVER, default 127.0.0.1:50051):\n"
    "  up [--workers N] [--state DIR] [--db DSN] [--listen ADDR] [--http ADDR] [--threads T]\n"
    "                                            private PostgreSQL + coordinator + N workers; Ctrl-C stops\n"
    "  submit SPEC.json [--wait] [--json] [--request-id ID]   queue a search; prints the job id\n"
    "  status JOB [--json]                       state, progress, result\n"
    "  list [--state S] [--limit N] [--json]     jobs, newest first\n"
    "  watch JOB [--json]                        live progress until the job ends\n"
    "  cancel JOB [--json]                       stop a queued or running job\n"
    "  fetch JOB [-o MODEL.bpq] [--onnx MODEL.onnx] [--json]\n"
    "                                            download the model (sha256 verified), as .bpq and/or ONNX\n"
    "\n"
    "  help                                      this text\n"
    "\n"
    "Spec files are the JSON form of bpnas.v1.JobSpec (see examples/).\n"
    "Exit codes: 0 ok, 2 bad input (spec, file, budget), 1 other failure.\n";

int CmdCost(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"spec"}, {"json", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->flags.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->options.count("spec")) return Fail(absl::InvalidArgumentError("cost: --spec FILE is required"));
  auto spec = LoadSpecFile(args->options["spec"]);
  if (!spec.ok()) return Fail(spec.status());
  auto plan = PlanJob(*spec, /*check_feasible=*/false);
  if (!plan.ok()) return Fail(plan.status());

  bpnas::v1::CostReport r;
  r.set_model_name(plan->graph.model_name);
  r.set_metric(plan->metric == CostMetricKind::kSize ? bpnas::v1::SIZE : bpnas::v1::BITOPS);
  const auto& s = plan->spec;
  const int fixed = int(s.model().fixed_bits());
  const auto& wb = s.search_space().weight_bits();
  const auto& ab = s.search_space().activation_bits();
  size_t si = 0;
  for (const LayerInfo& l : plan->graph.Layers()) {
    auto* rl = r.add_layers();
    rl->set_name(l.name);
    rl->set_searchable(l.searchable);
    rl->set_macs(l.macs);
    rl->set_params(l.params);
    const CostModel& cm = plan->cost_model;
    if (l.searchable) {
      rl->set_min_cost(cm.LayerCost(si, wb[0], ab[0]));
      rl->set_max_cost(cm.LayerCost(si, wb[wb.size() - 1], ab[ab.size() - 1]));
      ++si;
    } else {
      const double c = plan->metric == CostMetricKind::kSize ? l.params * fixed : l.macs * fixed * fixed;
      rl->set_min_cost(c);
      rl->set_max_cost(c);
    }
  }
  r.set_min_cost(plan->min_cost);
  r.set_max_cost(plan->max_cost);
  std::set<uint32_t> bits(wb.begin(), wb.end());
  bits.insert(ab.begin(), ab.end());
  for (uint32_t b : bits) {
    auto* u = r.add_uniform();
    u->set_bits(b);
    u->set_cost(plan->cost_model.Uniform(b));
  }
  r.set_has_budget(plan->has_budget);
  r.set_budget(plan->budget);
  r.set_feasible(plan->feasible);
  r.set_reason(plan->infeasible_reason);

  if (args->flags.count("json")) {
    std::cout << ToJson(r);
  } else {
    const char* unit = plan->metric == CostMetricKind::kSize ? "bits" : "BitOPs";
    std::printf("model %s, metric %s\n\n", r.model_name().c_str(), CostMetricName(plan->metric));
    std::printf("%-18s %-10s %12s %10s %14s %14s\n", "layer", "searchable", "MACs", "params", "min cost",
                "max cost");
    for (const auto& l : r.layers()) {
      std::printf("%-18s %-10s %12s %10s %14s %14s\n", l.name().c_str(), l.searchable() ? "yes" : "fixed",
                  Human(l.macs()).c_str(), Human(l.params()).c_str(), Human(l.min_cost()).c_str(),
                  Human(l.max_cost()).c_str());
    }
    std::printf("\nmin cost (all lowest bits)  %s %s\n", Human(r.min_cost()).c_str(), unit);
    std::printf("max cost (all highest bits) %s %s\n", Human(r.max_cost()).c_str(), unit);
    for (const auto& u : r.uniform())
      std::printf("uniform %u-bit              %s %s\n", u.bits(), Human(u.cost()).c_str(), unit);
    if (r.has_budget()) {
      std::printf("budget                      %s %s (%.0f)\n", Human(r.budget()).c_str(), unit, r.budget());
      std::printf("feasible                    %s\n", r.feasible() ? "yes" : ("no: " + r.reason()).c_str());
    } else {
      std::printf("budget                      none\n");
    }
  }
  return r.feasible() ? 0 : 2;
}

void PrintResult(const bpnas::v1::QuantizedModel& m) {
  const auto& r = m.result();
  const char* unit = r.metric() == bpnas::v1::SIZE ? "bits" : "BitOPs";
  const bool searched = r.method() != bpnas::v1::UNIFORM && r.method() != bpnas::v1::FIXED;
  std::printf("\nresult (%s)\n", r.method() == bpnas::v1::UNIFORM          ? "uniform baseline"
                                 : r.method() == bpnas::v1::FIXED          ? "fixed configuration"
                                 : r.method() == bpnas::v1::LINEAR_PENALTY ? "linear-penalty baseline"
                                                                           : "BP-NAS search");
  std::printf("  within budget      %s\n", r.within_budget() ? "yes" : "NO");
  std::printf("  cost               %s %s (%.0f)\n", Human(r.cost()).c_str(), unit, r.cost());
  if (r.budget() > 0) {
    std::printf("  budget             %s %s (%.0f), cost/budget %.4f\n", Human(r.budget()).c_str(), unit,
                r.budget(), r.cost() / r.budget());
  }
  if (searched) {
    std::printf("  at derive          expected cost/budget %.4f, argmax cost/budget %.4f, Prob-1 %.4f\n",
                r.expected_cost_at_derive() / r.budget(), r.argmax_cost_at_derive() / r.budget(),
                r.prob1_at_derive());
    if (r.repaired()) std::printf("  repaired           %s\n", r.repair_note().c_str());
    if (const std::string check = UniformCheckSummary(r); !check.empty()) {
      std::printf("  uniform check      architecture split after the fine-tune: %s\n", check.c_str());
    }
    if (r.check_derived_layers_size() > 0) {
      std::printf("  derived, rejected  cost/budget %.4f, w/a bits", r.check_derived_cost() / r.budget());
      for (const auto& l : r.check_derived_layers())
        std::printf(" %u/%u", l.weight_bits(), l.activation_bits());
      std::printf("\n");
    }
    if (r.budget() > 0 && r.cost() < 0.9 * r.budget()) {
      std::printf("  note               the model uses %.1f%% of the budget (< 90%%)\n",
                  100 * r.cost() / r.budget());
    }
  }
  if (r.validation_samples() > 0) {
    std::printf("  validation acc.    %.2f%% (%llu held-out training images)\n", r.validation_accuracy(),
                (unsigned long long)r.validation_samples());
  }
  std::printf("  test accuracy      %.2f%%\n", r.test_accuracy());
  std::printf("  layers             w/a bits");
  if (searched) std::printf("   p(weight bits) | p(activation bits)");
  std::printf("\n");
  for (const auto& l : r.layers()) {
    std::printf("    %-16s %d/%d", l.name().c_str(), l.weight_bits(), l.activation_bits());
    if (l.weight_probs_size() > 0) {
      std::printf("    ");
      for (double p : l.weight_probs()) std::printf("%.2f ", p);
      std::printf("| ");
      for (double p : l.activation_probs()) std::printf("%.2f ", p);
    }
    std::printf("\n");
  }
  std::printf("  wall time         ");
  for (const auto& pt : r.phase_times()) std::printf(" %s %.1fs", pt.phase().c_str(), pt.seconds());
  std::printf("\n");
}

// One JSON object per progress event (JSON Lines), for plots of the search.
void WriteTraceLine(FILE* f, const ProgressEvent& ev) {
  const std::string line = JsonObject()
                               .String("phase", ev.phase)
                               .Number("epoch", ev.epoch)
                               .Number("epochs", ev.epochs)
                               .Number("step", double(ev.step))
                               .Number("steps", double(ev.steps))
                               .Number("cross_entropy", ev.cross_entropy)
                               .Number("barrier", ev.barrier)
                               .Number("prob1", ev.prob1)
                               .Number("prob1_lambda", ev.prob1_lambda)
                               .Number("barrier_t", ev.barrier_t)
                               .Number("expected_ratio", ev.expected_ratio)
                               .Number("argmax_ratio", ev.argmax_ratio)
                               .Bool("feasible", ev.feasible)
                               .Number("elapsed_seconds", ev.elapsed_seconds)
                               .ToJson(/*single_line=*/true);
  std::fprintf(f, "%s\n", line.c_str());
  std::fflush(f);
}

int CmdPretrain(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"spec", "out", "epochs", "lr"}, {"json", "quiet", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->flags.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->options.count("spec"))
    return Fail(absl::InvalidArgumentError("pretrain: --spec FILE is required"));
  if (!args->options.count("out"))
    return Fail(absl::InvalidArgumentError("pretrain: --out WEIGHTS.pt is required"));
  int epochs = 3;
  double lr = 0.1;
  try {
    if (args->options.count("epochs")) epochs = std::stoi(args->options["epochs"]);
    if (args->options.count("lr")) lr = std::stod(args->options["lr"]);
  } catch (...) {
    return Fail(absl::InvalidArgumentError("pretrain: --epochs and --lr take numbers"));
  }
  if (epochs < 1 || epochs > 1000) return Fail(absl::InvalidArgumentError("--epochs: must be in [1, 1000]"));
  if (!(lr > 0 && lr <= 10)) return Fail(absl::InvalidArgumentError("--lr: must be in (0, 10]"));
  auto spec = LoadSpecFile(args->options["spec"]);
  if (!spec.ok()) return Fail(spec.status());
  // Pretraining uses the spec's model, data, seed and batch settings only: method and budget do
  // not apply, so a spec without a constraint is fine.
  spec->set_method(bpnas::v1::UNIFORM);
  spec->set_uniform_bits(8);
  spec->clear_init_weights();
  spec->mutable_finetune()->clear_from_init();
  auto plan = PlanJob(*spec, /*check_feasible=*/false);
  if (!plan.ok()) return Fail(plan.status());
  auto data = LoadDataset(plan->spec.dataset(), plan->spec.seed());
  if (!data.ok()) return Fail(data.status());
  ConfigureTorchForTraining(plan->spec);
  ProgressPrinter printer(stderr, isatty(fileno(stderr)) != 0);
  RunOptions options;
  if (!args->flags.count("quiet")) options.progress = [&](const ProgressEvent& ev) { printer(ev); };
  Supernet net(nullptr);
  auto t0 = std::chrono::steady_clock::now();
  auto acc = PretrainFp32(*plan, *data, epochs, lr, &net, options);
  printer.Finish();
  if (!acc.ok()) return Fail(acc.status());
  absl::Status w = SaveWeights(net, args->options["out"]);
  if (!w.ok()) return Fail(w);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (args->flags.count("json")) {
    std::cout << JsonObject()
                     .String("weights", args->options["out"])
                     .Number("fp32_test_accuracy", *acc)
                     .Number("epochs", epochs)
                     .Number("seconds", secs)
                     .ToJson();
  } else {
    std::printf("FP32 %s: test accuracy %.2f%% after %d epochs (%.0fs); weights in %s\n",
                plan->graph.model_name.c_str(), *acc, epochs, secs, args->options["out"].c_str());
  }
  return 0;
}

int CmdSearch(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"spec", "out", "trace"}, {"json", "quiet", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->flags.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->options.count("spec"))
    return Fail(absl::InvalidArgumentError("search: --spec FILE is required"));
  if (!args->options.count("out"))
    return Fail(absl::InvalidArgumentError("search: --out MODEL.bpq is required"));
  auto spec = LoadSpecFile(args->options["spec"]);
  if (!spec.ok()) return Fail(spec.status());
  auto plan = PlanJob(*spec);
  if (!plan.ok()) return Fail(plan.status());
  auto data = LoadDataset(plan->spec.dataset(), plan->spec.seed());
  if (!data.ok()) return Fail(data.status());
  {
    // Fail on an unwritable output before hours of search, not after.
    FILE* probe = std::fopen((args->options["out"] + ".tmp").c_str(), "wb");
    if (probe == nullptr) {
      return Fail(
          absl::InvalidArgumentError(absl::StrCat("--out ", args->options["out"], ": cannot write there")));
    }
    std::fclose(probe);
    std::remove((args->options["out"] + ".tmp").c_str());
  }
  ProgressPrinter printer(stderr, isatty(fileno(stderr)) != 0);
  RunOptions options;
  std::unique_ptr<FILE, int (*)(FILE*)> trace(nullptr, &std::fclose);
  if (args->options.count("trace")) {
    trace.reset(std::fopen(args->options["trace"].c_str(), "w"));
    if (!trace)
      return Fail(
          absl::InvalidArgumentError(absl::StrCat("--trace ", args->options["trace"], ": cannot write")));
  }
  const bool quiet = args->flags.count("quiet") > 0;
  options.progress = [&](const ProgressEvent& ev) {
    if (!quiet) printer(ev);
    if (trace) WriteTraceLine(trace.get(), ev);
  };
  std::fprintf(stderr, "bpnas: %s on %s (%lld train / %lld test), budget %.0f\n",
               plan->graph.model_name.c_str(), plan->spec.dataset().kind().c_str(),
               (long long)data->train.size(), (long long)data->test.size(), plan->budget);
  auto model = RunJob(*plan, *data, options);
  printer.Finish();
  if (!model.ok()) return Fail(model.status());
  absl::Status w = WriteModelFile(*model, args->options["out"]);
  if (!w.ok()) return Fail(w);
  if (args->flags.count("json")) {
    std::cout << ToJson(model->result());
  } else {
    PrintResult(*model);
    std::printf("  model              %s\n", args->options["out"].c_str());
  }
  return model->result().within_budget() ? 0 : 1;
}

// One predicted class per test image, one a line, in the data set's order (for comparing runtimes
// image by image).
absl::Status WritePredictions(const std::vector<int64_t>& classes, const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "w"), &std::fclose);
  if (!f) return absl::InvalidArgumentError(absl::StrCat("--predictions ", path, ": cannot write there"));
  for (int64_t c : classes) std::fprintf(f.get(), "%lld\n", (long long)c);
  if (std::fflush(f.get()) != 0)
    return absl::InvalidArgumentError(absl::StrCat("--predictions ", path, ": write failed"));
  return absl::OkStatus();
}

// The data an eval reads: --data DIR, else the named data set of the model's spec under the data
// root (BPNAS_DATA_ROOT, default the Debian packages' folder). The path stored in the model is never
// read: a model file from elsewhere must not choose what this machine reads.
absl::StatusOr<bpnas::v1::DatasetSpec> EvalDataset(const bpnas::v1::QuantizedModel& model, Args& args) {
  bpnas::v1::DatasetSpec ds = model.spec().dataset();
  if (ds.kind().empty()) ds.set_kind("fashion-mnist");
  ds.clear_path();
  if (args.options.count("data")) {
    ds.set_path(args.options["data"]);
  } else if (ds.kind() != "synthetic") {
    const char* root = std::getenv("BPNAS_DATA_ROOT");
    auto dir = NamedDatasetDir(ds.kind(), root != nullptr && *root != '\0' ? root : kDefaultDataRoot);
    if (!dir.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(args.positional[0], ": ", dir.status().message(), "; pass --data DIR"));
    }
    ds.set_path(*dir);
  }
  if (args.options.count("test-limit")) {
    try {
      ds.set_test_limit(uint32_t(std::stoul(args.options["test-limit"])));
    } catch (...) {
      return absl::InvalidArgumentError("--test-limit: not a number");
    }
  }
  return ds;
}

int CmdEval(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"data", "test-limit", "predictions"}, {"json", "integer", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->flags.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args->positional.size() != 1)
    return Fail(absl::InvalidArgumentError("eval: exactly one MODEL.bpq expected"));
  const std::string& path = args->positional[0];
  auto model = ReadModelFile(path);
  if (!model.ok()) return Fail(model.status());
  auto ds = EvalDataset(*model, *args);
  if (!ds.ok()) return Fail(ds.status());
  auto data = LoadDataset(*ds, model->spec().seed());
  if (!data.ok()) return Fail(data.status());
  const bool json = args->flags.count("json") > 0;
  if (args->flags.count("integer")) {
    auto cmp = CompareIntegerInference(*model, data->test);
    if (!cmp.ok())
      return Fail(absl::Status(cmp.status().code(), absl::StrCat(path, ": ", cmp.status().message())));
    if (json) {
      std::cout << JsonObject()
                       .String("model", path)
                       .String("data", ds->path())
                       .Number("test_samples", double(cmp->samples))
                       .Number("integer_accuracy", cmp->integer_accuracy)
                       .Number("float_accuracy", cmp->float_accuracy)
                       .Number("accuracy_difference", cmp->integer_accuracy - cmp->float_accuracy)
                       .Number("top1_agreement", cmp->agreement)
                       .Number("max_abs_logit_difference", cmp->max_abs_logit_difference)
                       .Number("logit_scale", cmp->logit_scale)
                       .Number("integer_seconds", cmp->integer_seconds)
                       .Number("float_seconds", cmp->float_seconds)
                       .Number("reported_accuracy", model->result().test_accuracy())
                       .ToJson();
    } else {
      std::printf("model %s: %s, %d layers quantized; data %s\n", path.c_str(), model->model_name().c_str(),
                  model->result().layers_size(), ds->path().c_str());
      std::printf("integer-only engine     test accuracy %.2f%% on %lld samples (%.2f s)\n",
                  cmp->integer_accuracy, (long long)cmp->samples, cmp->integer_seconds);
      std::printf("fake-quantized floats   test accuracy %.2f%% (%.2f s); search reported %.2f%%\n",
                  cmp->float_accuracy, cmp->float_seconds, model->result().test_accuracy());
      std::printf(
          "top-1 agreement %.2f%%, largest |logit difference| %.4g (one integer logit unit is %.4g)\n",
          cmp->agreement, cmp->max_abs_logit_difference, cmp->logit_scale);
    }
    return 0;
  }
  std::vector<int64_t> classes;
  auto acc = EvaluateQuantizedModel(*model, data->test, 500, &classes);
  if (!acc.ok()) return Fail(acc.status());
  if (args->options.count("predictions")) {
    absl::Status w = WritePredictions(classes, args->options["predictions"]);
    if (!w.ok()) return Fail(w);
  }
  if (json) {
    std::cout << JsonObject()
                     .String("model", path)
                     .String("data", ds->path())
                     .Number("test_samples", double(data->test.size()))
                     .Number("test_accuracy", *acc)
                     .Number("reported_accuracy", model->result().test_accuracy())
                     .Number("cost", model->result().cost())
                     .Number("budget", model->result().budget())
                     .ToJson();
  } else {
    std::printf("model %s: %s, %d layers quantized\n", path.c_str(), model->model_name().c_str(),
                model->result().layers_size());
    std::printf("test accuracy %.2f%% on %lld samples (search reported %.2f%%)\n", *acc,
                (long long)data->test.size(), model->result().test_accuracy());
  }
  return 0;
}

}  // namespace
}  // namespace bpnas

int main(int argc, char** argv) {
  // The commands that train: their OpenMP threads must not spin long beside other processes.
  if (argc >= 2) {
    const std::string cmd = argv[1];
    if (cmd == "search" || cmd == "eval" || cmd == "pretrain") bpnas::ReexecWithShortOpenMpSpin(argv);
  }
  bpnas::TuneAllocatorForTraining();
  if (argc < 2) {
    std::fputs(bpnas::kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "cost") return bpnas::CmdCost(argc, argv);
  if (cmd == "search") return bpnas::CmdSearch(argc, argv);
  if (cmd == "eval") return bpnas::CmdEval(argc, argv);
  if (cmd == "pretrain") return bpnas::CmdPretrain(argc, argv);
  if (cmd == "export") return bpnas::CmdExport(argc, argv);
  if (cmd == "submit") return bpnas::CmdSubmit(argc, argv);
  if (cmd == "status") return bpnas::CmdStatus(argc, argv);
  if (cmd == "list") return bpnas::CmdList(argc, argv);
  if (cmd == "watch") return bpnas::CmdWatch(argc, argv);
  if (cmd == "cancel") return bpnas::CmdCancel(argc, argv);
  if (cmd == "fetch") return bpnas::CmdFetch(argc, argv);
  if (cmd == "up") return bpnas::CmdUp(argc, argv);
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    std::fputs(bpnas::kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "bpnas: unknown command \"%s\"\n\n%s", cmd.c_str(), bpnas::kUsage);
  return 2;
}
