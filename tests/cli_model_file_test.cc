// The `bpnas` binary given model files from elsewhere: broken ones exit 2 with a message that names
// the file and what is wrong (never a crash), and `eval` reads the named data set under the data
// root, never a path stored in the model.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "artifact/builder.h"
#include "artifact/model_file.h"
#include "common/subprocess.h"
#include "spec/graph.h"
#include "spec/spec.h"
#include "tests/binary_test_util.h"

namespace bpnas {
namespace {

using bpnas::v1::QuantizedModel;

CliRun Bpnas(const std::vector<std::string>& args,
             std::vector<std::pair<std::string, std::string>> env = {}) {
  std::vector<std::string> argv = {Bin("bpnas")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunBin(argv, std::move(env));
}

std::string Write(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

bool HaveFashionMnist() {
  return std::ifstream(std::string(kDefaultFashionMnistDir) + "/t10k-images-idx3-ubyte.gz").good();
}

QuantizedModel TinyModel() {
  auto g = BuildModelGraph({.name = "tiny"});
  EXPECT_TRUE(g.ok());
  auto m = MakeRandomModel(*g, {.weight_bits = 4, .activation_bits = 4});
  EXPECT_TRUE(m.ok());
  return *m;
}

std::string Checksummed(QuantizedModel m) {
  m.set_checksum(ModelChecksum(m));
  return SerializeModel(m);
}

struct BadFile {
  std::string name, bytes, says;
};

std::vector<BadFile> BadFiles() {
  const QuantizedModel good = TinyModel();
  const std::string bytes = SerializeModel(good);
  std::string flipped = bytes;
  for (size_t i = 40; i < flipped.size(); i += flipped.size() / 5) flipped[i] = char(~flipped[i]);
  std::string random(3000, '\0');
  std::mt19937 rng(1);
  for (char& c : random) c = char(rng());
  auto mutated = [&](const std::function<void(QuantizedModel*)>& f) {
    QuantizedModel m = good;
    f(&m);
    return Checksummed(m);
  };
  return {
      {"empty.bpq", "", "empty file"},
      {"random.bpq", random, "not a bpnas model"},
      {"truncated.bpq", bytes.substr(0, bytes.size() / 2), "not a bpnas model"},
      {"flipped.bpq", flipped, ""},  // whichever check a flip trips first
      {"stride0.bpq", mutated([](QuantizedModel* m) { m->mutable_nodes(0)->mutable_conv()->set_stride(0); }),
       "node 0 'conv1': stride 0"},
      {"nan_scale.bpq", mutated([](QuantizedModel* m) {
         m->mutable_nodes(2)->mutable_conv()->set_weight_scales(0, std::nanf(""));
       }),
       "weight scale is not finite"},
      {"later_node.bpq", mutated([](QuantizedModel* m) { m->mutable_nodes(1)->set_inputs(0, "fc"); }),
       "input 'fc' is not an earlier node"},
      {"classes.bpq", mutated([](QuantizedModel* m) { m->set_num_classes(12); }), "num_classes (12)"},
      {"packed.bpq", mutated([](QuantizedModel* m) {
         m->mutable_nodes(0)->mutable_conv()->mutable_weight_packed()->append("x");
       }),
       "weight_packed holds"},
      {"code.bpq", mutated([](QuantizedModel* m) {
         std::string* w = m->mutable_nodes(0)->mutable_conv()->mutable_weight_packed();
         (*w)[0] = char((uint8_t((*w)[0]) & 0xF0) | 0x08);
       }),
       "weight code -8"},
      {"shape.bpq", mutated([](QuantizedModel* m) {
         auto* c = m->mutable_nodes(2)->mutable_conv();  // conv2, reading conv1's 8 channels
         c->set_in_channels(5);
       }),
       "in_channels 5 but its input has 8 channels"},
  };
}

void ExpectRefused(const std::vector<std::string>& args, const std::string& path, const std::string& says) {
  CliRun r = Bpnas(args);
  EXPECT_EQ(r.exit_code, 2) << "exit 2 (not a crash: 128 + signal)\n" << r.output;
  EXPECT_NE(r.output.find(path), std::string::npos) << "names the file\n" << r.output;
  EXPECT_NE(r.output.find(says), std::string::npos) << "says what is wrong\n" << r.output;
}

TEST(CliModelFile, EvalRefusesBrokenFilesWithExitTwoNamingTheFile) {
  for (const BadFile& f : BadFiles()) {
    SCOPED_TRACE(f.name);
    const std::string path = Write(f.name, f.bytes);
    ExpectRefused({"eval", path, "--data", ::testing::TempDir()}, path, f.says);
  }
}

TEST(CliModelFile, IntegerEvalRefusesBrokenFilesWithExitTwoNamingTheFile) {
  for (const BadFile& f : BadFiles()) {
    SCOPED_TRACE(f.name);
    const std::string path = Write(f.name, f.bytes);
    ExpectRefused({"eval", path, "--integer", "--json", "--data", ::testing::TempDir()}, path, f.says);
  }
}

TEST(CliModelFile, AMissingModelFileExitsTwoNamingIt) {
  const std::string path = ::testing::TempDir() + "/no_such_model.bpq";
  ExpectRefused({"eval", path}, path, "cannot open");
}

// The artifact stores the data path of the machine that trained it; eval must not read it.
TEST(CliModelFile, EvalReadsTheNamedDataSetUnderTheDataRootNeverTheStoredPath) {
  if (!HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::string dir = ::testing::TempDir() + "/data_root_test";
  const std::string stored = dir + "/stored", root = dir + "/root", empty = dir + "/empty";
  for (const std::string& d : {dir, stored, root, empty}) mkdir(d.c_str(), 0755);
  // A decoy at the stored path: files that would be refused as corrupt if they were read.
  for (const char* f : {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                        "train-labels-idx1-ubyte"}) {
    Write(std::string("data_root_test/stored/") + f, "decoy");
  }
  unlink((root + "/fashion-mnist").c_str());
  ASSERT_EQ(symlink(kDefaultFashionMnistDir, (root + "/fashion-mnist").c_str()), 0);
  QuantizedModel m = TinyModel();
  m.mutable_spec()->mutable_dataset()->set_kind("fashion-mnist");
  m.mutable_spec()->mutable_dataset()->set_path(stored);
  const std::string model = Write("stored_path.bpq", Checksummed(m));

  CliRun r = Bpnas({"eval", model, "--test-limit", "50", "--json"}, {{"BPNAS_DATA_ROOT", root}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"data\": \"" + root + "/fashion-mnist\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"test_samples\": 50"), std::string::npos) << r.output;

  r = Bpnas({"eval", model, "--test-limit", "50", "--integer", "--json"}, {{"BPNAS_DATA_ROOT", root}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"top1_agreement\""), std::string::npos) << r.output;

  // A data root without the data set: the error names the root's folder, not the stored path.
  r = Bpnas({"eval", model, "--test-limit", "50"}, {{"BPNAS_DATA_ROOT", empty}});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(empty + "/fashion-mnist"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(stored), std::string::npos) << r.output;

  // Without BPNAS_DATA_ROOT: the Debian package's folder.
  r = Bpnas({"eval", model, "--test-limit", "50", "--json"}, {{"BPNAS_DATA_ROOT", ""}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(std::string("\"data\": \"") + kDefaultFashionMnistDir + "\""), std::string::npos)
      << r.output;

  // --data still chooses the folder.
  r = Bpnas({"eval", model, "--test-limit", "50", "--data", stored}, {{"BPNAS_DATA_ROOT", root}});
  EXPECT_EQ(r.exit_code, 2) << "the decoy is corrupt\n" << r.output;
  EXPECT_NE(r.output.find(stored), std::string::npos) << r.output;

  // Another named kind: its own folder under the root.
  m.mutable_spec()->mutable_dataset()->set_kind("mnist");
  const std::string mnist = Write("stored_mnist.bpq", Checksummed(m));
  r = Bpnas({"eval", mnist}, {{"BPNAS_DATA_ROOT", empty}});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(empty + "/mnist"), std::string::npos) << r.output;
}

TEST(CliModelFile, DataOfAnotherShapeExitsTwoNamingBothShapes) {
  if (!HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  auto g = BuildModelGraph({.name = "tiny", .input_channels = 3, .input_height = 32, .input_width = 32});
  ASSERT_TRUE(g.ok());
  auto m = MakeRandomModel(*g, {.weight_bits = 4, .activation_bits = 4});
  ASSERT_TRUE(m.ok());
  const std::string model = Write("rgb32.bpq", Checksummed(*m));
  for (const char* integer : {"--json", "--integer"}) {
    CliRun r = Bpnas({"eval", model, "--test-limit", "20", integer}, {{"BPNAS_DATA_ROOT", ""}});
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("1x28x28"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("3x32x32"), std::string::npos) << r.output;
  }
}

TEST(CliModelFile, SyntheticDataNeedsNoFolder) {
  auto g = BuildModelGraph({.name = "tiny", .input_height = 8, .input_width = 8, .num_classes = 4});
  ASSERT_TRUE(g.ok());
  auto m = MakeRandomModel(*g, {.weight_bits = 4, .activation_bits = 4});
  ASSERT_TRUE(m.ok());
  auto* ds = m->mutable_spec()->mutable_dataset();
  ds->set_kind("synthetic");
  ds->set_path("/nonexistent");
  ds->set_synthetic_size(8);
  ds->set_synthetic_channels(1);
  ds->set_synthetic_classes(4);
  ds->set_synthetic_train(10);
  ds->set_synthetic_test(40);
  const std::string model = Write("synthetic.bpq", Checksummed(*m));
  CliRun r = Bpnas({"eval", model, "--integer", "--json"}, {{"BPNAS_DATA_ROOT", "/nonexistent"}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"test_samples\": 40"), std::string::npos) << r.output;
}

TEST(CliModelFile, IntegerEvalOfANormalizedModelSaysItIsNotSupported) {
  QuantizedModel m = TinyModel();
  m.mutable_input()->add_mean(0.5f);
  m.mutable_input()->add_std(0.25f);
  m.mutable_spec()->mutable_dataset()->set_kind("synthetic");
  m.mutable_spec()->mutable_dataset()->set_synthetic_size(28);
  m.mutable_spec()->mutable_dataset()->set_synthetic_channels(1);
  m.mutable_spec()->mutable_dataset()->set_synthetic_classes(10);
  m.mutable_spec()->mutable_dataset()->set_synthetic_train(10);
  m.mutable_spec()->mutable_dataset()->set_synthetic_test(10);
  const std::string model = Write("normalized.bpq", Checksummed(m));
  CliRun r = Bpnas({"eval", model, "--integer"});
  EXPECT_EQ(r.exit_code, 1) << "a limitation of bpnas, not the user's error\n" << r.output;
  EXPECT_NE(r.output.find("input.mean other than 0 is not supported"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(model), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bpnas
