#include "artifact/onnx_export.h"

#include <cstdint>
#include <exception>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "artifact/model_file.h"
#include "artifact/packing.h"
#include "artifact/validate.h"
#include "common/status.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "onnx/checker.h"
#include "onnx/defs/schema.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"

namespace bpnas {
namespace {

using bpnas::v1::Node;
using bpnas::v1::QuantizedConv;
using bpnas::v1::QuantizedModel;
namespace onnx = ::ONNX_NAMESPACE;

// IR version 7 is the one released with opset 13 (ONNX 1.8): every runtime that runs opset 13
// reads it.
constexpr int64_t kIrVersion = 7;
constexpr char kBatchDim[] = "N";

// Tensor names: each node's output keeps the node's name, each layer's exposed activation is
// "<layer>.activation", and every helper tensor gets a fresh name, so that no name a model may hold
// ("logits" or "conv1.activation" as a node name) can make two tensors share one.
class Names {
 public:
  Names() {
    used_.insert("input");
    used_.insert("logits");
  }
  std::string Fresh(const std::string& base) {
    std::string name = base;
    for (int k = 2; used_.count(name); ++k) name = absl::StrCat(base, "_", k);
    used_.insert(name);
    return name;
  }

 private:
  std::set<std::string> used_;
};

struct TensorNames {
  std::vector<std::string> output;      // per node
  std::vector<std::string> activation;  // per node; empty for nodes other than conv/linear
};

// Node outputs first, then activations, so that both ExportOnnx and ExposedActivations see the
// same names whatever the nodes are called.
TensorNames AssignNames(const QuantizedModel& m, Names* names) {
  TensorNames t;
  for (const Node& n : m.nodes()) t.output.push_back(names->Fresh(n.name()));
  for (const Node& n : m.nodes()) {
    const bool layer = n.op() == Node::CONV2D || n.op() == Node::LINEAR;
    t.activation.push_back(layer ? names->Fresh(n.name() + ".activation") : "");
  }
  return t;
}

class GraphWriter {
 public:
  GraphWriter(onnx::GraphProto* graph, Names* names) : graph_(graph), names_(names) {}

  // A float tensor of shape `dims` (empty: a scalar).
  std::string Floats(const std::string& base, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    onnx::TensorProto* t = Add(base, onnx::TensorProto::FLOAT, dims);
    for (float x : v) t->add_float_data(x);
    return t->name();
  }
  std::string Int64s(const std::string& base, const std::vector<int64_t>& v) {
    onnx::TensorProto* t = Add(base, onnx::TensorProto::INT64, {int64_t(v.size())});
    for (int64_t x : v) t->add_int64_data(x);
    return t->name();
  }
  // int8 or uint8 values, stored as raw bytes (one byte each: no byte order to agree on).
  std::string Bytes(const std::string& base, onnx::TensorProto::DataType type,
                    const std::vector<int64_t>& dims, std::string bytes) {
    onnx::TensorProto* t = Add(base, type, dims);
    t->set_raw_data(std::move(bytes));
    return t->name();
  }

  // Appends a node with one output: `output` when not empty (a name already assigned), else a
  // fresh name from `base`.
  onnx::NodeProto* Op(const std::string& op, const std::string& base, const std::vector<std::string>& inputs,
                      const std::string& output = "") {
    onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op);
    n->set_name(names_->Fresh(base + "." + op));
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(output.empty() ? names_->Fresh(base + "." + op + "_out") : output);
    return n;
  }

  static void IntAttr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void IntsAttr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void StringAttr(onnx::NodeProto* n, const std::string& name, const std::string& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  }

  // A float graph input or output with the batch dimension symbolic.
  static void FloatValue(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    auto* shape = tt->mutable_shape();
    shape->add_dim()->set_dim_param(kBatchDim);
    for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
  }

 private:
  onnx::TensorProto* Add(const std::string& base, onnx::TensorProto::DataType type,
                         const std::vector<int64_t>& dims) {
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(names_->Fresh(base));
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    return t;
  }

  onnx::GraphProto* graph_;
  Names* names_;
};

// A tensor of the graph being built: its name and rank (4: [N, C, H, W]; 2: [N, features], what a
// linear layer gives).
struct Value {
  std::string name;
  int rank = 4;
};

class Exporter {
 public:
  Exporter(const QuantizedModel& m, const ModelLayout& layout, const OnnxExportOptions& o)
      : m_(m), layout_(layout), options_(o), names_out_(AssignNames(m, &names_)), g_(graph(), &names_) {}

