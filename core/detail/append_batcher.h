#pragma once
// Group commit: appends queued by many threads are merged into shared transactions by a small
// pool of writer connections, so concurrent appends share WAL flushes.

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/detail/append_sql.h"
#include "core/detail/notifier.h"
#include "core/event_store.h"

namespace unidesk::core::detail {

class AppendBatcher {
 public:
  AppendBatcher(const EventStoreOptions& options, const EventCatalogue& catalogue,
                Notifier* notifier, LoggerPtr log);
  ~AppendBatcher();

  /// Queues a validated request; `done` runs on a writer thread when the group that carries it
  /// has finished (or at once, when stopping), so it must be quick: hand the result on.
  void Submit(AppendRequest request, bool ids_supplied, AppendCallback done);
  /// Before the first Submit (EventStore::OnCommitted).
  void OnCommitted(CommittedAppend f) { on_committed_ = std::move(f); }
  /// Refuses new requests, lets the writers finish what is queued, joins them.
  void Stop();

 private:
  struct Pending {
    AppendRequest request;
    GroupItem item;
    AppendCallback done;
  };
  using Group = std::vector<std::unique_ptr<Pending>>;
  using Batch = std::vector<Pending*>;  // a view of (part of) a group

  void WriterLoop();
  /// Waits for requests it may take (PickGroup); empty only when stopping with nothing queued.
  Group TakeGroup();
  /// The group is committed (or failed): its streams may go into the next groups.
  void Release(const Group& group);
  std::vector<AppendResult> RunGroup(std::unique_ptr<pqxx::connection>& conn, const Batch& batch,
                                     bool allow_retry);
  std::vector<AppendResult> RunEachAlone(std::unique_ptr<pqxx::connection>& conn,
                                         const Batch& batch);
  std::vector<AppendResult> ResolveInDoubt(std::unique_ptr<pqxx::connection>& conn,
                                           const Batch& batch, std::vector<AppendResult> results,
                                           const std::exception& cause);

  const EventStoreOptions& options_;
  const EventCatalogue& catalogue_;
  Notifier* notifier_;
  LoggerPtr log_;
  CommittedAppend on_committed_;  // set before any writer has a group to run
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Pending>> queue_;
  std::multiset<std::string> in_flight_;  // the streams of the groups being written
  bool stopping_ = false;
  std::vector<std::thread> writers_;
};

}  // namespace unidesk::core::detail
