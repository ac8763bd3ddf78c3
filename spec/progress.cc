#include "spec/progress.h"

#include <algorithm>

namespace bpnas {

double JobFractionDone(const bpnas::v1::JobSpec& spec, const ProgressEvent& ev) {
  const double warmup = spec.search().warmup_epochs();
  const double search = 2.0 * spec.search().epochs();
  const double finetune = spec.finetune().epochs();
  const double within = ev.steps > 0 ? double(ev.step) / double(ev.steps) : 1.0;
  const double epochs_done = std::max(0, ev.epoch - 1) + within;
  double done = 0, total = 0;
  if (spec.method() == bpnas::v1::UNIFORM || spec.method() == bpnas::v1::FIXED) {
    total = spec.finetune().from_init() ? finetune : warmup + search / 2 + finetune;
    if (ev.phase == "train" || ev.phase == "finetune") done = epochs_done;
  } else {
    total = warmup + search + finetune;
    if (ev.phase == "warmup")
      done = epochs_done;
    else if (ev.phase == "search")
      done = warmup + 2.0 * epochs_done;
    else if (ev.phase == "check")
      done = warmup + search;
    else if (ev.phase == "finetune")
      done = warmup + search + epochs_done;
  }
  if (ev.phase == "evaluate") return 1.0;
  return total > 0 ? std::clamp(done / total, 0.0, 1.0) : 0.0;
}

bpnas::v1::Progress ToProgressProto(const bpnas::v1::JobSpec& spec, const ProgressEvent& ev, int64_t step) {
  bpnas::v1::Progress p;
  p.set_step(step);
  p.set_phase(ev.phase);
  p.set_epoch(uint32_t(std::max(0, ev.epoch)));
  p.set_epochs(uint32_t(std::max(0, ev.epochs)));
  p.set_epoch_step(ev.step);
  p.set_epoch_steps(ev.steps);
  p.set_cross_entropy(ev.cross_entropy);
  p.set_barrier(ev.barrier);
  p.set_prob1(ev.prob1);
  p.set_prob1_lambda(ev.prob1_lambda);
  p.set_barrier_t(ev.barrier_t);
  p.set_expected_ratio(ev.expected_ratio);
  p.set_argmax_ratio(ev.argmax_ratio);
  p.set_feasible(ev.feasible);
  p.set_samples_per_second(ev.samples_per_second);
  p.set_elapsed_seconds(ev.elapsed_seconds);
  const double f = JobFractionDone(spec, ev);
  p.set_fraction_done(f);
  p.set_eta_seconds(f > 0.01 ? ev.elapsed_seconds * (1.0 - f) / f : 0.0);
  return p;
}

ProgressEvent FromProgressProto(const bpnas::v1::Progress& p) {
  ProgressEvent ev;
  ev.phase = p.phase();
  ev.epoch = int(p.epoch());
  ev.epochs = int(p.epochs());
  ev.step = p.epoch_step();
  ev.steps = p.epoch_steps();
  ev.cross_entropy = p.cross_entropy();
  ev.barrier = p.barrier();
  ev.prob1 = p.prob1();
  ev.prob1_lambda = p.prob1_lambda();
  ev.barrier_t = p.barrier_t();
  ev.expected_ratio = p.expected_ratio();
  ev.argmax_ratio = p.argmax_ratio();
  ev.feasible = p.feasible();
  ev.samples_per_second = p.samples_per_second();
  ev.elapsed_seconds = p.elapsed_seconds();
  ev.epoch_end = p.epoch_steps() > 0 && p.epoch_step() == p.epoch_steps();
  ev.eta_seconds = p.fraction_done() > 0.01 ? p.eta_seconds() : -1;
  return ev;
}

}  // namespace bpnas
