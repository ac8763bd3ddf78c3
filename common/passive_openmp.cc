#include "common/passive_openmp.h"

#include <unistd.h>

#include <cstdlib>

namespace bpnas {

void ReexecWithPassiveOpenMp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "passive", /*overwrite=*/0) != 0) return;
  // /proc/self/exe: the running binary itself, wherever argv[0] points.
  execv("/proc/self/exe", argv);
  // Only reached when exec failed: carry on in this process.
}

}  // namespace bpnas
