#include "core/event_tail.h"

#include <algorithm>
#include <limits>
#include <pqxx/pqxx>

#include "core/event_reader.h"
#include "core/pg.h"
#include "core/thread_name.h"

namespace unidesk::core {

namespace {

class Wakeup : public pqxx::notification_receiver {
 public:
  Wakeup(pqxx::connection& c, const std::string& channel) : notification_receiver(c, channel) {}
  void operator()(const std::string&, int) override {}
};

}  // namespace

EventTail::EventTail(std::string conninfo, const EventCatalogue& catalogue,
                     std::vector<std::string> types, Callback callback, LoggerPtr log,
                     std::string channel)
    : conninfo_(std::move(conninfo)),
      catalogue_(catalogue),
      types_(std::move(types)),
      callback_(std::move(callback)),
      log_(std::move(log)),
      channel_(std::move(channel)) {}

EventTail::~EventTail() { Stop(); }

void EventTail::Start() {
  stopping_ = false;
  thread_ = std::thread([this] {
    NameThisThread("ud-tail");
    Run();
  });
}

void EventTail::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void EventTail::Run() {
  std::optional<LogCursor> cursor;
  while (!stopping_) {
    try {
      auto conn = Connect(conninfo_);
      Wakeup wakeup(*conn, channel_);
      if (!cursor) {
        // Every transaction that can still commit has an xid >= xmin, so starting just below it
        // misses nothing from now on (and re-reads a few recent events, which callers tolerate).
        pqxx::read_transaction tx(*conn);
        auto xmin = tx.exec("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")[0][0]
                        .as<std::uint64_t>();
        cursor = LogCursor{xmin - 1, std::numeric_limits<std::int64_t>::max()};
      }
      std::chrono::steady_clock::time_point last_read;
      while (!stopping_) {
        auto since = std::chrono::steady_clock::now() - last_read;
        if (since < min_read_interval_) std::this_thread::sleep_for(min_read_interval_ - since);
        last_read = std::chrono::steady_clock::now();
        // Only the chosen types leave Postgres; no transaction around the read (event_reader.h).
        FollowBatch batch;
        {
          pqxx::nontransaction tx(*conn);
          batch = ReadTypesAfterCursor(tx, catalogue_, *cursor, types_, 500);
        }
        for (const auto& e : batch.events) callback_(e);
        *cursor = batch.next;
        // Held back: the events' NOTIFY came before an older transaction let them through.
        if (batch.events.size() < 500) conn->await_notification(0, batch.held_back ? 3000 : 200000);
      }
    } catch (const std::exception& e) {
      log_->warn("event tail: {}; reconnecting", e.what());
      for (int i = 0; i < 10 && !stopping_; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
}

}  // namespace unidesk::core
