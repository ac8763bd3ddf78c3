// Progress display for long CLI commands: a one-line bar redrawn in place on a terminal, plain
// lines when the output is piped or redirected.
#ifndef BPNAS_CLI_PROGRESS_H_
#define BPNAS_CLI_PROGRESS_H_

#include <cstdio>

#include "worker/engine/search.h"

namespace bpnas {

class ProgressPrinter {
 public:
  // Writes to `out` (normally stderr); `terminal` selects the in-place bar.
  ProgressPrinter(FILE* out, bool terminal) : out_(out), terminal_(terminal) {}
  void operator()(const ProgressEvent& ev);
  void Finish();

 private:
  FILE* out_;
  bool terminal_;
  bool line_open_ = false;
};

}  // namespace bpnas

#endif  // BPNAS_CLI_PROGRESS_H_
