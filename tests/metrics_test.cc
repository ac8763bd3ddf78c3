#include "common/metrics.h"

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/http_server.h"
#include "common/subprocess.h"

namespace bpnas {
namespace {

// ---- exposition ----

TEST(MetricsExposition, PrintsHelpAndTypeOncePerFamilySortedByName) {
  MetricsRegistry registry;
  GaugeFamily* workers = registry.AddGauge("bpnas_workers", "Registered workers.", {"state"});
  CounterFamily* rpcs = registry.AddCounter("bpnas_rpcs_total", "RPCs handled.", {"method", "code"});
  rpcs->WithLabels({"SubmitJob", "OK"}).Inc();
  rpcs->WithLabels({"SubmitJob", "OK"}).Inc(2);
  rpcs->WithLabels({"GetJob", "NOT_FOUND"}).Inc();
  workers->WithLabels({"idle"}).Set(3);
  workers->WithLabels({"busy"}).Set(1.5);

  EXPECT_EQ(registry.Expose(),
            "# HELP bpnas_rpcs_total RPCs handled.\n"
            "# TYPE bpnas_rpcs_total counter\n"
            "bpnas_rpcs_total{method=\"GetJob\",code=\"NOT_FOUND\"} 1\n"
            "bpnas_rpcs_total{method=\"SubmitJob\",code=\"OK\"} 3\n"
            "# HELP bpnas_workers Registered workers.\n"
            "# TYPE bpnas_workers gauge\n"
            "bpnas_workers{state=\"busy\"} 1.5\n"
            "bpnas_workers{state=\"idle\"} 3\n");
}

TEST(MetricsExposition, EscapesHelpBackslashNewlineAndLabelValueQuote) {
  MetricsRegistry registry;
  GaugeFamily* g = registry.AddGauge("odd", "a \\ backslash\nand a \"quote\"", {"v"});
  g->WithLabels({"C:\\dir \"x\"\nnext"}).Set(1);
  // HELP escapes backslash and newline but not quotes; label values escape all three.
  EXPECT_EQ(registry.Expose(),
            "# HELP odd a \\\\ backslash\\nand a \"quote\"\n"
            "# TYPE odd gauge\n"
            "odd{v=\"C:\\\\dir \\\"x\\\"\\nnext\"} 1\n");
}

TEST(MetricsExposition, HistogramBucketsAreCumulativeWithInfEqualToCount) {
  MetricsRegistry registry;
  HistogramFamily* h = registry.AddHistogram("rpc_duration_seconds", "Latency.", {"method"}, {0.1, 1, 10});
  Histogram& child = h->WithLabels({"Get"});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0}) child.Observe(v);

  EXPECT_EQ(registry.Expose(),
            "# HELP rpc_duration_seconds Latency.\n"
            "# TYPE rpc_duration_seconds histogram\n"
            "rpc_duration_seconds_bucket{method=\"Get\",le=\"0.1\"} 2\n"  // 0.1 is inclusive
            "rpc_duration_seconds_bucket{method=\"Get\",le=\"1\"} 3\n"
            "rpc_duration_seconds_bucket{method=\"Get\",le=\"10\"} 4\n"
            "rpc_duration_seconds_bucket{method=\"Get\",le=\"+Inf\"} 5\n"
            "rpc_duration_seconds_sum{method=\"Get\"} 22.65\n"
            "rpc_duration_seconds_count{method=\"Get\"} 5\n");
  EXPECT_EQ(child.Count(), 5u);
  EXPECT_DOUBLE_EQ(child.Sum(), 22.65);
}