  absl::Status Build() {
    model_.set_ir_version(kIrVersion);
    model_.set_producer_name("bpnas");
    model_.set_producer_version(absl::StrCat("model format ", m_.format_version()));
    model_.set_doc_string(options_.float_reference
                              ? "bpnas model in plain FP32 (dequantized weights, no quantization): a "
                                "latency baseline, not the quantized model"
                              : "bpnas quantized model as a QDQ graph (fake-quantized semantics of "
                                "bpnas.v1.QuantizedModel)");
    onnx::OperatorSetIdProto* opset = model_.add_opset_import();
    opset->set_domain("");
    opset->set_version(kOnnxOpset);
    Meta("bpnas.model_name", m_.model_name());
    Meta("bpnas.format_version", absl::StrCat(m_.format_version()));
    Meta("bpnas.checksum", ModelChecksum(m_));
    Meta("bpnas.graph", options_.float_reference ? "float" : "qdq");

    onnx::GraphProto* g = graph();
    g->set_name(m_.model_name().empty() ? "bpnas" : m_.model_name());
    GraphWriter::FloatValue(g->add_input(), "input",
                            {layout_.input.channels, layout_.input.height, layout_.input.width});
    Value input = Normalized();
    std::vector<Value> out(size_t(m_.nodes_size()));
    for (int i = 0; i < m_.nodes_size(); ++i) {
      const Node& n = m_.nodes(i);
      auto in = [&](int k) {
        const int from = layout_.inputs[size_t(i)][size_t(k)];
        return from < 0 ? input : out[size_t(from)];
      };
      const std::string& name = names_out_.output[size_t(i)];
      switch (n.op()) {
        case Node::CONV2D:
        case Node::LINEAR: {
          BPNAS_ASSIGN_OR_RETURN(out[size_t(i)], Layer(i, in(0)));
          break;
        }
        case Node::RELU:
          g_.Op("Relu", n.name(), {in(0).name}, name);
          out[size_t(i)] = {name, in(0).rank};
          break;
        case Node::ADD: {
          Value a = in(0), b = in(1);
          if (a.rank != b.rank) {
            a = As4d(a, n.name());
            b = As4d(b, n.name());
          }
          g_.Op("Add", n.name(), {a.name, b.name}, name);
          out[size_t(i)] = {name, a.rank};
          break;
        }
        case Node::PAD_SHORTCUT:
          out[size_t(i)] = {PadShortcut(i, As4d(in(0), n.name()), name), 4};
          break;
        case Node::GLOBAL_AVG_POOL:
          g_.Op("GlobalAveragePool", n.name(), {As4d(in(0), n.name()).name}, name);
          out[size_t(i)] = {name, 4};
          break;
        default:  // ValidateModel admits no other op
          return absl::InternalError(absl::StrCat("node ", n.name(), ": unknown op"));
      }
    }
    auto* flatten = g_.Op("Flatten", "logits", {out.back().name}, "logits");
    GraphWriter::IntAttr(flatten, "axis", 1);
    GraphWriter::FloatValue(g->add_output(), "logits", {int64_t(m_.num_classes())});
    if (options_.expose_activations) {
      for (int i = 0; i < m_.nodes_size(); ++i) {
        const std::string& a = names_out_.activation[size_t(i)];
        if (a.empty()) continue;
        const TensorShape& s = InputShape(i, 0);
        if (m_.nodes(i).op() == Node::LINEAR) {
          GraphWriter::FloatValue(g->add_output(), a, {s.numel()});
        } else {
          GraphWriter::FloatValue(g->add_output(), a, {s.channels, s.height, s.width});
        }
      }
    }
    return absl::OkStatus();
  }

  const onnx::ModelProto& model() const { return model_; }

 private:
  onnx::GraphProto* graph() { return model_.mutable_graph(); }

  void Meta(const std::string& key, const std::string& value) {
    auto* p = model_.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  }

  // (input - mean) / std when the model has them (model.proto's InputNormalization).
  Value Normalized() {
    const auto& norm = m_.input();
    Value v{"input", 4};
    const int64_t c = layout_.input.channels;
    if (norm.mean_size() > 0) {
      const std::string mean =
          g_.Floats("input.mean", {1, c, 1, 1}, {norm.mean().begin(), norm.mean().end()});
      v.name = g_.Op("Sub", "input", {v.name, mean})->output(0);
    }
    if (norm.std_size() > 0) {
      const std::string std = g_.Floats("input.std", {1, c, 1, 1}, {norm.std().begin(), norm.std().end()});
      v.name = g_.Op("Div", "input", {v.name, std})->output(0);
    }
    return v;
  }

  // [N, C] -> [N, C, 1, 1] (a linear layer's output read by an op on images).
  Value As4d(const Value& v, const std::string& base) {
    if (v.rank == 4) return v;
    if (axes_2_3_.empty()) axes_2_3_ = g_.Int64s("unsqueeze.axes", {2, 3});
    return {g_.Op("Unsqueeze", base, {v.name, axes_2_3_})->output(0), 4};
  }

