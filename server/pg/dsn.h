// PostgreSQL connection strings (DSNs): what may be logged of one, and the connect timeout every
// connection of bpnas uses. Both forms libpq accepts are understood: keyword ("host=h port=5432
// dbname=d user=u password='p w'") and URI ("postgresql://u:p@h:5432/d?sslmode=require").
//
//   LOG(INFO) << "connecting to " << RedactedDsn(dsn);
//   pqxx::connection conn(WithConnectTimeout(dsn));
//
// Pure functions; thread-safe.
#ifndef BPNAS_SERVER_PG_DSN_H_
#define BPNAS_SERVER_PG_DSN_H_

#include <string>

namespace bpnas {

// `dsn` with a 10-second connect timeout unless it sets one, so that an unreachable host fails a
// call within seconds instead of hanging on TCP retries.
std::string WithConnectTimeout(const std::string& dsn);

// `dsn` reduced to what may appear in logs and errors: host, port, database and user, without the
// password. Unparseable input gives what could be parsed (never the password).
std::string RedactedDsn(const std::string& dsn);

}  // namespace bpnas

#endif  // BPNAS_SERVER_PG_DSN_H_