TEST(MetricsExposition, UnlabelledHistogramHasOnlyLeLabel) {
  MetricsRegistry registry;
  HistogramFamily* h = registry.AddHistogram("step_seconds", "Step time.", {}, {1});
  h->WithLabels({}).Observe(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(registry.Expose(),
            "# HELP step_seconds Step time.\n"
            "# TYPE step_seconds histogram\n"
            "step_seconds_bucket{le=\"1\"} 0\n"
            "step_seconds_bucket{le=\"+Inf\"} 1\n"
            "step_seconds_sum NaN\n"
            "step_seconds_count 1\n");
}

TEST(MetricsExposition, RemovedGaugeChildrenDisappear) {
  MetricsRegistry registry;
  GaugeFamily* loss = registry.AddGauge("bpnas_running_job_loss", "Loss.", {"job", "term"});
  loss->Set({"j1", "cross_entropy"}, 2.5);
  loss->Set({"j1", "barrier"}, 0.25);
  loss->Set({"j2", "cross_entropy"}, 1);
  EXPECT_TRUE(loss->Remove({"j2", "cross_entropy"}));
  EXPECT_FALSE(loss->Remove({"j2", "cross_entropy"}));
  EXPECT_EQ(registry.Expose(),
            "# HELP bpnas_running_job_loss Loss.\n"
            "# TYPE bpnas_running_job_loss gauge\n"
            "bpnas_running_job_loss{job=\"j1\",term=\"barrier\"} 0.25\n"
            "bpnas_running_job_loss{job=\"j1\",term=\"cross_entropy\"} 2.5\n");

  EXPECT_EQ(loss->RemoveMatching("job", "j1"), 2);
  EXPECT_EQ(loss->size(), 0u);
  // A family whose children are all gone still announces itself.
  EXPECT_EQ(registry.Expose(),
            "# HELP bpnas_running_job_loss Loss.\n"
            "# TYPE bpnas_running_job_loss gauge\n");
}

TEST(MetricsExposition, ReplaceLeavesExactlyTheSnapshot) {
  MetricsRegistry registry;
  GaugeFamily* jobs = registry.AddGauge("bpnas_jobs", "Jobs by state.", {"state"});
  jobs->Replace({{{"QUEUED"}, 2}, {{"RUNNING"}, 1}, {{"FAILED"}, 7}});
  jobs->Replace({{{"QUEUED"}, 0}, {{"RUNNING"}, 3}});
  EXPECT_EQ(registry.Expose(),
            "# HELP bpnas_jobs Jobs by state.\n"
            "# TYPE bpnas_jobs gauge\n"
            "bpnas_jobs{state=\"QUEUED\"} 0\n"
            "bpnas_jobs{state=\"RUNNING\"} 3\n");
}

TEST(MetricsExposition, UnlabelledFamiliesShowZeroBeforeFirstUse) {
  MetricsRegistry registry;
  registry.AddCounter("bpnas_progress_reports_total", "Reports stored.");
  registry.AddGauge("bpnas_store_up", "1 if the database answers.");
  EXPECT_EQ(registry.Expose(),
            "# HELP bpnas_progress_reports_total Reports stored.\n"
            "# TYPE bpnas_progress_reports_total counter\n"
            "bpnas_progress_reports_total 0\n"
            "# HELP bpnas_store_up 1 if the database answers.\n"
            "# TYPE bpnas_store_up gauge\n"
            "bpnas_store_up 0\n");
}

TEST(FormatMetricValue, WritesIntegersPlainlyAndSpecialValuesAsPrometheusDoes) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(-0.0), "0");
  EXPECT_EQ(FormatMetricValue(1e6), "1000000");
  EXPECT_EQ(FormatMetricValue(-42), "-42");
  EXPECT_EQ(FormatMetricValue(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(0.0005), "0.0005");
  EXPECT_EQ(FormatMetricValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatMetricValue(123456.789), "123456.789");
  EXPECT_EQ(FormatMetricValue(1e-5), "1e-05");
  EXPECT_EQ(FormatMetricValue(-2.5e-7), "-2.5e-07");
  EXPECT_EQ(FormatMetricValue(1e20), "1e+20");
  EXPECT_EQ(std::stod(FormatMetricValue(1e300)), 1e300);
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
}

// ---- children ----

