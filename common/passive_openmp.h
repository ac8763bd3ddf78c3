// Passive OpenMP waiting for the processes that train (bpnas-worker; bpnas search, pretrain, eval).
//
// LibTorch's OpenMP threads spin at the end of every parallel region by default. Two training
// processes on one machine (two workers of `bpnas up`, a worker beside a CLI search) then burn each
// other's cores: a step 3-5x slower instead of about 2x. With OMP_WAIT_POLICY=passive they sleep.
//
// The OpenMP runtime reads OMP_WAIT_POLICY once, in its own initializer, which the dynamic linker
// runs before main() (and after any pre-initialization function, because the C library's own
// initializer resets the environment set there). So the only reliable way for a program to change
// it is to set it and execute itself again, which costs one more program start (measured in the
// README: well under a second, once per training process).
//
//   int main(int argc, char** argv) {
//     ReexecWithPassiveOpenMp(argv);   // first thing: returns in the re-executed process
//     ...
//
// A user who sets OMP_WAIT_POLICY (e.g. `active` on a dedicated machine) keeps it: no re-exec.
#ifndef BPNAS_COMMON_PASSIVE_OPENMP_H_
#define BPNAS_COMMON_PASSIVE_OPENMP_H_

namespace bpnas {

// If OMP_WAIT_POLICY is unset, sets it to "passive" and replaces this process by a fresh run of the
// same executable with the same arguments (same pid); does not return then. Returns when the
// variable was already set, or when the re-exec failed (the run then goes on with the runtime's
// default policy).
void ReexecWithPassiveOpenMp(char** argv);

}  // namespace bpnas

#endif  // BPNAS_COMMON_PASSIVE_OPENMP_H_