  // x[:, :, ::stride, ::stride], then zero channels before and after.
  std::string PadShortcut(int i, const Value& x, const std::string& name) {
    const Node& n = m_.nodes(i);
    const auto& s = n.shortcut();
    std::string cur = x.name;
    const int64_t in_channels = InputShape(i, 0).channels;
    const int64_t after = int64_t(s.out_channels()) - in_channels - int64_t(s.pad_before());
    const bool slice = s.stride() > 1, pad = s.pad_before() > 0 || after > 0;
    if (slice) {
      const int64_t end = std::numeric_limits<int64_t>::max();
      const int64_t st = s.stride();
      cur = g_.Op("Slice", n.name(),
                  {cur, g_.Int64s(n.name() + ".starts", {0, 0}), g_.Int64s(n.name() + ".ends", {end, end}),
                   g_.Int64s(n.name() + ".axes", {2, 3}), g_.Int64s(n.name() + ".steps", {st, st})},
                  pad ? "" : name)
                ->output(0);
    }
    if (pad) {
      const int64_t before = s.pad_before();
      auto* p = g_.Op("Pad", n.name(),
                      {cur, g_.Int64s(n.name() + ".pads", {0, before, 0, 0, 0, after, 0, 0})}, name);
      GraphWriter::StringAttr(p, "mode", "constant");
    } else if (!slice) {
      g_.Op("Identity", n.name(), {cur}, name);
    }
    return name;
  }

  const TensorShape& InputShape(int node, int k) const {
    const int from = layout_.inputs[size_t(node)][size_t(k)];
    return from < 0 ? layout_.input : layout_.outputs[size_t(from)];
  }

  // A conv or linear layer: activation Q/DQ (unless float_reference), weights, the op.
  absl::StatusOr<Value> Layer(int i, Value x) {
    const Node& n = m_.nodes(i);
    const QuantizedConv& c = n.conv();
    const std::string& base = n.name();
    const bool conv = n.op() == Node::CONV2D;
    if (conv) {
      x = As4d(x, base);
    } else if (x.rank != 2) {
      auto* f = g_.Op("Flatten", base, {x.name});
      GraphWriter::IntAttr(f, "axis", 1);
      x = {f->output(0), 2};
    }

    const int64_t out_ch = c.out_channels(), in_ch = c.in_channels(), k = conv ? c.kernel() : 1;
    const int64_t count = out_ch * in_ch * k * k;
    std::string codes(size_t(count), '\0');
    BPNAS_RETURN_IF_ERROR(
        UnpackCodes(c.weight_packed(), int(c.weight_bits()), count, reinterpret_cast<int8_t*>(codes.data())));
    const std::vector<int64_t> wdims =
        conv ? std::vector<int64_t>{out_ch, in_ch, k, k} : std::vector<int64_t>{out_ch, in_ch};
    const bool per_channel = c.weight_scales_size() > 1;
    std::string weight;
    std::string act = x.name;
    if (options_.float_reference) {
      // code * scale in float: the weights the fake-quantized model computes with.
      std::vector<float> w(static_cast<size_t>(count));
      const int64_t per_out = count / out_ch;
      for (int64_t j = 0; j < count; ++j) {
        w[size_t(j)] = float(int8_t(codes[size_t(j)])) * c.weight_scales(per_channel ? int(j / per_out) : 0);
      }
      weight = g_.Floats(base + ".weight", wdims, w);
    } else {
      const std::vector<int64_t> sdims = per_channel ? std::vector<int64_t>{out_ch} : std::vector<int64_t>{};
      const std::string scales =
          g_.Floats(base + ".weight_scales", sdims, {c.weight_scales().begin(), c.weight_scales().end()});
      const std::string zeros = g_.Bytes(base + ".weight_zero_points", onnx::TensorProto::INT8, sdims,
                                         std::string(size_t(c.weight_scales_size()), '\0'));
      const std::string q =
          g_.Bytes(base + ".weight_codes", onnx::TensorProto::INT8, wdims, std::move(codes));
      auto* dq =
          g_.Op("DequantizeLinear", base + ".weight", {q, scales, zeros}, names_.Fresh(base + ".weight"));
      if (per_channel) GraphWriter::IntAttr(dq, "axis", 0);
      weight = dq->output(0);

      // Clip to the top code's value, so that QuantizeLinear's uint8 range cannot hold codes
      // beyond 2^bits - 1.
      const float scale = c.activation_scale();
      const int levels = (1 << c.activation_bits()) - 1;
      const std::string lo = g_.Floats(base + ".activation_min", {}, {0.0f});
      const std::string hi = g_.Floats(base + ".activation_max", {}, {float(double(scale) * levels)});
      const std::string s = g_.Floats(base + ".activation_scale", {}, {scale});
      const std::string zp =
          g_.Bytes(base + ".activation_zero_point", onnx::TensorProto::UINT8, {}, std::string(1, '\0'));
      const std::string clipped = g_.Op("Clip", base + ".activation", {act, lo, hi})->output(0);
      const std::string quantized =
          g_.Op("QuantizeLinear", base + ".activation", {clipped, s, zp})->output(0);
      act = g_.Op("DequantizeLinear", base + ".activation", {quantized, s, zp},
                  names_out_.activation[size_t(i)])
                ->output(0);
    }
    // The bias: the op's own input in the float reference; in the QDQ graph an Add after the op,
    // which is the same arithmetic, because ONNX Runtime's optimizer (at every level above
    // "disabled") rewrites a float Conv/Gemm bias into int32 at step activation_scale *
    // weight_scale whenever the op's output goes on to a QuantizeLinear. At 2 to 4 bits that step
    // is coarse: it moved the predictions of a trained model on 11% of the test images.
    const bool bias = c.bias_size() > 0;
    std::vector<std::string> inputs = {act, weight};
    if (bias && options_.float_reference) {
      inputs.push_back(g_.Floats(base + ".bias", {out_ch}, {c.bias().begin(), c.bias().end()}));
    }
    const bool add_bias = bias && !options_.float_reference;
    const std::string& name = names_out_.output[size_t(i)];
    onnx::NodeProto* op = nullptr;
    if (conv) {
      op = g_.Op("Conv", base, inputs, add_bias ? "" : name);
      GraphWriter::IntsAttr(op, "kernel_shape", {k, k});
      GraphWriter::IntsAttr(op, "strides", {int64_t(c.stride()), int64_t(c.stride())});
      const int64_t p = c.padding();
      GraphWriter::IntsAttr(op, "pads", {p, p, p, p});
    } else {
      op = g_.Op("Gemm", base, inputs, add_bias ? "" : name);
      GraphWriter::IntAttr(op, "transB", 1);
    }
    if (add_bias) {
      // [C, 1, 1] broadcasts over [N, C, H, W]; [C] over [N, C].
      const std::vector<int64_t> dims =
          conv ? std::vector<int64_t>{out_ch, 1, 1} : std::vector<int64_t>{out_ch};
      g_.Op("Add", base, {op->output(0), g_.Floats(base + ".bias", dims, {c.bias().begin(), c.bias().end()})},
            name);
    }
    return Value{name, conv ? 4 : 2};
  }