TEST(MetricFamily, WithLabelsReturnsTheSameChildEachTime) {
  MetricsRegistry registry;
  CounterFamily* c = registry.AddCounter("hits_total", "Hits.", {"path"});
  EXPECT_EQ(&c->WithLabels({"/a"}), &c->WithLabels({"/a"}));
  EXPECT_NE(&c->WithLabels({"/a"}), &c->WithLabels({"/b"}));
  c->WithLabels({"/a"}).Inc(4);
  EXPECT_EQ(c->WithLabels({"/a"}).Value(), 4);
}

TEST(Counter, IgnoresNegativeAndNaNIncrements) {
  Counter c;
  c.Inc(2);
  c.Inc(-1);
  c.Inc(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(c.Value(), 2);
}

TEST(Gauge, SetIncDec) {
  Gauge g;
  g.Set(5);
  g.Inc();
  g.Dec(2.5);
  EXPECT_EQ(g.Value(), 3.5);
}

TEST(Counter, ConcurrentIncrementsAreAllCounted) {
  MetricsRegistry registry;
  CounterFamily* c = registry.AddCounter("events_total", "Events.", {"kind"});
  HistogramFamily* h = registry.AddHistogram("size_bytes", "Sizes.", {}, {10, 100});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      Counter& child = c->WithLabels({"x"});
      for (int i = 0; i < kPerThread; ++i) {
        child.Inc();
        h->WithLabels({}).Observe(i % 200);
      }
    });
  }
  // Scrapes in the middle must not disturb the writers.
  for (int i = 0; i < 20; ++i) registry.Expose();
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(c->WithLabels({"x"}).Value(), kThreads * kPerThread);
  EXPECT_EQ(h->WithLabels({}).Count(), static_cast<uint64_t>(kThreads * kPerThread));
}

TEST(Buckets, LatencyAndExponentialBoundsAreIncreasing) {
  const std::vector<double> latency = LatencyBucketsSeconds();
  ASSERT_FALSE(latency.empty());
  EXPECT_EQ(latency.front(), 0.0005);
  EXPECT_EQ(latency.back(), 10);
  for (size_t i = 1; i < latency.size(); ++i) EXPECT_LT(latency[i - 1], latency[i]);
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

// ---- registration rules (violations abort) ----

class MetricsRegistryDeathTest : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(MetricsRegistryDeathTest, CounterWithoutTotalSuffixIsRejected) {
  EXPECT_DEATH(MetricsRegistry().AddCounter("bpnas_rpcs", "RPCs."), "must have a name ending in");
}

TEST_F(MetricsRegistryDeathTest, NonCounterWithTotalSuffixIsRejected) {
  EXPECT_DEATH(MetricsRegistry().AddGauge("bpnas_jobs_total", "Jobs."), "counters only");
}

TEST_F(MetricsRegistryDeathTest, InvalidMetricNameIsRejected) {
  EXPECT_DEATH(MetricsRegistry().AddGauge("9lives", "x"), "invalid metric name");
  EXPECT_DEATH(MetricsRegistry().AddGauge("bpnas-jobs", "x"), "invalid metric name");
}

TEST_F(MetricsRegistryDeathTest, ReservedOrInvalidLabelNamesAreRejected) {
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", "x", {"__name"}), "reserved");
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", "x", {"a:b"}), "invalid label name");
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", "x", {"a", "a"}), "repeated");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h_seconds", "x", {"le"}, {1}), "reserved");
}

TEST_F(MetricsRegistryDeathTest, DuplicateNameAndEmptyHelpAreRejected) {
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.AddGauge("g", "x");
        r.AddGauge("g", "y");
      },
      "registered twice");
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", ""), "no help text");
}

TEST_F(MetricsRegistryDeathTest, BadBucketBoundsAndWrongLabelCountAreRejected) {
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h_seconds", "x", {}, {1, 1}), "strictly increasing");
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.AddCounter("c_total", "x", {"a", "b"})->WithLabels({"only one"});
      },
      "2 label\\(s\\) but was given 1");
}

// ---- HTTP server ----

