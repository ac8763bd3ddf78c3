#include "server/coordinator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace bpnas {

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Start(JobStore* store,
                                                                const CoordinatorOptions& options) {
  std::unique_ptr<Coordinator> c(new Coordinator());
  c->store_ = store;
  c->manager_ = std::make_unique<JobManager>(store, options.manager);
  c->progress_ = std::make_unique<ProgressWriter>(store, options.progress_writers);
  c->search_ =
      std::make_unique<SearchServiceImpl>(store, c->manager_.get(), &c->metrics_, options.watch_poll);
  c->workers_ =
      std::make_unique<WorkerServiceImpl>(store, c->manager_.get(), c->progress_.get(), &c->metrics_);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &c->port_);
  builder.RegisterService(c->search_.get());
  builder.RegisterService(c->workers_.get());
  builder.SetMaxReceiveMessageSize(16 << 20);
  builder.SetMaxSendMessageSize(16 << 20);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                              std::max(1, options.grpc_max_pollers));
  c->server_ = builder.BuildAndStart();
  if (c->server_ == nullptr || c->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, " (in use, or not a host:port)"));
  }
  c->manager_->Start();
  return c;
}

Coordinator::~Coordinator() {
  if (manager_ != nullptr) manager_->Stop();
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_.reset();  // before the services it calls
}

void Coordinator::ServeHttp(HttpServer* http) {
  JobStore* store = store_;
  ServerMetrics* metrics = &metrics_;
  http->Handle("/healthz", [] { return HttpResponse{200, "text/plain; charset=utf-8", "ok\n"}; });
  http->Handle("/readyz", [store] {
    absl::Status s = store->CheckReady();
    if (s.ok()) return HttpResponse{200, "text/plain; charset=utf-8", "ready\n"};
    return HttpResponse{503, "text/plain; charset=utf-8", StatusToString(s) + "\n"};
  });
  http->Handle("/metrics", [metrics, store] {
    return HttpResponse{200, kPrometheusTextContentType, metrics->Scrape(store)};
  });
}

}  // namespace bpnas
