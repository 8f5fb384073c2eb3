#include "ingress/provider_ingress/provider_ingress.h"

#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/ids.h"
#include "core/json.h"
#include "core/thread_name.h"
#include "ingress/provider_ingress/http_front.h"
#include "ingress/provider_ingress/provider_session.h"

namespace unidesk::ingress {

namespace {

/// How long an assignment of this copy's own scheduler waits on the bus for its hand-over.
constexpr std::chrono::seconds kHandOverGrace{1};

std::string MakeIngressId() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + ":" + std::to_string(getpid()) + ":" + core::NewUuid().substr(0, 8);
}

}  // namespace

ProviderIngress::ProviderIngress(IngressSettings settings, const std::string& conninfo,
                                 const core::EventCatalogue& catalogue, core::EventStore& events,
                                 core::LoggerPtr log)
    : id_(MakeIngressId()),
      log_(log),
      db_(static_cast<std::size_t>(settings.db_threads)),
      store_(conninfo, id_, events),
      tasks_(conninfo, events, store_),
      reports_(tasks_, 2, 256),
      heartbeats_(store_, registry_, settings.heartbeat_flush, log),
      ctx_{settings,
           id_,
           store_,
           tasks_,
           reports_,
           registry_,
           heartbeats_,
           db_,
           log,
           {false},
           {},
           TokenBucket(settings.accepts_per_s, settings.accept_burst),
           {},
           TokenBucket(20, 200),
           0},
      tail_(
          conninfo, catalogue,
          {"node.token_revoked", "node.connected", "task.assigned", "task.cancel_requested"},
          [this](const core::RecordedEvent& e) { OnBusEvent(e); }, log) {
  // What the tail brings (cancels, other copies' assignments, session takeovers) can wait a
  // few milliseconds; this copy's own placements come in-process.
  tail_.SetMinReadInterval(std::chrono::milliseconds(5));
}

ProviderIngress::~ProviderIngress() { Stop(); }

void ProviderIngress::Start() {
  core::NamePoolThreads(db_, ctx_.settings.db_threads, "ud-ingress-db");
  listener_ = std::make_shared<Listener>(ioc_, ctx_);
  listener_->Open(ctx_.settings.address, ctx_.settings.port);
  listener_->Run();
  work_.emplace(ioc_.get_executor());
  for (int i = 0; i < ctx_.settings.io_threads; ++i) {
    io_threads_.emplace_back([this] {
      core::NameThisThread("ud-ingress");
      ioc_.run();
    });
  }
  heartbeats_.Start();
  reports_.Start();
  tail_.Start();
  log_->info("provider ingress {} listening on {}:{}{}", id_, ctx_.settings.address, port(),
             core::protocol::kPath);
}

unsigned short ProviderIngress::port() const { return listener_ ? listener_->port() : 0; }

void ProviderIngress::OnBusEvent(const core::RecordedEvent& e) {
  // Commands for a node reach the copy holding its session through the bus.
  core::JsonReader data(e.data_json);
  auto node = data.Str("node");
  if (!node) return;
  auto session = registry_.Find(*node);
  if (!session) return;
  if (e.type == "task.assigned" || e.type == "task.cancel_requested") {
    // Also for events older than the session: the agent ignores what it already has.
    auto task = data.Str("task").value_or("");
    auto attempt = data.Int("attempt").value_or(0);
    if (attempt <= 0) return;  // a cancel before placement: the scheduler ends it
    if (e.type == "task.cancel_requested") {
      session->Send(core::protocol::Write(
          core::protocol::Cancel{task, attempt, data.Str("reason").value_or("")}));
      return;
    }
    if (auto spec = data.Raw("spec")) {
      // Recorded when assignments carried their spec.
      if (!session->ClaimAssignment(task, attempt)) return;
      session->Send(AssignText(task, attempt, *spec, data.Raw("gpu_indices").value_or("[]")));
      return;
    }
    if (!handover_source_.empty() && e.metadata.source == handover_source_) {
      // This copy's scheduler hands it over in-process right after its commit.
      auto timer = std::make_shared<boost::asio::steady_timer>(ioc_, kHandOverGrace);
      timer->async_wait([this, timer, session, task, attempt, node = *node](auto ec) {
        if (!ec) SendFromBus(session, task, attempt, node);
      });
      return;
    }
    SendFromBus(session, task, attempt, *node);
    return;
  }
  if (e.position.value < session->connected_position()) return;
  if (e.type == "node.token_revoked") {
    session->Close(core::protocol::CloseCode::kRevoked, "the node's token was revoked");
  } else if (e.type == "node.connected" && data.Str("session") != session->session_id()) {
    session->Close(core::protocol::CloseCode::kSuperseded,
                   "a newer session of this node took over");
  }
}

void ProviderIngress::SendFromBus(const std::shared_ptr<ProviderSession>& session,
                                  const std::string& task, std::int64_t attempt,
                                  const std::string& node) {
  if (!session->ClaimAssignment(task, attempt)) return;  // handed over in-process already
  // Assigned by another copy's scheduler (or before this copy started): the spec is the task's,
  // read with the placement.
  boost::asio::post(db_, [this, session, task, attempt, node] {
    auto frame = tasks_.AssignFrame(task, attempt, node);
    if (!frame.ok()) {
      // Not lost: the agent gets it with the catch-up after its next hello.
      log_->warn("node {}: assignment of {} not sent: {}", node, task, frame.error().message);
    } else if (frame.value()) {
      session->Send(*frame.value());
    }
  });
}

void ProviderIngress::DeliverAssignment(const std::string& task, std::int64_t attempt,
                                        const std::string& node, const std::string& spec_json,
                                        const std::string& gpu_indices_json) {
  auto session = registry_.Find(node);
  if (!session || !session->ClaimAssignment(task, attempt)) return;
  session->Send(AssignText(task, attempt, spec_json, gpu_indices_json));
}

void ProviderIngress::Stop() {
  if (!listener_) return;
  ctx_.stopping = true;
  listener_->Close();
  tail_.Stop();
  for (auto& s : registry_.All())
    s->Close(core::protocol::CloseCode::kGoingAway, "server stopping");
  // Give the close frames a moment to leave; the agents reconnect with jittered backoff.
  for (int i = 0; i < 50 && registry_.size() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  heartbeats_.Stop();
  reports_.Stop();
  work_.reset();
  ioc_.stop();
  for (auto& t : io_threads_) t.join();
  io_threads_.clear();
  db_.join();
  listener_.reset();
}

}  // namespace unidesk::ingress