  const QuantizedModel& m_;
  const ModelLayout& layout_;
  const OnnxExportOptions options_;
  Names names_;
  TensorNames names_out_;
  onnx::ModelProto model_;
  GraphWriter g_;
  std::string axes_2_3_;
};

// The ONNX checker, then strict shape inference with type checks on a copy: the declared shapes
// of "logits" and the activations must agree with what the ops compute.
absl::Status Check(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
    onnx::ModelProto inferred = model;
    onnx::shape_inference::InferShapes(
        inferred, onnx::OpSchemaRegistry::Instance(),
        onnx::ShapeInferenceOptions(/*check_type_val=*/true, /*strict_mode_val=*/1));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the exported ONNX graph fails the ONNX checker: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ExportOnnx(const QuantizedModel& model, const OnnxExportOptions& options) {
  if (options.expose_activations && options.float_reference) {
    return absl::InvalidArgumentError(
        "ONNX export: the float reference has no quantized activations to expose");
  }
  BPNAS_ASSIGN_OR_RETURN(const ModelLayout layout, ValidateModel(model));
  Exporter exporter(model, layout, options);
  BPNAS_RETURN_IF_ERROR(exporter.Build());
  BPNAS_RETURN_IF_ERROR(Check(exporter.model()));
  // Deterministic bytes: the same model always gives the same file (fetch --onnx and export agree).
  const onnx::ModelProto& proto = exporter.model();
  const size_t size = proto.ByteSizeLong();
  if (size > size_t(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("ONNX export: the model takes ", size, " bytes; ONNX files stop at 2 GiB"));
  }
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  if (!proto.SerializeToCodedStream(&coded)) return absl::InternalError("ONNX export: serialization failed");
  coded.Trim();
  return bytes;
}

std::vector<OnnxActivation> ExposedActivations(const QuantizedModel& model) {
  Names names;
  const TensorNames t = AssignNames(model, &names);
  std::vector<OnnxActivation> out;
  for (int i = 0; i < model.nodes_size(); ++i) {
    if (t.activation[size_t(i)].empty()) continue;
    const QuantizedConv& c = model.nodes(i).conv();
    out.push_back(
        {t.activation[size_t(i)], model.nodes(i).name(), int(c.activation_bits()), c.activation_scale()});
  }
  return out;
}

}  // namespace bpnas
