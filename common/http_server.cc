#include "common/http_server.h"

#include <civetweb.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace bpnas {
namespace {

// civetweb's global state (mg_init_library) must be set up once, before any server starts, and
// its initialisation is not thread-safe. It stays up for the life of the process.
void InitCivetwebOnce() {
  static std::once_flag once;
  std::call_once(once, [] { mg_init_library(0); });
}

constexpr size_t kRecentLogLines = 8;

struct ListenAddress {
  std::string host;  // empty: all interfaces
  int port = 0;
};

absl::StatusOr<ListenAddress> ParseListenAddress(const std::string& listen) {
  ListenAddress address;
  absl::string_view port_text = listen;
  const size_t colon = listen.rfind(':');
  if (colon != std::string::npos) {
    address.host = listen.substr(0, colon);
    port_text = absl::string_view(listen).substr(colon + 1);
  }
  int port = -1;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535 ||
      port_text.find_first_not_of("0123456789") != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("invalid listen address \"", listen,
                                                   "\": want HOST:PORT, :PORT or PORT with PORT 0-65535"));
  }
  address.port = port;
  if (address.host == "localhost") address.host = "127.0.0.1";
  if (!address.host.empty()) {
    in_addr unused;
    if (inet_pton(AF_INET, address.host.c_str(), &unused) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid listen address \"", listen, "\": HOST must be an IPv4 address or localhost"));
    }
  }
  return address;
}

void WriteResponse(mg_connection* conn, bool head, const HttpResponse& response,
                   const char* extra_headers = "") {
  const char* reason = mg_get_response_code_text(conn, response.status);
  // Formatted here rather than with mg_printf: its vsnprintf needs more stack than civetweb's worker
  // threads have left once libraries with large thread-local storage are linked in (seen with the
  // CUDA runtime and NCCL in the worker: a segfault inside vsnprintf).
  const std::string header =
      absl::StrCat("HTTP/1.1 ", response.status, " ", reason != nullptr ? reason : "",
                   "\r\nContent-Type: ", response.content_type, "\r\nContent-Length: ", response.body.size(),
                   "\r\nCache-Control: no-store\r\n", extra_headers, "Connection: close\r\n\r\n");
  mg_write(conn, header.data(), header.size());
  if (!head && !response.body.empty()) mg_write(conn, response.body.data(), response.body.size());
}

HttpResponse PlainResponse(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.content_type = "text/plain; charset=utf-8";
  response.body = std::move(body);
  return response;
}

// Opens and at once closes a TCP connection to host:port, waiting at most a few milliseconds.
void KnockOnPort(const std::string& host, int port) {
  sockaddr_in addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    poll(&p, 1, 10);
  }
  close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen, int threads) {
  if (threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP server threads must be >= 1, got ", threads));
  }
  auto parsed = ParseListenAddress(listen);
  if (!parsed.ok()) return parsed.status();
  const ListenAddress& address = *parsed;
  InitCivetwebOnce();

  std::unique_ptr<HttpServer> server(new HttpServer());
  const std::string ports_option =
      address.host.empty() ? std::to_string(address.port) : absl::StrCat(address.host, ":", address.port);
  const std::string threads_option = std::to_string(threads);
  // No document_root: civetweb serves no files, every request goes through BeginRequest.
  const char* options[] = {"listening_ports",
                           ports_option.c_str(),
                           "num_threads",
                           threads_option.c_str(),
                           "request_timeout_ms",
                           "10000",
                           "enable_keep_alive",
                           "no",
                           nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.begin_request = &HttpServer::BeginRequest;
  callbacks.log_message = &HttpServer::LogMessage;

  mg_init_data init;
  std::memset(&init, 0, sizeof(init));
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = options;
  unsigned error_code = 0;
  char error_text[256] = {0};
  mg_error_data error;
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);

  server->context_ = mg_start2(&init, &error);
  if (server->context_ == nullptr) {
    // civetweb logs the cause ("cannot bind to ...: Address already in use") and then reports a
    // generic error; say both.
    std::string detail;
    {
      std::lock_guard<std::mutex> lock(server->mu_);
      detail = absl::StrJoin(server->recent_log_, "; ");
    }
    if (error_text[0] != '\0' && detail.find(error_text) == std::string::npos) {
      detail = detail.empty() ? std::string(error_text) : absl::StrCat(detail, "; ", error_text);
    }
    if (detail.empty()) detail = absl::StrCat("civetweb error ", error_code);
    return absl::UnavailableError(absl::StrCat("HTTP server cannot listen on ", listen, ": ", detail));
  }

  mg_server_port bound[4];
  std::memset(bound, 0, sizeof(bound));
  const int n = mg_get_server_ports(server->context_, 4, bound);
  if (n < 1 || bound[0].port <= 0) {
    return absl::InternalError(absl::StrCat("HTTP server started on ", listen, " but reports no bound port"));
  }
  server->port_ = bound[0].port;
  server->knock_host_ = address.host.empty() || address.host == "0.0.0.0" ? "127.0.0.1" : address.host;
  return server;
}