// Sends `request` verbatim and returns everything the server answers.
std::string RawExchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buffer[4096];
    pollfd p{fd, POLLIN, 0};
    while (poll(&p, 1, 5000) > 0) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      reply.append(buffer, static_cast<size_t>(n));
    }
  }
  close(fd);
  return reply;
}

std::string FindPromtool() {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = dirs.substr(start, end - start) + "/promtool";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

TEST(HttpServer, ServedMetricsPassPromtoolCheck) {
  const std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";

  MetricsRegistry registry;
  registry.AddCounter("bpnas_rpcs_total", "RPCs handled, by method and code.", {"method", "code"})
      ->WithLabels({"SubmitJob", "OK"})
      .Inc(3);
  GaugeFamily* loss =
      registry.AddGauge("bpnas_running_job_loss", "Loss \\ terms\nof a job.", {"job", "term"});
  loss->Set({"job-1", "cross_entropy"}, 2.25);
  loss->Set({"we\"ird\\job\nname", "barrier"}, std::numeric_limits<double>::quiet_NaN());
  loss->Set({"job-2", "prob1"}, -std::numeric_limits<double>::infinity());
  HistogramFamily* latency = registry.AddHistogram("bpnas_rpc_duration_seconds", "RPC latency.", {"method"},
                                                   LatencyBucketsSeconds());
  for (double v : {0.0001, 0.003, 0.2, 7.0, 30.0}) latency->WithLabels({"GetJob"}).Observe(v);
  registry.AddGauge("bpnas_workers", "Workers by state (none yet).", {"state"});

  auto server = HttpServer::Start("127.0.0.1:0", 2);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  (*server)->Handle("/metrics", [&registry] {
    HttpResponse response;
    response.body = registry.Expose();
    return response;
  });

  absl::StatusOr<std::string> body = HttpGet("127.0.0.1", (*server)->port(), "/metrics", 5000);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, registry.Expose());

  char path_template[] = "/tmp/bpnas_metrics_XXXXXX";
  const int fd = mkstemp(path_template);
  ASSERT_GE(fd, 0);
  close(fd);
  const std::string path = path_template;
  std::ofstream(path) << *body;
  SubprocessOptions options;
  options.stdin_file = path;
  options.stdout_to = SubprocessOptions::Output::kCapture;
  options.stderr_to = SubprocessOptions::Output::kStdout;
  absl::StatusOr<SubprocessResult> check =
      RunSubprocess({promtool, "check", "metrics"}, options, absl::Seconds(60));
  std::remove(path.c_str());
  ASSERT_TRUE(check.ok()) << check.status();
  const std::string& output = check->stdout_text;
  EXPECT_EQ(check->exit_code, 0) << output << "\n--- exposition ---\n" << *body;
  EXPECT_EQ(output, "") << "promtool lint complaints:\n" << output;
}

TEST(HttpServer, UnknownPathIsNotFound) {
  auto server = HttpServer::Start("127.0.0.1:0", 1);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Handle("/metrics", [] { return HttpResponse{}; });
  absl::StatusOr<std::string> body = HttpGet("127.0.0.1", (*server)->port(), "/metricsx", 5000);
  EXPECT_EQ(body.status().code(), absl::StatusCode::kNotFound) << body.status();
  EXPECT_NE(body.status().message().find("404"), absl::string_view::npos) << body.status();
}

TEST(HttpServer, HandlersAddedAfterStartAreServedAndQueryIsIgnored) {
  auto server = HttpServer::Start(":0", 2);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  EXPECT_FALSE(HttpGet("127.0.0.1", port, "/healthz", 5000).ok());
  (*server)->Handle("/healthz", [] {
    HttpResponse r;
    r.content_type = "text/plain";
    r.body = "ok\n";
    return r;
  });
  absl::StatusOr<std::string> body = HttpGet("127.0.0.1", port, "/healthz?verbose=1", 5000);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "ok\n");
}

