// Small helpers shared by the `bpnas` subcommands: argument parsing, JSON output, error exit.
#ifndef BPNAS_CLI_CLI_UTIL_H_
#define BPNAS_CLI_CLI_UTIL_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/struct.pb.h"

namespace bpnas {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --name value
  std::set<std::string> flags;                 // --name
};

// Parses argv[first..]: `--name value` or `--name=value` for names in `with_value`, bare `--name`
// for names in `flags`, anything else not starting with -- is positional. An unknown option is
// INVALID_ARGUMENT naming it.
absl::StatusOr<Args> ParseArgs(int argc, char** argv, int first, const std::set<std::string>& with_value,
                               const std::set<std::string>& flags);

// Proto3 JSON with proto field names and every field printed, indented over several lines.
std::string ToJson(const google::protobuf::Message& m);

// A JSON object for output that no proto message describes (a google.protobuf.Struct underneath),
// printed by the same JSON printer as ToJson, so strings are escaped:
//   std::printf("%s\n", JsonObject().String("path", out).Number("bytes", n).ToJson().c_str());
// JSON has no NaN or infinity: a non-finite number is written as null. Numbers are doubles, exact
// for integers up to 2^53. Keys come out in no particular order.
class JsonObject {
 public:
  JsonObject& String(const std::string& key, const std::string& value);
  JsonObject& Number(const std::string& key, double value);
  JsonObject& Bool(const std::string& key, bool value);
  // Indented over several lines as ToJson, or `single_line` (for JSON Lines).
  std::string ToJson(bool single_line = false) const;

 private:
  google::protobuf::Struct fields_;
};

// Prints "bpnas: <message>" to stderr and returns the exit code for `s` (2: fix the input).
int Fail(const absl::Status& s);

// 1234567 -> "1.235M".
std::string Human(double v);

}  // namespace bpnas

#endif  // BPNAS_CLI_CLI_UTIL_H_
