// A small embedded HTTP server for /metrics, /healthz and status pages, and a blocking HTTP GET
// client for tests and readiness checks.
//
//   BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> http, HttpServer::Start(":9464", 4));
//   http->Handle("/metrics", [&registry] {
//     HttpResponse r;
//     r.body = registry.Expose();
//     return r;
//   });
//   ...
//   BPNAS_ASSIGN_OR_RETURN(std::string body, HttpGet("127.0.0.1", http->port(), "/healthz", 1000));
//
// The server answers GET and HEAD only (405 otherwise), matches paths exactly (the query string is
// ignored), and answers 404 for paths without a handler. Responses close the connection.
#ifndef BPNAS_COMMON_HTTP_SERVER_H_
#define BPNAS_COMMON_HTTP_SERVER_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct mg_context;
struct mg_connection;

namespace bpnas {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; version=0.0.4; charset=utf-8";
  std::string body;
};

// Thread-safety: Handle() and port() may be called from any thread at any time; handlers run
// concurrently on the server's threads.
class HttpServer {
 public:
  using Handler = std::function<HttpResponse()>;

  // Starts listening on `listen`: "HOST:PORT" with HOST an IPv4 address or "localhost" (e.g.
  // "127.0.0.1:9464"), or ":PORT" or "PORT" (all IPv4 interfaces). Port 0 picks a free port; port()
  // tells which. `threads` (>= 1) requests are served at once. Errors: INVALID_ARGUMENT for a
  // malformed address or thread count; UNAVAILABLE naming the address when it cannot be bound (e.g.
  // the port is taken), with the server library's own message.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen, int threads);

  // Stops listening and waits for requests in flight to finish. Messages the server library logs
  // while running (client errors and the like) are dropped rather than written to stderr.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves `path` (exact match, starting with '/') with `handler`, replacing any earlier handler
  // for it. May be called before or after requests arrive, from any thread. The handler runs on a
  // server thread, possibly on several at once, so it must be thread-safe; it must not call back
  // into this server's destructor. An exception escaping it becomes a 500 response.
  void Handle(const std::string& path, Handler handler);

  // The port actually bound (the chosen one if started with port 0).
  int port() const { return port_; }

 private:
  HttpServer() = default;

  static int BeginRequest(mg_connection* conn);
  static int LogMessage(const mg_connection* conn, const char* message);
  int Serve(mg_connection* conn);

  mg_context* context_ = nullptr;
  int port_ = 0;
  std::string knock_host_;  // where the destructor connects to wake the accept loop

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const Handler>> handlers_;  // guarded by mu_
  std::deque<std::string> recent_log_;  // the server library's latest messages; guarded by mu_
};

// GETs http://host:port/path over HTTP/1.0 and returns the body. Blocks for at most about
// `timeout_ms` in total. Errors: UNAVAILABLE when the host cannot be resolved or reached
// (connection refused, reset, closed without a reply), DEADLINE_EXCEEDED on timeout, NOT_FOUND for a 404
// answer, UNAVAILABLE for 5xx, FAILED_PRECONDITION for any other non-200 status (each message carries the
// status line), INTERNAL for a reply that is not HTTP.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    int timeout_ms);

}  // namespace bpnas

#endif  // BPNAS_COMMON_HTTP_SERVER_H_
