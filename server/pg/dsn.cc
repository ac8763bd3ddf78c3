#include "server/pg/dsn.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace bpnas {
namespace {

// Splits a libpq connection string into key -> value (keyword form: key=value pairs, values
// optionally single-quoted with backslash escapes). Unparseable input gives what was parsed.
std::map<std::string, std::string> ParseKeywordDsn(const std::string& dsn) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  const size_t n = dsn.size();
  auto skip_space = [&] {
    while (i < n && absl::ascii_isspace(static_cast<unsigned char>(dsn[i]))) ++i;
  };
  while (true) {
    skip_space();
    if (i >= n) break;
    size_t key_start = i;
    while (i < n && dsn[i] != '=' && !absl::ascii_isspace(static_cast<unsigned char>(dsn[i]))) ++i;
    std::string key = dsn.substr(key_start, i - key_start);
    skip_space();
    if (i >= n || dsn[i] != '=') break;
    ++i;
    skip_space();
    std::string value;
    if (i < n && dsn[i] == '\'') {
      ++i;
      while (i < n && dsn[i] != '\'') {
        if (dsn[i] == '\\' && i + 1 < n) ++i;
        value.push_back(dsn[i++]);
      }
      ++i;
    } else {
      while (i < n && !absl::ascii_isspace(static_cast<unsigned char>(dsn[i]))) {
        if (dsn[i] == '\\' && i + 1 < n) ++i;
        value.push_back(dsn[i++]);
      }
    }
    out[key] = value;
  }
  return out;
}

bool IsUriDsn(const std::string& dsn) {
  return absl::StartsWith(dsn, "postgresql://") || absl::StartsWith(dsn, "postgres://");
}

}  // namespace

std::string WithConnectTimeout(const std::string& dsn) {
  if (dsn.find("connect_timeout") != std::string::npos) return dsn;
  if (IsUriDsn(dsn)) {
    return absl::StrCat(dsn, dsn.find('?') == std::string::npos ? "?" : "&", "connect_timeout=10");
  }
  return absl::StrCat(dsn, dsn.empty() ? "" : " ", "connect_timeout=10");
}

std::string RedactedDsn(const std::string& dsn) {
  std::string host, port, dbname, user;
  if (IsUriDsn(dsn)) {
    // postgresql://[user[:password]@][host][:port][/dbname][?k=v&...]
    std::string rest = dsn.substr(dsn.find("://") + 3);
    std::string params;
    if (size_t q = rest.find('?'); q != std::string::npos) {
      params = rest.substr(q + 1);
      rest.resize(q);
    }
    if (size_t slash = rest.find('/'); slash != std::string::npos) {
      dbname = rest.substr(slash + 1);
      rest.resize(slash);
    }
    if (size_t at = rest.rfind('@'); at != std::string::npos) {
      user = rest.substr(0, rest.find_first_of(":@"));
      rest = rest.substr(at + 1);
    }
    host = rest;  // host[:port], possibly several, kept as written
    for (absl::string_view kv : absl::StrSplit(params, '&')) {
      if (absl::StartsWith(kv, "host=")) host = std::string(kv.substr(5));
      if (absl::StartsWith(kv, "port=")) port = std::string(kv.substr(5));
      if (absl::StartsWith(kv, "user=")) user = std::string(kv.substr(5));
      if (absl::StartsWith(kv, "dbname=")) dbname = std::string(kv.substr(7));
    }
  } else {
    std::map<std::string, std::string> kv = ParseKeywordDsn(dsn);
    host = kv.count("host") ? kv["host"] : kv["hostaddr"];
    port = kv["port"];
    dbname = kv["dbname"];
    user = kv["user"];
  }
  std::vector<std::string> parts;
  parts.push_back(absl::StrCat("host=", host.empty() ? "(default)" : host));
  if (!port.empty()) parts.push_back(absl::StrCat("port=", port));
  if (!dbname.empty()) parts.push_back(absl::StrCat("dbname=", dbname));
  if (!user.empty()) parts.push_back(absl::StrCat("user=", user));
  return absl::StrJoin(parts, " ");
}

}  // namespace bpnas
