#pragma once
// Nodes' task reports, applied in groups: what arrives while a group is being written goes into
// the next one, so N nodes reporting together cost one transaction, not N (the same group
// commit the event store does for plain appends). Each session has one report in flight, so a
// group holds at most one report per session; at low load a group is one report and waits for
// nothing.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "ingress/provider_ingress/task_dispatch.h"

namespace unidesk::ingress {

class TaskReportQueue {
 public:
  /// Called on a queue thread with the report's outcome; must not block.
  using Done = std::function<void(ReportResult)>;

  TaskReportQueue(TaskDispatch& tasks, int workers, std::size_t max_group);
  ~TaskReportQueue();
  void Start();
  /// Refuses new reports (they are answered "unavailable": the node sends them again), applies
  /// what is queued, joins the workers.
  void Stop();
  void Submit(TaskReportIn report, Done done);

 private:
  struct Item {
    TaskReportIn report;
    Done done;
  };
  void Run();

  TaskDispatch& tasks_;
  int workers_;
  std::size_t max_group_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace unidesk::ingress
