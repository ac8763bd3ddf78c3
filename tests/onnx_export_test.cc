// ExportOnnx (artifact/onnx_export.h): the graph it writes, read back with ONNX's own classes.
// Running it is the ONNX Runtime tests' part (tests/onnx/).
#include "artifact/onnx_export.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "artifact/builder.h"
#include "artifact/model_file.h"
#include "artifact/packing.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "spec/graph.h"

namespace bpnas {
namespace {

using bpnas::v1::Node;
using bpnas::v1::QuantizedModel;

QuantizedModel RandomModel(const std::string& graph, int bits, bool per_channel, double width = 0.25) {
  auto g = BuildModelGraph({.name = graph, .width_multiplier = width});
  EXPECT_TRUE(g.ok()) << g.status();
  auto m = MakeRandomModel(
      *g, {.weight_bits = bits, .activation_bits = bits, .per_channel = per_channel, .seed = 7});
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

onnx::ModelProto Export(const QuantizedModel& m, const OnnxExportOptions& o = {}) {
  auto bytes = ExportOnnx(m, o);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto proto;
  EXPECT_TRUE(bytes.ok() && proto.ParseFromString(*bytes));
  return proto;
}

const onnx::TensorProto* Initializer(const onnx::ModelProto& p, const std::string& name) {
  for (const auto& t : p.graph().initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

std::vector<const onnx::NodeProto*> NodesOf(const onnx::ModelProto& p, const std::string& op) {
  std::vector<const onnx::NodeProto*> out;
  for (const auto& n : p.graph().node())
    if (n.op_type() == op) out.push_back(&n);
  return out;
}

const onnx::AttributeProto* Attr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

std::vector<const Node*> Layers(const QuantizedModel& m) {
  std::vector<const Node*> out;
  for (const Node& n : m.nodes())
    if (n.op() == Node::CONV2D || n.op() == Node::LINEAR) out.push_back(&n);
  return out;
}

int64_t WeightCount(const Node& n) {
  const auto& c = n.conv();
  return int64_t(c.out_channels()) * c.in_channels() * (n.op() == Node::CONV2D ? c.kernel() * c.kernel() : 1);
}

TEST(ExportOnnx, PassesTheCheckerWithOpset13AndTheDocumentedInputAndOutput) {
  const QuantizedModel m = RandomModel("resnet20", 4, true);
  const onnx::ModelProto p = Export(m);
  EXPECT_NO_THROW(onnx::checker::check_model(p));
  ASSERT_EQ(p.opset_import_size(), 1);
  EXPECT_EQ(p.opset_import(0).domain(), "");
  EXPECT_EQ(p.opset_import(0).version(), 13);

  ASSERT_EQ(p.graph().input_size(), 1);
  const auto& in = p.graph().input(0);
  EXPECT_EQ(in.name(), "input");
  EXPECT_EQ(in.type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
  const auto& in_shape = in.type().tensor_type().shape();
  ASSERT_EQ(in_shape.dim_size(), 4);
  EXPECT_FALSE(in_shape.dim(0).dim_param().empty()) << "the batch dimension is symbolic";
  EXPECT_EQ(in_shape.dim(1).dim_value(), 1);
  EXPECT_EQ(in_shape.dim(2).dim_value(), 28);
  EXPECT_EQ(in_shape.dim(3).dim_value(), 28);

  ASSERT_EQ(p.graph().output_size(), 1);
  const auto& out = p.graph().output(0);
  EXPECT_EQ(out.name(), "logits");
  const auto& out_shape = out.type().tensor_type().shape();
  ASSERT_EQ(out_shape.dim_size(), 2);
  EXPECT_EQ(out_shape.dim(0).dim_param(), in_shape.dim(0).dim_param());
  EXPECT_EQ(out_shape.dim(1).dim_value(), 10);

  // Every op of the network is there: resnet20 has 9 blocks, 2 of them with a strided shortcut.
  EXPECT_EQ(NodesOf(p, "Conv").size(), 19u);
  EXPECT_EQ(NodesOf(p, "Gemm").size(), 1u);
  EXPECT_EQ(NodesOf(p, "Add").size(), 9u + 20u) << "9 residual adds, and every layer's bias";
  EXPECT_EQ(NodesOf(p, "Slice").size(), 2u);
  EXPECT_EQ(NodesOf(p, "Pad").size(), 2u);
  EXPECT_EQ(NodesOf(p, "GlobalAveragePool").size(), 1u);
  EXPECT_EQ(NodesOf(p, "QuantizeLinear").size(), 20u);
  EXPECT_EQ(NodesOf(p, "DequantizeLinear").size(), 40u)
      << "one for each layer's weights and one for its input";
}

TEST(ExportOnnx, WeightsAreInt8CodesWithOneValuePerWeight) {
  const QuantizedModel m = RandomModel("resnet20", 3, true);
  const onnx::ModelProto p = Export(m);
  for (const Node* n : Layers(m)) {
    const onnx::TensorProto* t = Initializer(p, n->name() + ".weight_codes");
    ASSERT_NE(t, nullptr) << n->name();
    EXPECT_EQ(t->data_type(), onnx::TensorProto::INT8) << n->name();
    int64_t numel = 1;
    for (int64_t d : t->dims()) numel *= d;
    const int64_t count = WeightCount(*n);
    EXPECT_EQ(numel, count) << n->name();
    ASSERT_EQ(int64_t(t->raw_data().size()), count) << n->name();
    std::vector<int8_t> codes(static_cast<size_t>(count));
    ASSERT_TRUE(UnpackCodes(n->conv().weight_packed(), 3, count, codes.data()).ok());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(codes.data()), codes.size()), t->raw_data())
        << n->name() << ": the initializer holds the model's codes";
    const onnx::TensorProto* zp = Initializer(p, n->name() + ".weight_zero_points");
    ASSERT_NE(zp, nullptr);
    EXPECT_EQ(zp->data_type(), onnx::TensorProto::INT8);
    EXPECT_EQ(zp->raw_data(), std::string(size_t(n->conv().out_channels()), '\0'));
  }
}

TEST(ExportOnnx, PerChannelScalesDequantizeOnAxis0AndPerTensorScalesAreScalars) {
  for (bool per_channel : {true, false}) {
    const QuantizedModel m = RandomModel("tiny", 5, per_channel);
    const onnx::ModelProto p = Export(m);
    int weight_dq = 0;
    for (const onnx::NodeProto* dq : NodesOf(p, "DequantizeLinear")) {
      const onnx::TensorProto* scale = Initializer(p, dq->input(1));
      ASSERT_NE(scale, nullptr);
      const bool weights = Initializer(p, dq->input(0)) != nullptr;
      if (!weights) {
        EXPECT_EQ(scale->dims_size(), 0) << "activations: one scale per tensor";
        continue;
      }
      ++weight_dq;
      const onnx::AttributeProto* axis = Attr(*dq, "axis");
      if (per_channel) {
        ASSERT_EQ(scale->dims_size(), 1) << dq->name();
        EXPECT_EQ(scale->float_data_size(), scale->dims(0));
        ASSERT_NE(axis, nullptr) << dq->name();
        EXPECT_EQ(axis->i(), 0);
      } else {
        EXPECT_EQ(scale->dims_size(), 0) << dq->name();
        EXPECT_EQ(scale->float_data_size(), 1);
        EXPECT_EQ(axis, nullptr);
      }
    }
    EXPECT_EQ(weight_dq, int(Layers(m).size()));
  }
}

TEST(ExportOnnx, EachLayerInputIsClippedToItsTopCodeThenQuantizedWithZeroPoint0) {
  const QuantizedModel m = RandomModel("tiny", 2, true);
  const onnx::ModelProto p = Export(m);
  const auto clips = NodesOf(p, "Clip");
  const auto layers = Layers(m);
  ASSERT_EQ(clips.size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& c = layers[i]->conv();
    const onnx::TensorProto* lo = Initializer(p, clips[i]->input(1));
    const onnx::TensorProto* hi = Initializer(p, clips[i]->input(2));
    ASSERT_TRUE(lo != nullptr && hi != nullptr);
    EXPECT_EQ(lo->float_data(0), 0.0f);
    EXPECT_FLOAT_EQ(hi->float_data(0), c.activation_scale() * 3) << "2 bits: codes 0..3";
  }
  for (const onnx::NodeProto* q : NodesOf(p, "QuantizeLinear")) {
    const onnx::TensorProto* zp = Initializer(p, q->input(2));
    ASSERT_NE(zp, nullptr);
    EXPECT_EQ(zp->data_type(), onnx::TensorProto::UINT8);
    EXPECT_EQ(zp->raw_data(), std::string(1, '\0'));
  }
}

TEST(ExportOnnx, TheFloatBiasIsAnAddAfterEachLayerSoNoRuntimeRequantizesIt) {
  const QuantizedModel m = RandomModel("resnet20", 2, true);
  const onnx::ModelProto p = Export(m);
  std::map<std::string, const onnx::NodeProto*> producer;
  for (const auto& n : p.graph().node()) producer[n.output(0)] = &n;
  for (const Node* layer : Layers(m)) {
    ASSERT_GT(layer->conv().bias_size(), 0);
    const onnx::NodeProto* add = producer[layer->name()];
    ASSERT_NE(add, nullptr) << layer->name();
    EXPECT_EQ(add->op_type(), "Add") << layer->name();
    const onnx::NodeProto* op = producer[add->input(0)];
    ASSERT_NE(op, nullptr);
    EXPECT_EQ(op->op_type(), layer->op() == Node::CONV2D ? "Conv" : "Gemm");
    EXPECT_EQ(op->input_size(), 2) << layer->name() << ": no bias input on the op itself";
    const onnx::TensorProto* bias = Initializer(p, add->input(1));
    ASSERT_NE(bias, nullptr);
    EXPECT_EQ(bias->data_type(), onnx::TensorProto::FLOAT);
    ASSERT_EQ(bias->float_data_size(), layer->conv().bias_size());
    for (int k = 0; k < bias->float_data_size(); ++k) EXPECT_EQ(bias->float_data(k), layer->conv().bias(k));
  }
  // The float reference keeps the plain form: the bias is the op's third input.
  const onnx::ModelProto f = Export(m, {.float_reference = true});
  for (const onnx::NodeProto* conv : NodesOf(f, "Conv")) EXPECT_EQ(conv->input_size(), 3);
  EXPECT_EQ(NodesOf(f, "Add").size(), 9u);
}

TEST(ExportOnnx, ExposedActivationsAreExtraOutputsNamedAfterTheirLayers) {
  const QuantizedModel m = RandomModel("resnet20", 6, true);
  const onnx::ModelProto p = Export(m, {.expose_activations = true});
  const std::vector<OnnxActivation> exposed = ExposedActivations(m);
  const auto layers = Layers(m);
  ASSERT_EQ(exposed.size(), layers.size());
  ASSERT_EQ(p.graph().output_size(), int(1 + layers.size()));
  EXPECT_EQ(p.graph().output(0).name(), "logits");
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(exposed[i].layer, layers[i]->name());
    EXPECT_EQ(exposed[i].name, layers[i]->name() + ".activation");
    EXPECT_EQ(exposed[i].bits, 6);
    EXPECT_EQ(exposed[i].scale, layers[i]->conv().activation_scale());
    EXPECT_EQ(p.graph().output(int(i) + 1).name(), exposed[i].name);
  }
  // The first layer reads the image: [N, 1, 28, 28]; the last, a linear one, [N, features].
  EXPECT_EQ(p.graph().output(1).type().tensor_type().shape().dim_size(), 4);
  EXPECT_EQ(p.graph().output(int(layers.size())).type().tensor_type().shape().dim_size(), 2);
}

TEST(ExportOnnx, FloatReferenceHasTheDequantizedWeightsAndNoQuantization) {
  const QuantizedModel m = RandomModel("tiny", 4, true);
  const onnx::ModelProto p = Export(m, {.float_reference = true});
  EXPECT_TRUE(NodesOf(p, "QuantizeLinear").empty());
  EXPECT_TRUE(NodesOf(p, "DequantizeLinear").empty());
  EXPECT_TRUE(NodesOf(p, "Clip").empty());
  const Node& conv1 = *Layers(m)[0];
  const onnx::TensorProto* w = Initializer(p, "conv1.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->data_type(), onnx::TensorProto::FLOAT);
  const int64_t count = WeightCount(conv1);
  ASSERT_EQ(w->float_data_size(), count);
  std::vector<int8_t> codes(static_cast<size_t>(count));
  ASSERT_TRUE(UnpackCodes(conv1.conv().weight_packed(), 4, count, codes.data()).ok());
  const int64_t per_out = count / conv1.conv().out_channels();
  for (int64_t j = 0; j < count; ++j) {
    ASSERT_EQ(w->float_data(int(j)), float(codes[size_t(j)]) * conv1.conv().weight_scales(int(j / per_out)))
        << "weight " << j;
  }
}

TEST(ExportOnnx, MetadataNamesTheModelItsFormatAndItsChecksum) {
  const QuantizedModel m = RandomModel("tiny", 8, false);
  for (bool reference : {false, true}) {
    const onnx::ModelProto p = Export(m, {.float_reference = reference});
    std::map<std::string, std::string> meta;
    for (const auto& kv : p.metadata_props()) meta[kv.key()] = kv.value();
    EXPECT_EQ(meta["bpnas.model_name"], "tiny");
    EXPECT_EQ(meta["bpnas.format_version"], std::to_string(kModelFormatVersion));
    EXPECT_EQ(meta["bpnas.checksum"], m.checksum());
    EXPECT_EQ(meta["bpnas.graph"], reference ? "float" : "qdq");
  }
}

TEST(ExportOnnx, SameModelGivesTheSameBytes) {
  const QuantizedModel m = RandomModel("resnet20", 4, true);
  auto a = ExportOnnx(m, {}), b = ExportOnnx(m, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b);
}

TEST(ExportOnnx, NodeNamesThatCollideWithGeneratedNamesStillGiveAValidGraph) {
  // A model may call its nodes anything but "input": here "logits" and the name the next layer's
  // activation would get.
  QuantizedModel m = RandomModel("tiny", 4, true);
  std::map<std::string, std::string> rename = {{"conv1", "logits"}, {"relu1", "conv2.activation"}};
  for (Node& n : *m.mutable_nodes()) {
    if (rename.count(n.name())) n.set_name(rename[n.name()]);
    for (std::string& in : *n.mutable_inputs())
      if (rename.count(in)) in = rename[in];
  }
  m.set_checksum(ModelChecksum(m));
  const onnx::ModelProto p = Export(m, {.expose_activations = true});
  EXPECT_NO_THROW(onnx::checker::check_model(p));
  EXPECT_EQ(p.graph().output(0).name(), "logits");
  const std::vector<OnnxActivation> exposed = ExposedActivations(m);
  ASSERT_GE(exposed.size(), 2u);
  EXPECT_EQ(exposed[0].layer, "logits");
  EXPECT_NE(exposed[1].name, "conv2.activation") << "the node of that name keeps it";
  for (size_t i = 0; i < exposed.size(); ++i) EXPECT_EQ(p.graph().output(int(i) + 1).name(), exposed[i].name);
}

TEST(ExportOnnx, RefusesAModelThatValidateModelRefuses) {
  QuantizedModel m = RandomModel("tiny", 4, true);
  m.mutable_nodes(0)->mutable_conv()->set_stride(0);
  auto bytes = ExportOnnx(m, {});
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bytes.status().message().find("stride"), std::string::npos) << bytes.status();

  QuantizedModel odd = RandomModel("tiny", 4, true);
  odd.mutable_nodes(0)->mutable_conv()->set_activation_bits(9);
  EXPECT_EQ(ExportOnnx(odd, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExportOnnx, RefusesActivationsOnTheFloatReference) {
  const QuantizedModel m = RandomModel("tiny", 4, true);
  auto bytes = ExportOnnx(m, {.expose_activations = true, .float_reference = true});
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bpnas
