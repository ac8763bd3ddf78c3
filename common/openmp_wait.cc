#include "common/openmp_wait.h"

#include <unistd.h>

#include <cstdlib>

namespace bpnas {

void ReexecWithShortOpenMpSpin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("GOMP_SPINCOUNT", kTrainingOpenMpSpinCount, /*overwrite=*/0) != 0) return;
  // /proc/self/exe: the running binary itself, wherever argv[0] points.
  execv("/proc/self/exe", argv);
  // Only reached when exec failed: carry on in this process.
}

}  // namespace bpnas
