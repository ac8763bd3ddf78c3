#include "cli/progress.h"

#include <string>

namespace bpnas {

void ProgressPrinter::operator()(const ProgressEvent& ev) {
  const double frac = ev.steps > 0 ? double(ev.step) / double(ev.steps) : 1.0;
  char detail[256];
  if (ev.phase == "search") {
    std::snprintf(detail, sizeof(detail),
                  "ce %.3f barrier %.4f prob1 %.3f (lambda %.2f, t %.0f) cost/budget %.3f argmax %.3f %s",
                  ev.cross_entropy, ev.barrier, ev.prob1, ev.prob1_lambda, ev.barrier_t, ev.expected_ratio,
                  ev.argmax_ratio, ev.feasible ? "feasible" : "OVER BUDGET");
  } else if (ev.phase == "evaluate") {
    std::snprintf(detail, sizeof(detail), "cost/budget %.3f %s", ev.expected_ratio,
                  ev.feasible ? "within budget" : "OVER BUDGET");
  } else {
    std::snprintf(detail, sizeof(detail), "ce %.3f cost/budget %.3f", ev.cross_entropy, ev.expected_ratio);
  }
  char head[96];
  std::snprintf(head, sizeof(head), "%-8s epoch %d/%d", ev.phase.c_str(), ev.epoch, ev.epochs);
  if (terminal_) {
    const int width = 20;
    std::string bar(size_t(frac * width + 0.5), '#');
    bar.resize(width, '.');
    std::fprintf(out_, "\r\033[K%s [%s] %3.0f%% %s %.0f/s %.0fs", head, bar.c_str(), frac * 100, detail,
                 ev.samples_per_second, ev.elapsed_seconds);
    if (ev.eta_seconds >= 0) std::fprintf(out_, " ETA %.0fs", ev.eta_seconds);
    line_open_ = true;
    if (ev.epoch_end) {
      std::fputc('\n', out_);
      line_open_ = false;
    }
  } else {
    std::fprintf(out_, "%s step %lld/%lld %s %.0f samples/s %.0fs", head, (long long)ev.step,
                 (long long)ev.steps, detail, ev.samples_per_second, ev.elapsed_seconds);
    if (ev.eta_seconds >= 0) std::fprintf(out_, " ETA %.0fs", ev.eta_seconds);
    std::fputc('\n', out_);
  }
  std::fflush(out_);
}

void ProgressPrinter::Finish() {
  if (line_open_) std::fputc('\n', out_);
  line_open_ = false;
}

std::string UniformCheckSummary(const bpnas::v1::SearchResult& r) {
  if (r.check_uniform_bits() == 0) return "";
  char buf[240];
  std::snprintf(
      buf, sizeof buf,
      "derived %.2f%%, uniform %u-bit %.2f%% (standard error %.2f; each fine-tuned on %llu images): "
      "returned the %s",
      r.check_derived_accuracy(), r.check_uniform_bits(), r.check_uniform_accuracy(), r.check_margin(),
      static_cast<unsigned long long>(r.check_train_samples()),
      r.returned_uniform() ? "uniform candidate" : "derived network");
  return buf;
}

}  // namespace bpnas
