#include "core/subscription.h"

#include "core/event_reader.h"
#include "core/ids.h"
#include "core/pg.h"
#include "core/thread_name.h"

namespace unidesk::core {

using namespace std::chrono_literals;

/// Registers the channel with libpqxx so the LISTEN is renewed after a reconnect.
class Subscription::Wakeup : public pqxx::notification_receiver {
 public:
  Wakeup(pqxx::connection& c, const std::string& channel) : notification_receiver(c, channel) {}
  void operator()(const std::string&, int) override { woken = true; }
  bool woken = false;
};

Subscription::Subscription(SubscriptionOptions options, const EventCatalogue& catalogue,
                           SubscriptionHandler& handler, LoggerPtr log)
    : options_(std::move(options)),
      catalogue_(catalogue),
      handler_(handler),
      log_(std::move(log)) {}

Subscription::~Subscription() {
  Stop();
  Disconnect();
}

void Subscription::Start() {
  stopping_ = false;
  thread_ = std::thread([this] {
    NameThisThread("ud-" + options_.name);
    Run();
  });
}

void Subscription::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

SubscriptionStatus Subscription::status() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return status_;
}

void Subscription::Connect() {
  work_ = core::Connect(options_.conninfo);
  if (options_.listen) {
    listen_ = core::Connect(options_.conninfo);
    wakeup_ = std::make_unique<Wakeup>(*listen_, options_.channel);
  }
  owner_ = false;
  std::lock_guard<std::mutex> lock(status_mu_);
  status_.connected = true;
}

void Subscription::Disconnect() {
  wakeup_.reset();
  listen_.reset();
  work_.reset();  // closing the session releases the owner lock
  owner_ = false;
  std::lock_guard<std::mutex> lock(status_mu_);
  status_.connected = false;
  status_.owner = false;
}

bool Subscription::TryOwn() {
  if (owner_) return true;
  if (options_.exclusive) {
    pqxx::nontransaction tx(*work_);
    auto r =
        tx.exec_params("SELECT pg_try_advisory_lock($1)", LockKey("subscription", options_.name));
    if (!r[0][0].as<bool>()) return false;
  }
  pqxx::work tx(*work_);
  checkpoint_ = LoadCheckpoint(tx, options_.name);
  tx.commit();
  read_from_ = checkpoint_.cursor;
  owner_ = true;
  log_->info("subscription '{}' owns its checkpoint at ({}, {})", options_.name,
             checkpoint_.cursor.tx_id, checkpoint_.cursor.position);
  std::lock_guard<std::mutex> lock(status_mu_);
  status_.owner = true;
  status_.checkpoint = checkpoint_;
  return true;
}

StepResult Subscription::Step() {
  StepResult result;
  if (read_from_ < checkpoint_.cursor) read_from_ = checkpoint_.cursor;
  std::vector<RecordedEvent> events;
  LogCursor next = read_from_;
  {
    // No transaction around the read (event_reader.h says why that is safe): a wake-up that
    // finds nothing costs its statements alone. The checkpoint's compare-and-set below still
    // refuses a stale owner.
    pqxx::nontransaction read(*work_);
    if (options_.types.empty()) {
      SafeBatch batch =
          ReadAfterCursor(read, catalogue_, read_from_, options_.batch_size, true, options_.data);
      result.held_back = batch.held_back;
      events = std::move(batch.events);
      if (!events.empty()) next = events.back().cursor();
    } else {
      FollowBatch batch = ReadTypesAfterCursor(read, catalogue_, read_from_, options_.types,
                                               options_.batch_size, options_.data);
      result.held_back = batch.held_back;
      events = std::move(batch.events);
      next = batch.next;
    }
  }
  const auto now = std::chrono::steady_clock::now();
  if (events.empty()) {
    // Only skipped events: the durable checkpoint follows now and then, not on every wake-up.
    read_from_ = next;
    if (!(checkpoint_.cursor < next) || now - last_advance_ < std::chrono::seconds(1)) {
      return result;
    }
  }
  pqxx::work tx(*work_);
  if (!events.empty()) handler_.Handle(tx, events);
  auto n = static_cast<std::int64_t>(events.size());
  auto moved = AdvanceCheckpoint(tx, options_.name, checkpoint_.cursor, next, n);
  if (!moved.ok()) {
    tx.abort();
    pqxx::work reload(*work_);
    checkpoint_ = LoadCheckpoint(reload, options_.name);
    reload.commit();
    read_from_ = checkpoint_.cursor;
    log_->warn("{}; continuing from ({}, {})", moved.error().message, checkpoint_.cursor.tx_id,
               checkpoint_.cursor.position);
    result.stale = true;
    return result;
  }
  tx.commit();
  checkpoint_.cursor = next;
  checkpoint_.events += n;
  read_from_ = next;
  last_advance_ = now;
  result.delivered = static_cast<int>(n);
  std::lock_guard<std::mutex> lock(status_mu_);
  status_.checkpoint = checkpoint_;
  return result;
}