TEST(HttpServer, AnswersOnlyGetAndHead) {
  auto server = HttpServer::Start("127.0.0.1:0", 1);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Handle("/metrics", [] {
    HttpResponse r;
    r.body = "x 1\n";
    return r;
  });
  const int port = (*server)->port();

  const std::string post = RawExchange(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405", 0), 0u) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD"), std::string::npos) << post;

  const std::string head = RawExchange(port, "HEAD /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), std::string::npos)
      << head;
  EXPECT_NE(head.find("Content-Length: 4\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "") << "HEAD must not carry a body";
}

TEST(HttpServer, HandlerExceptionBecomesInternalServerError) {
  auto server = HttpServer::Start("127.0.0.1:0", 1);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Handle("/boom", []() -> HttpResponse { throw std::runtime_error("kaput"); });
  absl::StatusOr<std::string> body = HttpGet("127.0.0.1", (*server)->port(), "/boom", 5000);
  EXPECT_EQ(body.status().code(), absl::StatusCode::kUnavailable) << body.status();
  EXPECT_NE(body.status().message().find("500"), absl::string_view::npos) << body.status();
}

TEST(HttpServer, TakenPortIsUnavailableAndNamesTheAddress) {
  auto first = HttpServer::Start("127.0.0.1:0", 1);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = "127.0.0.1:" + std::to_string((*first)->port());
  testing::internal::CaptureStderr();
  auto second = HttpServer::Start(address, 1);
  const std::string stderr_text = testing::internal::GetCapturedStderr();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().message().find(address), absl::string_view::npos) << second.status();
  // The library's own explanation travels in the status instead of going to stderr.
  EXPECT_NE(second.status().message().find("in use"), absl::string_view::npos) << second.status();
  EXPECT_EQ(stderr_text, "");
}

TEST(HttpServer, MalformedListenAddressIsInvalidArgument) {
  for (const char* listen : {"", "abc", "127.0.0.1:", "127.0.0.1:70000", "host.example:80", ":-1"}) {
    auto server = HttpServer::Start(listen, 1);
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << listen;
  }
  EXPECT_EQ(HttpServer::Start("127.0.0.1:0", 0).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- HTTP client ----

TEST(HttpGet, RefusedConnectionIsUnavailable) {
  int port = 0;
  {
    auto server = HttpServer::Start("127.0.0.1:0", 1);
    ASSERT_TRUE(server.ok()) << server.status();
    port = (*server)->port();
  }
  absl::StatusOr<std::string> body = HttpGet("127.0.0.1", port, "/", 2000);
  EXPECT_EQ(body.status().code(), absl::StatusCode::kUnavailable) << body.status();
}

// A socket listening on a free loopback port that never accepts by itself; sets *port.
int ListenOnLoopback(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 4) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "cannot listen on loopback";
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

TEST(HttpGet, SilentServerTimesOut) {
  // A listening socket that never accepts: the connection completes in the kernel's backlog and
  // then no reply ever comes.
  int port = 0;
  const int fd = ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  absl::StatusOr<std::string> body = HttpGet("127.0.0.1", port, "/", 200);
  EXPECT_EQ(body.status().code(), absl::StatusCode::kDeadlineExceeded) << body.status();
  close(fd);
}

TEST(HttpGet, ServerThatStallsMidBodyTimesOutAtTheDeadline) {
  // Headers promise 100 bytes; 5 come, then nothing until the server gives up 2.5 s later.
  int port = 0;
  const int fd = ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  std::thread server([fd] {
    const int conn = accept(fd, nullptr, nullptr);
    if (conn < 0) return;
    char request[1024];
    (void)read(conn, request, sizeof(request));
    const std::string head = "HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\nhello";
    (void)write(conn, head.data(), head.size());
    pollfd p{conn, POLLIN, 0};
    poll(&p, 1, 2500);  // until the client goes away, at most 2.5 s
    close(conn);
  });
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> body = HttpGet("127.0.0.1", port, "/", 300);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(body.status().code(), absl::StatusCode::kDeadlineExceeded) << body.status();
  EXPECT_LT(seconds, 2.0);
  server.join();
  close(fd);
}

}  // namespace
}  // namespace bpnas
