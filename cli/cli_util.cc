#include "cli/cli_util.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "google/protobuf/util/json_util.h"

namespace bpnas {

absl::StatusOr<Args> ParseArgs(int argc, char** argv, int first, const std::set<std::string>& with_value,
                               const std::set<std::string>& flags) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    // A one-letter "-o" is "--o".
    if (s.size() == 2 && s[0] == '-' && s[1] != '-') s = "--" + s.substr(1);
    if (s.rfind("--", 0) == 0) {
      std::string name = s.substr(2), value;
      const auto eq = name.find('=');
      bool has_inline = eq != std::string::npos;
      if (has_inline) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      if (flags.count(name) && !has_inline) {
        a.flags.insert(name);
      } else if (with_value.count(name)) {
        if (!has_inline) {
          if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
          value = argv[++i];
        }
        a.options[name] = value;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
      }
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

JsonObject& JsonObject::String(const std::string& key, const std::string& value) {
  (*fields_.mutable_fields())[key].set_string_value(value);
  return *this;
}

JsonObject& JsonObject::Number(const std::string& key, double value) {
  google::protobuf::Value& v = (*fields_.mutable_fields())[key];
  if (std::isfinite(value)) {
    v.set_number_value(value);
  } else {
    v.set_null_value(google::protobuf::NULL_VALUE);
  }
  return *this;
}

JsonObject& JsonObject::Bool(const std::string& key, bool value) {
  (*fields_.mutable_fields())[key].set_bool_value(value);
  return *this;
}

std::string JsonObject::ToJson(bool single_line) const {
  if (!single_line) return bpnas::ToJson(fields_);
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(fields_, &out, o);
  return out;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "bpnas: %s\n", std::string(s.message()).c_str());
  return ExitCodeFor(s);
}

std::string Human(double v) {
  char buf[64];
  if (v >= 1e9)
    std::snprintf(buf, sizeof(buf), "%.3fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof(buf), "%.3fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof(buf), "%.3fk", v / 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  return buf;
}

}  // namespace bpnas