void Subscription::WaitForWakeup(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!stopping_) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return;
    // Short slices keep Stop() prompt; a notification ends the wait at once.
    auto slice = std::min<long long>(left.count(), 100'000);
    if (listen_) {
      wakeup_->woken = false;
      listen_->await_notification(0, static_cast<long>(slice));
      if (wakeup_->woken) return;
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(slice));
    }
  }
}

void Subscription::Run() {
  auto backoff = options_.reconnect_min;
  std::chrono::steady_clock::time_point last_step;
  bool lost = false;
  while (!stopping_) {
    try {
      if (!work_) {
        Connect();
        if (lost) {
          log_->warn("subscription '{}' reconnected to Postgres; catching up from its checkpoint",
                     options_.name);
          std::lock_guard<std::mutex> lock(status_mu_);
          ++status_.reconnects;
        }
        lost = false;
      }
      if (!TryOwn()) {
        WaitForWakeup(options_.poll_interval);  // standby: another process owns it
        continue;
      }
      if (options_.min_step_interval.count() > 0) {
        auto since = std::chrono::steady_clock::now() - last_step;
        if (since < options_.min_step_interval) {
          std::this_thread::sleep_for(options_.min_step_interval - since);
        }
        last_step = std::chrono::steady_clock::now();
      }
      StepResult step = Step();
      backoff = options_.reconnect_min;
      if (step.delivered == options_.batch_size || step.stale) continue;
      WaitForWakeup(step.held_back ? options_.held_back_retry : options_.poll_interval);
    } catch (const std::exception& e) {
      {
        std::lock_guard<std::mutex> lock(status_mu_);
        status_.last_error = e.what();
      }
      if (IsConnectionLost(e)) {
        if (!lost) {
          log_->warn("subscription '{}' lost its Postgres connection: {}", options_.name, e.what());
        }
        lost = true;
      } else {
        log_->error("subscription '{}' failed a batch (will retry from the checkpoint): {}",
                    options_.name, e.what());
      }
      Disconnect();
      WaitForWakeup(backoff);
      std::this_thread::sleep_for(std::chrono::milliseconds(0));
      backoff = std::min(options_.reconnect_max, backoff * 2);
    }
  }
}

std::int64_t Subscription::CatchUp(const std::function<void(std::int64_t)>& progress) {
  return *TryCatchUp(progress, std::chrono::milliseconds::max());
}

std::optional<std::int64_t> Subscription::TryCatchUp(
    const std::function<void(std::int64_t)>& progress, std::chrono::milliseconds own_within) {
  if (!work_) Connect();
  const bool bounded = own_within != std::chrono::milliseconds::max();
  const auto deadline = std::chrono::steady_clock::now() + (bounded ? own_within : 0ms);
  while (!TryOwn()) {
    if (bounded && std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min(options_.poll_interval, std::chrono::milliseconds(100)));
  }
  {
    // Start from what Postgres holds: a rebuild may have reset it since this instance last ran.
    pqxx::work tx(*work_);
    checkpoint_ = LoadCheckpoint(tx, options_.name);
    tx.commit();
    read_from_ = checkpoint_.cursor;
  }
  std::int64_t total = 0;
  for (;;) {
    StepResult step = Step();
    total += step.delivered;
    if (progress && step.delivered > 0) progress(total);
    if (step.delivered == options_.batch_size || step.stale) continue;
    if (!step.held_back) return total;
    std::this_thread::sleep_for(options_.held_back_retry);
  }
}

}  // namespace unidesk::core