HttpServer::~HttpServer() {
  if (context_ == nullptr) return;
  // civetweb's accept loop polls its listening socket with a timeout of about two seconds and only
  // then notices the stop request, so a plain mg_stop() stalls for up to that long (a noticeable
  // pause at every shutdown and in every test). Knocking on the port while mg_stop() waits wakes
  // the loop at once; a knock that lands before the stop request is an empty connection that a
  // worker thread reads to its end and closes.
  std::atomic<bool> stopped{false};
  std::thread knocker([this, &stopped] {
    while (!stopped.load()) {
      KnockOnPort(knock_host_, port_);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  mg_stop(context_);
  stopped.store(true);
  knocker.join();
}

void HttpServer::Handle(const std::string& path, Handler handler) {
  auto shared = std::make_shared<const Handler>(std::move(handler));
  std::lock_guard<std::mutex> lock(mu_);
  handlers_[path] = std::move(shared);
}

int HttpServer::BeginRequest(mg_connection* conn) {
  auto* server = static_cast<HttpServer*>(mg_get_user_data(mg_get_context(conn)));
  return server->Serve(conn);
}

int HttpServer::LogMessage(const mg_connection* conn, const char* message) {
  // Keep the latest few messages so a failed Start() can say why; never write to stderr.
  if (conn != nullptr && message != nullptr) {
    auto* server = static_cast<HttpServer*>(mg_get_user_context_data(conn));
    if (server != nullptr) {
      std::lock_guard<std::mutex> lock(server->mu_);
      server->recent_log_.emplace_back(absl::StripTrailingAsciiWhitespace(message));
      if (server->recent_log_.size() > kRecentLogLines) server->recent_log_.pop_front();
    }
  }
  return 1;
}

int HttpServer::Serve(mg_connection* conn) {
  const mg_request_info* request = mg_get_request_info(conn);
  const std::string method = request->request_method != nullptr ? request->request_method : "";
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    WriteResponse(conn, false, PlainResponse(405, "method not allowed: " + method + "\n"),
                  "Allow: GET, HEAD\r\n");
    return 405;
  }
  const char* uri = request->local_uri != nullptr ? request->local_uri : request->request_uri;
  const std::string path = uri != nullptr ? uri : "";

  std::shared_ptr<const Handler> handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = handlers_.find(path);
    if (it != handlers_.end()) handler = it->second;
  }
  HttpResponse response;
  if (handler == nullptr) {
    response = PlainResponse(404, "not found: " + path + "\n");
  } else {
    // Exceptions must not unwind through the C library's frames.
    try {
      response = (*handler)();
    } catch (const std::exception& e) {
      response = PlainResponse(500, absl::StrCat("internal error: ", e.what(), "\n"));
    } catch (...) {
      response = PlainResponse(500, "internal error\n");
    }
  }
  WriteResponse(conn, head, response);
  return response.status;
}

// ---- client ----

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxResponseBytes = 256u << 20;

int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

struct CloseConnection {
  void operator()(mg_connection* conn) const { mg_close_connection(conn); }
};

// One GET with civetweb's client. It waits for the reply's headers until `deadline`, but its connect
// and its body reads have fixed limits of their own (about 10 s and 30 s): HttpGet bounds those.
absl::StatusOr<std::string> GetWithCivetweb(const std::string& host, int port, const std::string& path,
                                            const std::string& target, int timeout_ms,
                                            Clock::time_point deadline) {
  char error[256] = {0};
  std::unique_ptr<mg_connection, CloseConnection> conn(
      mg_connect_client(host.c_str(), port, /*use_ssl=*/0, error, sizeof(error)));
  if (conn == nullptr) {
    if (absl::StrContains(error, "timeout")) {
      return absl::DeadlineExceededError(absl::StrCat("timed out connecting to ", target));
    }
    return absl::UnavailableError(absl::StrCat("cannot connect to ", target, ": ", error));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, ":", port, "\r\nConnection: close\r\n\r\n");
  if (mg_write(conn.get(), request.data(), request.size()) != static_cast<int>(request.size())) {
    return absl::UnavailableError(absl::StrCat("cannot send to ", target));
  }
  const int left_ms = MillisLeft(deadline);
  const Clock::time_point wait_start = Clock::now();
  if (left_ms <= 0 || mg_get_response(conn.get(), error, sizeof(error), left_ms) < 0) {
    // civetweb reports a timeout as no data; it gives up only once `left_ms` have passed.
    if (Clock::now() >= deadline || Clock::now() - wait_start >= std::chrono::milliseconds(left_ms)) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out after ", timeout_ms, " ms reading from ", target));
    }
    // civetweb says "No data received" both for a reset and for a close without a reply.
    if (absl::StrContains(error, "No data received")) {
      return absl::UnavailableError(
          absl::StrCat("no reply from ", target, " (the connection was closed or reset)"));
    }
    return absl::InternalError(absl::StrCat("reply from ", target, " is not HTTP: ", error));
  }
  const mg_response_info* info = mg_get_response_info(conn.get());
  const int code = info->status_code;
  const std::string status_line =
      absl::StrCat("HTTP/", info->http_version != nullptr ? info->http_version : "?", " ", code,
                   info->status_text != nullptr && *info->status_text != '\0' ? " " : "",
                   info->status_text != nullptr ? info->status_text : "");

  std::string body;
  char buffer[16384];
  for (;;) {
    const int n = mg_read(conn.get(), buffer, sizeof(buffer));
    if (n < 0) return absl::UnavailableError(absl::StrCat("cannot read from ", target));
    if (n == 0) break;
    body.append(buffer, static_cast<size_t>(n));
    if (body.size() > kMaxResponseBytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("reply from ", target, " exceeds ", kMaxResponseBytes, " bytes"));
    }
  }
  if (info->content_length >= 0 && body.size() < static_cast<uint64_t>(info->content_length)) {
    return absl::UnavailableError(absl::StrCat("reply from ", target, " was cut short (", body.size(), " of ",
                                               info->content_length, " bytes)"));
  }

  if (code == 200) return body;
  const std::string message = absl::StrCat("GET ", target, ": ", status_line);
  if (code == 404) return absl::NotFoundError(message);
  if (code >= 500) return absl::UnavailableError(message);
  return absl::FailedPreconditionError(message);
}

