#include "core/detail/append_batcher.h"

#include <algorithm>

#include "core/detail/append_plan.h"
#include "core/pg.h"
#include "core/thread_name.h"

namespace unidesk::core::detail {
namespace {

TypedError<AppendError> Unavailable(const std::exception& e) {
  return {AppendError::kUnavailable,
          std::string("Postgres unavailable, nothing written: ") + e.what()};
}

/// Maps a libpqxx error of a single-request transaction to the typed result.
TypedError<AppendError> MapSingleError(const std::exception& e) {
  std::string state = SqlState(e);
  std::string what = e.what();
  if (state == "23505" && what.find("event_id") != std::string::npos) {
    return {AppendError::kDuplicateEventId, "an event id of this request exists already"};
  }
  if (state == "23505") return {AppendError::kVersionConflict, what};
  // jsonb refuses what RapidJSON accepts in a few corners (\u0000, lone surrogates).
  if (state == "22P02" || state == "22P05" || state == "22021") {
    return {AppendError::kInvalidJson, "Postgres refused the JSON: " + what};
  }
  return {AppendError::kInvalidRequest, "append refused by Postgres: " + what};
}

}  // namespace

AppendBatcher::AppendBatcher(const EventStoreOptions& options, const EventCatalogue& catalogue,
                             Notifier* notifier, LoggerPtr log)
    : options_(options), catalogue_(catalogue), notifier_(notifier), log_(std::move(log)) {
  int n = std::max(1, options_.writer_connections);
  for (int i = 0; i < n; ++i) {
    writers_.emplace_back([this] {
      NameThisThread("ud-append");
      WriterLoop();
    });
  }
}

AppendBatcher::~AppendBatcher() { Stop(); }

void AppendBatcher::Submit(AppendRequest request, bool ids_supplied, AppendCallback done) {
  auto p = std::make_unique<Pending>();
  p->request = std::move(request);
  p->item = {&p->request, RequestHash(p->request), ids_supplied};
  p->done = std::move(done);
  bool takeable = false;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) {
      lock.unlock();
      p->done(TypedError<AppendError>{AppendError::kStopped, "event store stopping"});
      return;
    }
    // Behind a group in flight on its stream it waits for that group's Release, which wakes
    // the writers; waking one now would only rescan the queue.
    takeable = in_flight_.count(p->request.stream_id) == 0;
    queue_.push_back(std::move(p));
  }
  if (takeable) cv_.notify_one();
}

void AppendBatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : writers_) {
    if (t.joinable()) t.join();
  }
}

AppendBatcher::Group AppendBatcher::TakeGroup() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    std::vector<const AppendRequest*> queued;
    for (const auto& p : queue_) queued.push_back(&p->request);
    std::vector<std::size_t> picked = PickGroup(
        queued, in_flight_, static_cast<std::size_t>(std::max(1, options_.max_group_requests)));
    Group group;
    for (std::size_t i : picked) {
      in_flight_.insert(queue_[i]->request.stream_id);
      group.push_back(std::move(queue_[i]));
    }
    if (!group.empty()) {
      std::deque<std::unique_ptr<Pending>> rest;
      for (auto& p : queue_) {
        if (p) rest.push_back(std::move(p));
      }
      queue_.swap(rest);
      if (!queue_.empty()) cv_.notify_one();  // another writer can start the next group now
      return group;
    }
    if (queue_.empty() && stopping_) return group;
    // Nothing queued, or only requests behind a group in flight: wait for either to change.
    cv_.wait(lock);
  }
}

void AppendBatcher::Release(const Group& group) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& p : group) in_flight_.erase(in_flight_.find(p->request.stream_id));
  }
  cv_.notify_all();
}

