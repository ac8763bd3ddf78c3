#include "cli/export_command.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "artifact/model_file.h"
#include "cli/cli_util.h"
#include "google/protobuf/struct.pb.h"

namespace bpnas {
namespace {

constexpr char kExportUsage[] =
    "usage: bpnas export MODEL.bpq -o MODEL.onnx [--activations] [--float] [--json]\n"
    "\n"
    "Writes the model as an ONNX QDQ graph (opset 13): int8 weight codes with DequantizeLinear,\n"
    "every layer input clipped and quantized to its bits (QuantizeLinear / DequantizeLinear);\n"
    "input \"input\" float [N, C, H, W] = pixel / 255, output \"logits\" [N, classes].\n"
    "\n"
    "  --activations   also output every layer's quantized input (\"<layer>.activation\")\n"
    "  --float         the same network in plain FP32 (dequantized weights, no quantization):\n"
    "                  a latency baseline, not the quantized model\n"
    "  --json          print what was written as JSON (with the exposed activations' bits and scales)\n";

google::protobuf::Value NumberValue(double v) {
  google::protobuf::Value out;
  out.set_number_value(v);
  return out;
}

google::protobuf::Value StringValue(const std::string& v) {
  google::protobuf::Value out;
  out.set_string_value(v);
  return out;
}

}  // namespace

absl::StatusOr<int64_t> WriteOnnxFile(const bpnas::v1::QuantizedModel& model,
                                      const OnnxExportOptions& options, const std::string& path) {
  absl::StatusOr<std::string> bytes = ExportOnnx(model, options);
  if (!bytes.ok()) return bytes.status();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot write there"));
    out.write(bytes->data(), std::streamsize(bytes->size()));
    if (!out) {
      std::remove(tmp.c_str());
      return absl::InvalidArgumentError(absl::StrCat(path, ": write failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot move ", tmp, " into place"));
  }
  return int64_t(bytes->size());
}

int CmdExport(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"o", "out"}, {"activations", "float", "json", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->flags.count("help")) {
    std::fputs(kExportUsage, stdout);
    return 0;
  }
  if (args->positional.size() != 1)
    return Fail(absl::InvalidArgumentError("export: exactly one MODEL.bpq expected"));
  const std::string out = args->options.count("o") ? args->options["o"] : args->options["out"];
  if (out.empty()) return Fail(absl::InvalidArgumentError("export: -o MODEL.onnx is required"));
  OnnxExportOptions options;
  options.expose_activations = args->flags.count("activations") > 0;
  options.float_reference = args->flags.count("float") > 0;
  if (options.expose_activations && options.float_reference) {
    return Fail(absl::InvalidArgumentError("export: --activations and --float exclude each other"));
  }
  auto model = ReadModelFile(args->positional[0]);
  if (!model.ok()) return Fail(model.status());
  auto bytes = WriteOnnxFile(*model, options, out);
  if (!bytes.ok()) return Fail(bytes.status());
  const std::vector<OnnxActivation> activations =
      options.expose_activations ? ExposedActivations(*model) : std::vector<OnnxActivation>{};
  const std::string graph = options.float_reference ? "float" : "qdq";
  if (args->flags.count("json")) {
    google::protobuf::Struct s;
    auto& f = *s.mutable_fields();
    f["model"] = StringValue(args->positional[0]);
    f["onnx"] = StringValue(out);
    f["bytes"] = NumberValue(double(*bytes));
    f["opset"] = NumberValue(kOnnxOpset);
    f["graph"] = StringValue(graph);
    f["checksum"] = StringValue(model->checksum());
    auto* list = f["activations"].mutable_list_value();
    for (const OnnxActivation& a : activations) {
      auto& entry = *list->add_values()->mutable_struct_value()->mutable_fields();
      entry["name"] = StringValue(a.name);
      entry["layer"] = StringValue(a.layer);
      entry["bits"] = NumberValue(a.bits);
      entry["scale"] = NumberValue(double(a.scale));
    }
    std::cout << ToJson(s);
  } else {
    std::printf("wrote %s: %lld bytes, %s graph, opset %d, from %s (%s)", out.c_str(), (long long)*bytes,
                options.float_reference ? "FP32 reference" : "QDQ", kOnnxOpset, args->positional[0].c_str(),
                model->model_name().c_str());
    if (options.expose_activations) std::printf(", %zu activations exposed", activations.size());
    std::printf("\n");
  }
  return 0;
}

}  // namespace bpnas
