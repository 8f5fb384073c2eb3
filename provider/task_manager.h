#pragma once
// The attempts this agent runs: one worker thread per assignment running TaskRunner, whose
// progress, output and ending become outbox reports (kinds "task" and "log"). The server's
// `assign` is idempotent here: an attempt already running, or already reported as ended, is not
// started again. `cancel` stops an attempt. Stopping the agent ends every attempt as lost, so
// the server's retry policy moves it elsewhere, unless the agent is only restarting: then a
// running container is left to the next agent process, which follows it on from its attempt
// record (provider/attempt_record.h). A container that outlives a killed agent is followed
// the same way.

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "core/log.h"
#include "core/protocol.h"
#include "provider/attempt_record.h"
#include "provider/task_runner.h"

namespace unidesk::provider {

class TaskManager {
 public:
  /// Stores a report durably and sends it when the session allows. Thread-safe.
  using Emit = std::function<void(const std::string& kind, const std::string& body_json)>;

  TaskManager(RunnerSettings runner, Emit emit, core::LoggerPtr log);
  ~TaskManager();

  /// An attempt whose ending is already in the outbox (from an earlier process).
  void MarkEnded(const std::string& task, std::int64_t attempt);
  /// Follows again the containers an earlier agent process left running, from their records:
  /// call after MarkEnded for the outbox's endings and before ReapOrphans. They are running
  /// attempts from then on (the hello's `running_tasks`), and the server keeps or cancels them.
  void Adopt();
  void Assign(const core::protocol::Assign& a);
  void Cancel(const core::protocol::Cancel& c);
  /// [{task, attempt}] of the attempts running now: the hello's `running_tasks`.
  std::string RunningJson() const;
  /// Containers labelled with this node (`unidesk.node`) that no attempt of this process runs:
  /// left by an earlier agent process (at start), or by an attempt whose removal failed
  /// (periodically). They are removed, and an attempt nobody reported ended is reported lost.
  void ReapOrphans();
  /// Host hygiene's in-use keys of the running attempts: workspace, mirrors, env image.
  std::set<std::string> InUse() const;
  /// Stops every attempt (each ends lost with `reason`) and waits for the workers. With
  /// `keep_running`, an attempt whose container runs is left running and its record kept.
  void Shutdown(const std::string& reason, bool keep_running = false);

 private:
  struct Attempt;
  using Key = std::pair<std::string, std::int64_t>;
  void Work(std::shared_ptr<Attempt> a);
  void Report(const core::protocol::TaskReport& r);
  void FlushLogs(Attempt& a);
  void SaveRecord(Attempt& a);
  void Flusher();

  RunnerSettings runner_;
  Emit emit_;
  core::LoggerPtr log_;
  AttemptRecords records_;
  mutable std::mutex mu_;
  std::map<Key, std::shared_ptr<Attempt>> running_;
  std::set<Key> ended_;
  std::vector<std::thread> finished_threads_;  // joined by the flusher and at shutdown
  bool shutting_down_ = false;
  std::condition_variable cv_;
  std::thread flusher_;
};

}  // namespace unidesk::provider
