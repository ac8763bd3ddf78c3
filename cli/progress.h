// Progress display for long CLI commands: a one-line bar redrawn in place on a terminal, plain
// lines when the output is piped or redirected.
#ifndef BPNAS_CLI_PROGRESS_H_
#define BPNAS_CLI_PROGRESS_H_

#include <cstdio>
#include <string>

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

// The uniform check's outcome for display ("derived 91.27%, uniform 3-bit 91.40% (standard error
// 0.18; each fine-tuned on 48000 images): returned the uniform candidate"); empty when no check ran.
std::string UniformCheckSummary(const bpnas::v1::SearchResult& r);

}  // namespace bpnas

#endif  // BPNAS_CLI_PROGRESS_H_