void AppendBatcher::WriterLoop() {
  std::unique_ptr<pqxx::connection> conn;
  for (;;) {
    Group group = TakeGroup();
    if (group.empty()) return;
    Batch batch;
    for (auto& p : group) batch.push_back(p.get());
    std::vector<AppendResult> results = RunGroup(conn, batch, /*allow_retry=*/true);
    Release(group);
    bool wrote = false;
    for (const auto& r : results) wrote = wrote || (r.ok() && !r.value().repeated);
    if (wrote && notifier_ != nullptr) notifier_->Signal();
    if (wrote && on_committed_) {
      for (std::size_t i = 0; i < group.size(); ++i) {
        if (!results[i].ok() || results[i].value().repeated) continue;
        try {
          on_committed_(group[i]->request, results[i].value());
        } catch (const std::exception& e) {
          // Only a shortcut: the log delivers the append anyway.
          log_->warn("in-process observer of a committed append failed: {}", e.what());
        }
      }
    }
    for (std::size_t i = 0; i < group.size(); ++i) group[i]->done(std::move(results[i]));
  }
}

std::vector<AppendResult> AppendBatcher::RunGroup(std::unique_ptr<pqxx::connection>& conn,
                                                  const Batch& batch, bool allow_retry) {
  std::vector<GroupItem> items;
  for (const Pending* p : batch) items.push_back(p->item);
  try {
    if (!conn) conn = Connect(options_.conninfo);
  } catch (const std::exception& e) {
    return std::vector<AppendResult>(batch.size(), Unavailable(e));
  }
  std::vector<AppendResult> results;
  try {
    pqxx::work tx(*conn);
    results = ExecuteGroup(tx, catalogue_, items, /*check_first_write=*/false);
    try {
      tx.commit();
    } catch (const std::exception& e) {
      conn.reset();
      return ResolveInDoubt(conn, batch, std::move(results), e);
    }
    return results;
  } catch (const std::exception& e) {
    if (IsConnectionLost(e)) {
      // Lost before COMMIT: nothing was written. One retry on a fresh connection.
      conn.reset();
      if (allow_retry) return RunGroup(conn, batch, false);
      return std::vector<AppendResult>(batch.size(), Unavailable(e));
    }
    if (batch.size() > 1) return RunEachAlone(conn, batch);
    return {MapSingleError(e)};
  }
}

std::vector<AppendResult> AppendBatcher::RunEachAlone(std::unique_ptr<pqxx::connection>& conn,
                                                      const Batch& batch) {
  // One bad request must not fail the others that shared its transaction.
  std::vector<AppendResult> out;
  for (Pending* p : batch) out.push_back(RunGroup(conn, {p}, true)[0]);
  return out;
}

std::vector<AppendResult> AppendBatcher::ResolveInDoubt(std::unique_ptr<pqxx::connection>& conn,
                                                        const Batch& batch,
                                                        std::vector<AppendResult> results,
                                                        const std::exception& cause) {
  std::string probe_id;
  for (std::size_t i = 0; i < batch.size() && probe_id.empty(); ++i) {
    if (results[i].ok() && !results[i].value().repeated) {
      probe_id = batch[i]->request.events.front().event_id;
    }
  }
  if (probe_id.empty()) return results;  // nothing was to be written
  log_->warn("commit outcome unknown ({}); checking whether it landed", cause.what());
  for (int attempt = 0; attempt < 20; ++attempt) {
    try {
      conn = Connect(options_.conninfo);
      bool landed;
      {  // closed before the batch may run again on the same connection
        pqxx::nontransaction tx(*conn);
        landed =
            !tx.exec_params("SELECT 1 FROM events WHERE event_id = $1::uuid", probe_id).empty();
      }
      if (landed) return results;
      log_->info("in-doubt batch did not commit; running it again");
      // Should the lost COMMIT land after all, the ids make the re-run a repeat, not a duplicate.
      for (Pending* p : batch) p->item.ids_supplied = true;
      return RunGroup(conn, batch, false);
    } catch (const std::exception&) {
      conn.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(100 * (attempt + 1)));
    }
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (results[i].ok() && !results[i].value().repeated) {
      results[i] = TypedError<AppendError>{
          AppendError::kCommitUnknown,
          "the connection died during COMMIT and Postgres stayed unreachable; appending again "
          "with the same event ids is safe"};
    }
  }
  return results;
}

}  // namespace unidesk::core::detail
