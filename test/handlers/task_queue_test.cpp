// The scheduler's in-memory queue: what the task events of the log do to it, that its own
// decisions applied early are not applied twice, and the order a pass sees.

#include "handlers/task_queue.h"

#include <doctest/doctest.h>

using namespace unidesk;
using namespace unidesk::handlers;

namespace {

core::RecordedEvent Event(const std::string& task, std::int64_t version, const std::string& type,
                          const std::string& data, std::int64_t position = 0) {
  core::RecordedEvent e;
  e.stream_id = "task-" + task;
  e.stream_version = version;
  e.type = type;
  e.data_json = data;
  e.position.value = position;
  e.recorded_at = "2026-11-22T08:00:00.250000Z";
  return e;
}

core::RecordedEvent Submitted(const std::string& task, std::int64_t position,
                              const std::string& spec) {
  return Event(task, 0, "task.submitted", R"({"task":")" + task + R"(","spec":)" + spec + "}",
               position);
}

const char* kSpec =
    R"({"priority":2,"resources":{"cpu":0.25,"memory_mb":64,"gpus":1},"labels":{"zone":"lab"}})";

std::vector<std::string> Ids(const TaskQueue& q) {
  std::vector<std::string> out;
  for (const QueuedTask* t : q.Head(100)) out.push_back(t->task.id);
  return out;
}

}  // namespace

TEST_CASE("a submission is queued with the resources, labels and priority of its spec") {
  TaskQueue q;
  q.Apply(Submitted("a", 7, kSpec));
  const QueuedTask* t = q.Find("a");
  REQUIRE(t != nullptr);
  CHECK(t->version == 0);
  CHECK(t->task.priority == 2);
  CHECK(t->task.cpu_millis == 250);
  CHECK(t->task.memory_bytes == 64LL << 20);
  CHECK(t->task.gpus == 1);
  CHECK(t->task.labels == std::map<std::string, std::string>{{"zone", "lab"}});
  CHECK(t->task.submitted_position == 7);
  CHECK(t->spec_json == kSpec);  // the assignment carries it
  CHECK(t->submitted_ms == EpochMillis("2026-11-22T08:00:00Z") + 250);
  CHECK(q.TakeChanged());
  CHECK_FALSE(q.TakeChanged());
}

TEST_CASE("higher priority first, then the order of submission") {
  TaskQueue q;
  q.Apply(Submitted("late-high", 30, R"({"priority":5})"));
  q.Apply(Submitted("first", 10, R"({})"));
  q.Apply(Submitted("second", 20, R"({})"));
  CHECK(Ids(q) == std::vector<std::string>{"late-high", "first", "second"});
  CHECK(q.Head(2).size() == 2);
}

TEST_CASE("an assignment takes the task off the queue; its own event seen again changes nothing") {
  TaskQueue q;
  q.Apply(Submitted("a", 1, kSpec));
  auto assigned = Event("a", 1, "task.assigned", R"({"task":"a","attempt":1,"node":"n"})");
  q.ApplyAhead(assigned);  // the pass applies its decision at once
  CHECK(q.Find("a") == nullptr);
  q.Apply(assigned);  // and the log delivers it later
  CHECK(q.Find("a") == nullptr);
  CHECK(q.size() == 0);
  CHECK(q.tombstones() == 0);
}

TEST_CASE("a submission handed over ahead of the log and placed is not queued again by the log") {
  TaskQueue q;
  auto submitted = Submitted("a", 1, kSpec);
  auto assigned = Event("a", 1, "task.assigned", R"({"task":"a","attempt":1,"node":"n"})");
  q.ApplyAhead(submitted);  // handed over in-process by the API's commit
  REQUIRE(q.Find("a") != nullptr);
  q.ApplyAhead(assigned);  // the pass placed it
  CHECK(q.tombstones() == 1);
  q.Apply(submitted);  // the log's copy of the submission arrives after the placement
  CHECK(q.Find("a") == nullptr);
  q.Apply(assigned);  // the log caught up: the tombstone goes
  CHECK(q.tombstones() == 0);
  CHECK(q.Find("a") == nullptr);
  // A later requeue is the log's news, and queues the task again.
  q.Apply(Event("a", 3, "task.requeued", R"({"task":"a","attempt":1})"));
  REQUIRE(q.Find("a") != nullptr);
  CHECK(q.Find("a")->attempt == 1);
}

