#include "artifact/model_file.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace bpnas {

using bpnas::v1::QuantizedModel;

std::string SerializeModel(const QuantizedModel& model) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  model.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

std::string ModelChecksum(const QuantizedModel& model) {
  QuantizedModel copy = model;
  copy.clear_checksum();
  return Sha256Hex(SerializeModel(copy));
}

absl::StatusOr<QuantizedModel> ParseModel(std::string_view bytes, const std::string& source) {
  if (bytes.empty()) return absl::DataLossError(absl::StrCat(source, ": empty file, not a bpnas model"));
  QuantizedModel m;
  if (!m.ParseFromArray(bytes.data(), int(bytes.size()))) {
    return absl::DataLossError(
        absl::StrCat(source, ": not a bpnas model (truncated or not a QuantizedModel protobuf)"));
  }
  if (m.format_version() == 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        source,
        ": format_version 1 (an older bpnas: one byte per weight, float batch norm); this bpnas "
        "reads format ",
        kModelFormatVersion, ": run the search again to get a format ", kModelFormatVersion, " model"));
  }
  if (m.format_version() != kModelFormatVersion) {
    return absl::DataLossError(absl::StrCat(source, ": format_version ", m.format_version(),
                                            " is not a bpnas model format (this bpnas reads ",
                                            kModelFormatVersion, ")"));
  }
  const std::string want = ModelChecksum(m);
  if (m.checksum() != want) {
    return absl::DataLossError(absl::StrCat(source, ": checksum mismatch (file says '", m.checksum(),
                                            "', content hashes to ", want, "): the file is corrupt"));
  }
  auto shapes = ValidateModel(m);
  if (!shapes.ok()) return absl::DataLossError(absl::StrCat(source, ": ", shapes.status().message()));
  return m;
}

absl::Status WriteModelFile(const QuantizedModel& model, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::NotFoundError(absl::StrCat(path, ": cannot open for writing"));
    const std::string bytes = SerializeModel(model);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot move ", tmp, " into place"));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizedModel> ReadModelFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open model file"));
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ParseModel(buf.str(), path);
}

}  // namespace bpnas
