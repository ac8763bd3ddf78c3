// Short OpenMP spinning for the processes that train (bpnas-worker; bpnas search, pretrain, eval).
//
// LibTorch's OpenMP threads (GNU libgomp) spin for about 300,000 iterations at the end of every
// parallel region before they sleep. Alone on a machine that is fastest; but two training
// processes on one machine (two workers of `bpnas up`, a worker beside a CLI search) then burn each
// other's cores. Measured here on 2 cores (bench/two_process.sh and repeated single runs; the search
// phase of a short resnet20 search, each process on both cores; single runs vary by about 10%):
//
//   spin count                       alone (mean of 3)   two at once (each)
//   300000 (the runtime's default)   14.3 s              70-94 s
//   10000                            13.9 s              48 s
//   3000 (what this sets)            14.5 s              32 s
//   1000                             17.3 s              26 s
//   0 (OMP_WAIT_POLICY=passive)      18-20 s             23-27 s
//
// 3000 keeps the speed of spinning alone (within the noise) and most of the politeness of
// sleeping when the machine is shared.
//
// The OpenMP runtime reads its settings once, in its own initializer, which the dynamic linker runs
// before main() (and after any pre-initialization function, because the C library's initializer
// resets an environment changed there). So the only reliable way for a program to change them is
// to set them and execute itself again: one more program start, about 0.8 s here, once per
// training process.
//
//   int main(int argc, char** argv) {
//     ReexecWithShortOpenMpSpin(argv);   // first thing: returns in the re-executed process
//     ...
//
// A user who sets OMP_WAIT_POLICY or GOMP_SPINCOUNT keeps it: no re-exec.
#ifndef BPNAS_COMMON_OPENMP_WAIT_H_
#define BPNAS_COMMON_OPENMP_WAIT_H_

namespace bpnas {

// The spin count set when the user chose none.
inline constexpr const char* kTrainingOpenMpSpinCount = "3000";

// If neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, sets GOMP_SPINCOUNT to
// kTrainingOpenMpSpinCount and replaces this process by a fresh run of the same executable with the
// same arguments (same pid); does not return then. Returns when the user set either variable, or
// when the re-exec failed (the run then goes on with the runtime's defaults).
void ReexecWithShortOpenMpSpin(char** argv);

}  // namespace bpnas

#endif  // BPNAS_COMMON_OPENMP_WAIT_H_