TEST_CASE("events at or below the version held are ignored") {
  TaskQueue q;
  q.Apply(Submitted("a", 1, kSpec));
  q.Apply(Event("a", 1, "task.waiting", R"({"task":"a","reason":"no node"})"));
  CHECK(q.Find("a")->version == 1);
  CHECK(q.Find("a")->task.waiting_reason == "no node");
  q.Apply(Event("a", 1, "task.waiting", R"({"task":"a","reason":"stale"})"));
  CHECK(q.Find("a")->task.waiting_reason == "no node");
}

TEST_CASE("a cancel before placement marks the task cancelling; one of a placed attempt does not") {
  TaskQueue q;
  q.Apply(Submitted("a", 1, kSpec));
  q.TakeChanged();
  q.Apply(Event("a", 1, "task.cancel_requested", R"({"task":"a","reason":"typo","attempt":0})"));
  CHECK(q.Find("a")->cancelling);
  CHECK(q.Find("a")->cancel_reason == "typo");
  CHECK(q.TakeChanged());
  q.Apply(Event("a", 2, "task.cancelled", R"({"task":"a","attempt":0})"));
  CHECK(q.Find("a") == nullptr);
}

TEST_CASE("a task requeued after the view let it go is held unloaded until its spec is read") {
  TaskQueue q;
  q.Apply(Submitted("a", 1, kSpec));
  q.Apply(Event("a", 1, "task.assigned", R"({"task":"a","attempt":1,"node":"n"})"));
  q.TakeChanged();
  q.Apply(Event("a", 2, "task.accepted", R"({"task":"a","attempt":1})"));  // not held: ignored
  CHECK(q.size() == 0);
  q.Apply(Event("a", 3, "task.lost", R"({"task":"a","attempt":1})"));
  CHECK(q.TakeChanged());  // capacity came back
  q.Apply(Event("a", 4, "task.requeued", R"({"task":"a","attempt":1,"next_attempt":2})"));
  CHECK(q.Unloaded() == std::vector<std::string>{"a"});
  CHECK(q.Head(10).empty());  // not scheduled before its resources are known
  q.Load("a", kSpec, 1, 1000);
  CHECK(q.Unloaded().empty());
  REQUIRE(q.Head(10).size() == 1);
  const QueuedTask* t = q.Find("a");
  CHECK(t->version == 4);
  CHECK(t->attempt == 1);
  CHECK(t->task.gpus == 1);
  CHECK(t->spec_json == kSpec);
  CHECK(t->submitted_ms == 1000);
}

TEST_CASE("a requeue of a task the view holds clears its cancel and waiting reason") {
  TaskQueue q;
  QueuedTask seeded;
  seeded.task = SchedTaskFromSpec("a", kSpec);
  seeded.version = 5;
  seeded.task.waiting_reason = "no node";
  q.Add(seeded);
  q.Apply(Event("a", 6, "task.requeued", R"({"task":"a","attempt":2})"));
  CHECK(q.Find("a")->attempt == 2);
  CHECK(q.Find("a")->task.waiting_reason.empty());
  CHECK(q.Find("a")->loaded);
}

TEST_CASE("events of other streams are not the queue's") {
  TaskQueue q;
  auto e = Submitted("a", 1, kSpec);
  e.stream_id = "tasklog-a";
  q.Apply(e);
  CHECK(q.size() == 0);
}

TEST_CASE("recorded_at parses to epoch milliseconds") {
  CHECK(EpochMillis("1970-01-01T00:00:01Z") == 1000);
  CHECK(EpochMillis("1970-01-01T00:00:01.5Z") == 1500);
  CHECK(EpochMillis("2026-11-22T08:00:00.123456Z") % 1000 == 123);
  CHECK(EpochMillis("yesterday") == 0);
}
