#include "core/detail/notifier.h"

#include "core/pg.h"
#include "core/thread_name.h"

namespace unidesk::core::detail {

Notifier::Notifier(std::string conninfo, std::string channel,
                   std::chrono::microseconds min_interval, LoggerPtr log)
    : conninfo_(std::move(conninfo)),
      channel_(std::move(channel)),
      min_interval_(min_interval),
      log_(std::move(log)),
      thread_([this] {
        NameThisThread("ud-notify");
        Run();
      }) {}

Notifier::~Notifier() { Stop(); }

void Notifier::Signal() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = true;
  }
  cv_.notify_one();
}

void Notifier::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Notifier::Run() {
  std::unique_ptr<pqxx::connection> conn;
  bool reported_down = false;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return pending_ || stopping_; });
      if (!pending_ && stopping_) return;
      pending_ = false;
    }
    try {
      if (!conn) conn = Connect(conninfo_);
      pqxx::nontransaction tx(*conn);
      tx.exec_params("SELECT pg_notify($1, '')", channel_);
      if (reported_down) log_->info("wake-up NOTIFY works again");
      reported_down = false;
    } catch (const std::exception& e) {
      // Subscribers poll behind the wake-up, so a lost NOTIFY delays delivery, never loses it.
      if (!reported_down)
        log_->warn("wake-up NOTIFY failed (subscribers fall back to polling): {}", e.what());
      reported_down = true;
      conn.reset();
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) continue;
    cv_.wait_for(lock, min_interval_, [this] { return stopping_; });
  }
}

}  // namespace unidesk::core::detail
