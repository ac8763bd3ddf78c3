#include "common/http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
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
    return absl::InvalidArgumentError(
        absl::StrCat("invalid listen address \"", listen,
                     "\": want HOST:PORT, :PORT or PORT with PORT 0-65535"));
  }
  address.port = port;
  if (address.host == "localhost") address.host = "127.0.0.1";
  if (!address.host.empty()) {
    in_addr unused;
    if (inet_pton(AF_INET, address.host.c_str(), &unused) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid listen address \"", listen, "\": HOST must be an IPv4 address or localhost"));
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
  const std::string header = absl::StrCat("HTTP/1.1 ", response.status, " ", reason != nullptr ? reason : "",
                                          "\r\nContent-Type: ", response.content_type,
                                          "\r\nContent-Length: ", response.body.size(),
                                          "\r\nCache-Control: no-store\r\n", extra_headers,
                                          "Connection: close\r\n\r\n");
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
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    poll(&p, 1, 10);
  }
  close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                              int threads) {
  if (threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP server threads must be >= 1, got ", threads));
  }
  auto parsed = ParseListenAddress(listen);
  if (!parsed.ok()) return parsed.status();
  const ListenAddress& address = *parsed;
  InitCivetwebOnce();

  std::unique_ptr<HttpServer> server(new HttpServer());
  const std::string ports_option = address.host.empty()
                                       ? std::to_string(address.port)
                                       : absl::StrCat(address.host, ":", address.port);
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
    return absl::UnavailableError(
        absl::StrCat("HTTP server cannot listen on ", listen, ": ", detail));
  }

  mg_server_port bound[4];
  std::memset(bound, 0, sizeof(bound));
  const int n = mg_get_server_ports(server->context_, 4, bound);
  if (n < 1 || bound[0].port <= 0) {
    return absl::InternalError(
        absl::StrCat("HTTP server started on ", listen, " but reports no bound port"));
  }
  server->port_ = bound[0].port;
  server->knock_host_ =
      address.host.empty() || address.host == "0.0.0.0" ? "127.0.0.1" : address.host;
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

// Closes the socket when it goes out of scope.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Waits until `fd` is ready for `events`; false on timeout.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int rc = poll(&p, 1, MillisLeft(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return true;  // let the following call report the error
  }
}

// Connects to one resolved address before the deadline; returns the connected socket or -1 with
// `*error` set.
int ConnectOne(const addrinfo* ai, Clock::time_point deadline, absl::Status* error,
               const std::string& target) {
  const int fd =
      socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    *error = absl::UnavailableError(absl::StrCat("socket(): ", std::strerror(errno)));
    return -1;
  }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
  if (errno != EINPROGRESS) {
    *error = absl::UnavailableError(
        absl::StrCat("cannot connect to ", target, ": ", std::strerror(errno)));
    close(fd);
    return -1;
  }
  if (!WaitFor(fd, POLLOUT, deadline)) {
    *error = absl::DeadlineExceededError(absl::StrCat("timed out connecting to ", target));
    close(fd);
    return -1;
  }
  int so_error = 0;
  socklen_t len = sizeof(so_error);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
  if (so_error != 0) {
    *error = absl::UnavailableError(
        absl::StrCat("cannot connect to ", target, ": ", std::strerror(so_error)));
    close(fd);
    return -1;
  }
  return fd;
}

constexpr size_t kMaxResponseBytes = 256u << 20;

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    int timeout_ms) {
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const std::string target = absl::StrCat("http://", host, ":", port, path);
  if (port <= 0 || port > 65535 || path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("invalid HTTP GET target ", target));
  }

  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* resolved = nullptr;
  const int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &resolved);
  if (gai != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host, ": ", gai_strerror(gai)));
  }
  absl::Status error = absl::UnavailableError(absl::StrCat("no address for ", host));
  int fd_value = -1;
  for (const addrinfo* ai = resolved; ai != nullptr && fd_value < 0; ai = ai->ai_next) {
    fd_value = ConnectOne(ai, deadline, &error, target);
  }
  freeaddrinfo(resolved);
  if (fd_value < 0) return error;
  FileDescriptor fd(fd_value);

  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, ":", port,
                                           "\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    if (!WaitFor(fd.get(), POLLOUT, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("timed out sending to ", target));
    }
    const ssize_t n = send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::UnavailableError(
          absl::StrCat("cannot send to ", target, ": ", std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }

  std::string reply;
  char buffer[16384];
  while (true) {
    if (!WaitFor(fd.get(), POLLIN, deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out after ", timeout_ms, " ms reading from ", target));
    }
    const ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::UnavailableError(
          absl::StrCat("cannot read from ", target, ": ", std::strerror(errno)));
    }
    reply.append(buffer, static_cast<size_t>(n));
    if (reply.size() > kMaxResponseBytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("reply from ", target, " exceeds ", kMaxResponseBytes, " bytes"));
    }
  }

  const size_t line_end = reply.find("\r\n");
  const size_t header_end = reply.find("\r\n\r\n");
  if (line_end == std::string::npos || header_end == std::string::npos ||
      reply.compare(0, 5, "HTTP/") != 0) {
    return absl::InternalError(absl::StrCat("reply from ", target, " is not HTTP"));
  }
  const std::string status_line = reply.substr(0, line_end);
  const size_t code_start = status_line.find(' ');
  int code = 0;
  if (code_start == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(status_line).substr(code_start + 1, 3), &code)) {
    return absl::InternalError(
        absl::StrCat("reply from ", target, " has a bad status line: ", status_line));
  }
  std::string body = reply.substr(header_end + 4);

  // Honour Content-Length when the server sent one. `headers` is "\r\nName: value\r\n...\r\n".
  const std::string headers =
      absl::AsciiStrToLower(reply.substr(line_end, header_end + 2 - line_end));
  const size_t cl = headers.find("\r\ncontent-length:");
  if (cl != std::string::npos) {
    const size_t value_start = cl + std::strlen("\r\ncontent-length:");
    const size_t value_end = headers.find("\r\n", value_start);
    uint64_t length = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(headers).substr(
                             value_start, value_end - value_start)),
                         &length)) {
      if (body.size() < length) {
        return absl::UnavailableError(absl::StrCat("reply from ", target, " was cut short (",
                                                   body.size(), " of ", length, " bytes)"));
      }
      body.resize(length);
    }
  }

  if (code == 200) return body;
  const std::string message = absl::StrCat("GET ", target, ": ", status_line);
  if (code == 404) return absl::NotFoundError(message);
  if (code >= 500) return absl::UnavailableError(message);
  return absl::FailedPreconditionError(message);
}

}  // namespace bpnas
