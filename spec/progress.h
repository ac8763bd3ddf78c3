// Progress of a running job: the event the engine emits every few steps, its wire form
// (bpnas.v1.Progress) and the job-level fraction done / ETA derived from the spec's schedule.
// Torch-free: the worker, the CLI and the coordinator share it.
#ifndef BPNAS_SPEC_PROGRESS_H_
#define BPNAS_SPEC_PROGRESS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "bpnas/v1/service.pb.h"
#include "bpnas/v1/spec.pb.h"

namespace bpnas {

struct ProgressEvent {
  std::string phase;  // "warmup", "search", "finetune", "train" (uniform), "evaluate"
  int epoch = 0;      // 1-based within the phase
  int epochs = 0;
  int64_t step = 0;  // 1-based within the epoch
  int64_t steps = 0;
  int64_t job_step = 0;  // training steps of the whole job so far (continues across a resume)
  double cross_entropy = 0;
  double barrier = 0;  // mu * psi (upper + lower band), architecture steps only
  double prob1 = 0;    // R
  double prob1_lambda = 0;
  double barrier_t = 0;
  double expected_ratio = 0;  // E[cost] / budget (0 when there is no budget)
  double argmax_ratio = 0;    // cost of the argmax network / budget
  bool feasible = true;       // expected_ratio <= 1
  double samples_per_second = 0;
  double elapsed_seconds = 0;
  bool epoch_end = false;
  double eta_seconds = -1;  // time to the end of the job; < 0 unknown (the engine leaves it unset)
};
using ProgressCallback = std::function<void(const ProgressEvent&)>;

// Fraction of the whole job (0..1) done at `ev`, from the normalized spec's schedule: warm-up and
// fine-tune epochs count once, search epochs twice (a weight and an architecture step per batch).
double JobFractionDone(const bpnas::v1::JobSpec& spec, const ProgressEvent& ev);

// The wire form; `step` is the global step within the attempt. Sets fraction_done and eta_seconds
// from JobFractionDone and ev.elapsed_seconds.
bpnas::v1::Progress ToProgressProto(const bpnas::v1::JobSpec& spec, const ProgressEvent& ev, int64_t step);
ProgressEvent FromProgressProto(const bpnas::v1::Progress& p);

}  // namespace bpnas

#endif  // BPNAS_SPEC_PROGRESS_H_
