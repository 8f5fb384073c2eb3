#include "ingress/provider_ingress/task_report_queue.h"

#include <algorithm>

#include "core/thread_name.h"

namespace unidesk::ingress {

TaskReportQueue::TaskReportQueue(TaskDispatch& tasks, int workers, std::size_t max_group)
    : tasks_(tasks),
      workers_(std::max(1, workers)),
      max_group_(std::max<std::size_t>(1, max_group)) {}

TaskReportQueue::~TaskReportQueue() { Stop(); }

void TaskReportQueue::Start() {
  for (int i = 0; i < workers_; ++i) {
    threads_.emplace_back([this] {
      core::NameThisThread("ud-reports");
      Run();
    });
  }
}

void TaskReportQueue::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  // Never started, or stopped with reports queued: each is answered, none is dropped silently.
  std::deque<Item> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(queue_);
  }
  for (auto& item : left) {
    item.done(StoreFailure{StoreError::kUnavailable, "the ingress is stopping"});
  }
}

void TaskReportQueue::Submit(TaskReportIn report, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back({std::move(report), std::move(done)});
      cv_.notify_one();
      return;
    }
  }
  done(StoreFailure{StoreError::kUnavailable, "the ingress is stopping"});
}

void TaskReportQueue::Run() {
  for (;;) {
    std::vector<Item> group;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) return;
      while (!queue_.empty() && group.size() < max_group_) {
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (!queue_.empty()) cv_.notify_one();  // another worker takes the next group now
    }
    std::vector<TaskReportIn> reports;
    reports.reserve(group.size());
    for (auto& item : group) reports.push_back(std::move(item.report));
    std::vector<ReportResult> results = tasks_.RecordTaskReports(reports);
    for (std::size_t i = 0; i < group.size(); ++i) group[i].done(std::move(results[i]));
  }
}

}  // namespace unidesk::ingress