// The answer of a GET running on its own thread, for a caller that may stop waiting for it.
struct PendingGet {
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;                   // guarded by mu
  absl::StatusOr<std::string> result;  // guarded by mu
};

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    int timeout_ms) {
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const std::string target = absl::StrCat("http://", host, ":", port, path);
  if (port <= 0 || port > 65535 || path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("invalid HTTP GET target ", target));
  }
  InitCivetwebOnce();
  // civetweb's client cannot be told to give up at our deadline while connecting or reading the
  // body, and offers no way to interrupt it; so the exchange runs on a thread of its own that this
  // call stops waiting for at the deadline. A thread left behind finishes within civetweb's own
  // limits and then closes its connection.
  auto pending = std::make_shared<PendingGet>();
  std::thread([pending, host, port, path, target, timeout_ms, deadline] {
    absl::StatusOr<std::string> result = GetWithCivetweb(host, port, path, target, timeout_ms, deadline);
    std::lock_guard<std::mutex> lock(pending->mu);
    pending->result = std::move(result);
    pending->done = true;
    pending->done_cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(pending->mu);
  // A little past the deadline, so that a header wait timing out reports itself first.
  if (!pending->done_cv.wait_until(lock, deadline + std::chrono::milliseconds(50),
                                   [&] { return pending->done; })) {
    return absl::DeadlineExceededError(
        absl::StrCat("timed out after ", timeout_ms, " ms waiting for ", target));
  }
  return std::move(pending->result);
}

}  // namespace bpnas
