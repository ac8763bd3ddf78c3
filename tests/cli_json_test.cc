// The CLI's hand-assembled JSON objects (cli/cli_util.h JsonObject).
#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "cli/cli_util.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace bpnas {
namespace {

google::protobuf::Struct Parse(const std::string& json) {
  google::protobuf::Struct s;
  auto st = google::protobuf::util::JsonStringToMessage(json, &s);
  EXPECT_TRUE(st.ok()) << st.message() << "\n" << json;
  return s;
}

TEST(JsonObject, EscapesStringsSoTheyReadBackUnchanged) {
  const std::string path = "/tmp/a \"quoted\" dir\\with\nnewline\ttab";
  const std::string json = JsonObject().String("path", path).ToJson();
  EXPECT_EQ(Parse(json).fields().at("path").string_value(), path) << json;
}

TEST(JsonObject, WritesNonFiniteNumbersAsNullAndIntegersWithoutFraction) {
  const std::string json = JsonObject()
                               .Number("nan", std::nan(""))
                               .Number("inf", std::numeric_limits<double>::infinity())
                               .Number("count", 1000)
                               .Number("accuracy", 85.25)
                               .Bool("ok", true)
                               .ToJson();
  EXPECT_EQ(json.find("NaN"), std::string::npos) << json;
  EXPECT_EQ(json.find("Infinity"), std::string::npos) << json;
  EXPECT_NE(json.find("\"count\": 1000"), std::string::npos) << json;
  const google::protobuf::Struct s = Parse(json);
  EXPECT_TRUE(s.fields().at("nan").has_null_value());
  EXPECT_TRUE(s.fields().at("inf").has_null_value());
  EXPECT_EQ(s.fields().at("accuracy").number_value(), 85.25);
  EXPECT_TRUE(s.fields().at("ok").bool_value());
}

TEST(JsonObject, SingleLineHasNoNewline) {
  const std::string json =
      JsonObject().String("phase", "search").Number("step", 3).ToJson(/*single_line=*/true);
  EXPECT_EQ(json.find('\n'), std::string::npos) << json;
  EXPECT_EQ(Parse(json).fields().at("step").number_value(), 3);
}

}  // namespace
}  // namespace bpnas
