#include "ingress/provider_ingress/heartbeat_batcher.h"

#include "core/thread_name.h"
#include "ingress/provider_ingress/provider_session.h"

namespace unidesk::ingress {

HeartbeatBatcher::HeartbeatBatcher(IngressStore& store, SessionRegistry& registry,
                                   std::chrono::milliseconds interval, core::LoggerPtr log)
    : store_(store), registry_(registry), interval_(interval), log_(std::move(log)) {}

HeartbeatBatcher::~HeartbeatBatcher() { Stop(); }

void HeartbeatBatcher::Start() {
  stopping_ = false;
  thread_ = std::thread([this] {
    core::NameThisThread("ud-heartbeats");
    Run();
  });
}

void HeartbeatBatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HeartbeatBatcher::Add(HeartbeatEntry beat) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string node = beat.node;
  pending_[node] = std::move(beat);
}

void HeartbeatBatcher::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, interval_, [this] { return stopping_; });
    lock.unlock();
    Flush();
    lock.lock();
  }
}

void HeartbeatBatcher::Flush() {
  std::map<std::string, HeartbeatEntry> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return;
  std::vector<HeartbeatEntry> beats;  // sorted by node: rows are locked in one order
  beats.reserve(batch.size());
  for (auto& [node, beat] : batch) beats.push_back(std::move(beat));
  auto flushed = store_.FlushHeartbeats(beats);
  if (!flushed.ok()) {
    if (!failing_) log_->error("heartbeats not recorded: {}", flushed.error().message);
    failing_ = true;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& b : beats) pending_.emplace(b.node, std::move(b));  // newer ones win
    return;
  }
  if (failing_) log_->info("heartbeats recorded again");
  failing_ = false;
  written_ += static_cast<std::int64_t>(beats.size());
  for (const auto& s : flushed.value()) {
    auto session = registry_.Find(s.node);
    if (!session || session->session_id() != s.session) continue;
    session->Close(
        s.revoked ? core::protocol::CloseCode::kRevoked : core::protocol::CloseCode::kSuperseded,
        s.revoked ? "the node's token was revoked" : "a newer session of this node took over");
  }
}

}  // namespace unidesk::ingress
