// Submissions committed by the scheduler's own process reach its queue in-process
// (EventStore::OnCommitted -> Scheduler::Offer), without the log's NOTIFY and while the log
// still holds them back; the log's later copy of each submission neither queues a placed task
// again nor costs a conflicting placement.
//
// The node is a row of the `nodes` projection written by the test (said so: no provider is
// needed to see what the scheduler decides), and the store sends no NOTIFY, so only the
// hand-over can wake the scheduler before its (one minute) interval.

#include <doctest/doctest.h>

#include <mutex>
#include <set>

#include "core/event_catalogue.h"
#include "core/event_store.h"
#include "core/ids.h"
#include "core/log.h"
#include "handlers/scheduler.h"
#include "ingress/api/task_service.h"
#include "test/support/harness.h"

using namespace unidesk;

namespace {

std::string Body(int i) {
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  return R"({"code_repo_url":"https://example.org/code.git","code_commit_id":")" + commit +
         R"(","env_repo_url":"https://example.org/env.git","env_commit_id":")" + commit +
         R"(","command":["true"],"name":"t)" + std::to_string(i) +
         R"(","resources":{"cpu":0.25,"memory_mb":64,"gpus":0}})";
}

}  // namespace

TEST_CASE("a submission through this process's store is placed without waiting for the log") {
  test::TestDatabase db;
  db.Scalar(
      "INSERT INTO nodes (name, status, resources, health) VALUES ('n', 'online', "
      "'{\"cpu_cores\":64,\"memory_bytes\":68719476736,\"disk_bytes\":1,\"disk_free_bytes\":1,"
      "\"gpus\":[]}', '{\"docker_ok\":true}') RETURNING 1");
  core::EventCatalogue catalogue = core::BuiltinCatalogue();
  core::EventStoreOptions options;
  options.conninfo = db.conninfo();
  options.notify = false;  // only the hand-over can wake the scheduler early
  core::EventStore store(options, catalogue, core::NullLogger());
  handlers::SchedulerSettings settings;
  settings.interval = std::chrono::minutes(1);
  settings.sweep_interval = std::chrono::minutes(1);
  handlers::Scheduler scheduler(db.conninfo(), settings, store, core::NullLogger());
  std::mutex mu;
  std::multiset<std::string> placed;
  scheduler.OnPlacementsCommitted([&](const std::vector<handlers::CommittedPlacement>& ps) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& p : ps) placed.insert(p.task);
  });
  store.OnCommitted(
      [&](const core::AppendRequest& r, const core::AppendOutcome& o) { scheduler.Offer(r, o); });
  scheduler.Start();
  // Its first turn (seed, an empty pass) is over and it waits for the minute.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  // The log delivers an event once no older transaction is open (the xid horizon). Three
  // transactions of the test's arrange the worst order for the scheduler: its submissions are
  // held back, then let through while the assignments it made meanwhile are still held back.
  auto xid = [&](pqxx::work& w) { w.exec("SELECT pg_current_xact_id()"); };
  auto c1 = db.Connect(), c2 = db.Connect(), c3 = db.Connect();
  pqxx::work before_submissions(*c1);
  xid(before_submissions);
  pqxx::work pass_lock(*c2);  // passes wait on it
  pass_lock.exec_params("SELECT pg_advisory_xact_lock($1)", core::LockKey("scheduler", "pass"));

  constexpr int kTasks = 40;
  std::set<std::string> ids;
  for (int i = 0; i < kTasks; ++i) {
    auto r = ingress::api::SubmitTask(store, {}, {Body(i), "", "test:handover", "test"});
    REQUIRE(r.ok());
    ids.insert(r.value().task_id);
  }
  pqxx::work before_assignments(*c3);
  xid(before_assignments);
  before_submissions.commit();  // the submissions are deliverable now
  pass_lock.commit();           // and the passes run, their assignments held back by c3
  auto placed_count = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return placed.size();
  };
  // Placed from the hand-over alone, with no NOTIFY: the next turn would be a minute away.
  REQUIRE(test::WaitUntil([&] { return placed_count() == kTasks; }, std::chrono::seconds(10)));
  // One more submission wakes another turn, which reads the log: the submissions of the tasks
  // already placed arrive while their assignments do not, and must be neither queued nor placed.
  auto last = ingress::api::SubmitTask(store, {}, {Body(kTasks), "", "test:handover", "test"});
  REQUIRE(last.ok());
  ids.insert(last.value().task_id);
  REQUIRE(test::WaitUntil([&] { return placed_count() == kTasks + 1; }, std::chrono::seconds(10)));
  before_assignments.commit();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  scheduler.Stop();
  store.Stop();

  std::lock_guard<std::mutex> lock(mu);
  CHECK(std::set<std::string>(placed.begin(), placed.end()) == ids);
  CHECK(placed.size() == ids.size());  // none twice
  handlers::PassOutcome totals = scheduler.Totals();
  CHECK(totals.placed == kTasks + 1);
  CHECK(totals.conflicts == 0);  // no stale copy of a placed task was tried
  CHECK(db.Scalar("SELECT count(*) FROM events WHERE type = 'task.assigned'") == kTasks + 1);
  CHECK(db.Scalar("SELECT count(*) FROM scheduler_placements") == kTasks + 1);
}
