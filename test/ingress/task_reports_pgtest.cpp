// Node reports applied in groups (TaskDispatch::RecordTaskReports, what TaskReportQueue hands
// it): each report in a group is decided as if it were alone. Two reports on one task apply in
// order; a stale one is rejected with a cancel and recorded; a malformed one is refused; a resend
// applies once; an ending releases its placement. Against a real Postgres, no server.

#include <doctest/doctest.h>

#include "core/event_catalogue.h"
#include "core/event_store.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/protocol.h"
#include "ingress/provider_ingress/task_dispatch.h"
#include "test/support/harness.h"

using namespace unidesk;
namespace proto = core::protocol;

namespace {

struct Fixture {
  test::TestDatabase db;
  core::EventCatalogue catalogue = core::BuiltinCatalogue();
  core::EventStore events{{db.conninfo()}, catalogue, core::NullLogger()};
  ingress::IngressStore store{db.conninfo(), "test-ingress", events};
  ingress::TaskDispatch dispatch{db.conninfo(), events, store};

  /// A task submitted and placed as attempt 1 on `node` (events and placement row).
  std::string Placed(const std::string& node) {
    std::string id = core::NewUuid();
    auto append = [&](const std::string& type, std::string data, core::ExpectedVersion v) {
      core::NewEvent e;
      e.type = type;
      e.data_json = std::move(data);
      e.metadata = {"test", id, "", "test"};
      auto r = events.Append({"task-" + id, v, {e}, std::nullopt});
      REQUIRE(r.ok());
    };
    append("task.submitted",
           core::JsonObject().Str("task", id).Raw("spec", "{}").Str("submitted_by", "t").Done(),
           core::ExpectedVersion::NoStream());
    append("task.assigned",
           core::JsonObject()
               .Str("task", id)
               .Int("attempt", 1)
               .Str("node", node)
               .Raw("gpu_indices", "[]")
               .Done(),
           core::ExpectedVersion::Exactly(0));
    auto c = db.Connect();
    pqxx::work tx(*c);
    tx.exec_params(
        "INSERT INTO scheduler_placements (task_id, attempt, node, cpu_millis, memory_bytes) "
        "VALUES ($1, 1, $2, 1000, 1048576)",
        id, node);
    tx.commit();
    return id;
  }

  std::vector<std::string> Types(const std::string& task) {
    std::vector<std::string> out;
    auto c = db.Connect();
    pqxx::read_transaction tx(*c);
    for (const auto& r :
         tx.exec_params("SELECT type FROM events WHERE stream_id = $1 ORDER BY stream_version",
                        "task-" + task))
      out.push_back(r[0].c_str());
    return out;
  }
};

ingress::TaskReportIn In(const std::string& node, std::int64_t seq, const std::string& task,
                         const std::string& state) {
  proto::TaskReport r;
  r.task = task;
  r.attempt = 1;
  r.state = state;
  if (state == "succeeded") r.exit_code = 0;
  return {
      node, "session-" + node,
      proto::Report{"r" + std::to_string(seq), "outbox-" + node, seq, "task", proto::ToJson(r)}};
}

}  // namespace

TEST_CASE("reports applied in one group are each decided as if alone") {
  Fixture f;
  std::string a = f.Placed("n1"), b = f.Placed("n2"), c = f.Placed("n3");
  std::vector<ingress::TaskReportIn> group = {
      In("n1", 1, a, "accepted"),
      In("n2", 1, b, "accepted"),
      In("n1", 2, a, "succeeded"),  // same task as the first: applied after it
      In("n9", 1, c, "accepted"),   // not the node the attempt is on: stale
      {"n3", "session-n3", proto::Report{"r9", "outbox-n3", 9, "task", "{\"task\": 5}"}},
      In("n1", 1, a, "accepted"),  // the first one again (a resend after a lost ack)
  };
  auto results = f.dispatch.RecordTaskReports(group);
  REQUIRE(results.size() == group.size());
  for (std::size_t i : {0u, 1u, 2u, 5u}) {
    CAPTURE(i);
    REQUIRE(results[i].ok());
    CHECK(results[i].value().rejected.empty());
    CHECK_FALSE(results[i].value().stop);
  }
  REQUIRE(results[3].ok());
  CHECK(results[3].value().rejected.find("attempt 1") != std::string::npos);
  REQUIRE(results[3].value().stop);
  CHECK(results[3].value().stop->task == c);
  REQUIRE(results[4].ok());
  CHECK(results[4].value().rejected.find("bad task report") == 0);

  CHECK(f.Types(a) == std::vector<std::string>{"task.submitted", "task.assigned", "task.accepted",
                                               "task.succeeded"});
  CHECK(f.Types(b) == std::vector<std::string>{"task.submitted", "task.assigned", "task.accepted"});
  CHECK(f.Types(c) == std::vector<std::string>{"task.submitted", "task.assigned"});
  // The ended attempt released its capacity; the live ones keep theirs.
  CHECK(f.db.Scalar("SELECT count(*) FROM scheduler_placements WHERE task_id = '" + a + "'") == 0);
  CHECK(f.db.Scalar("SELECT count(*) FROM scheduler_placements") == 2);
  // The stale and the malformed report are on the bus as rejections.
  CHECK(f.db.Scalar("SELECT count(*) FROM events WHERE type = 'ingress.rejected' AND "
                    "data->>'reason' = 'stale_report' AND data->>'node' = 'n9'") == 1);
  CHECK(f.db.Scalar("SELECT count(*) FROM events WHERE type = 'ingress.rejected' AND "
                    "data->>'reason' = 'bad_report' AND data->>'node' = 'n3'") == 1);

  // The whole group again: nothing more is applied.
  auto again = f.dispatch.RecordTaskReports({group[0], group[1], group[2]});
  for (const auto& r : again) {
    REQUIRE(r.ok());
    CHECK(r.value().rejected.empty());
  }
  CHECK(f.db.Scalar("SELECT count(*) FROM events WHERE type IN ('task.accepted', "
                    "'task.succeeded')") == 3);
}

TEST_CASE("a group on a dead database says unavailable for every report, and nothing is lost") {
  Fixture f;
  std::string a = f.Placed("n1"), b = f.Placed("n2");
  ingress::TaskDispatch dead{"host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2", f.events,
                             f.store};
  auto results = dead.RecordTaskReports({In("n1", 1, a, "accepted"), In("n2", 1, b, "accepted")});
  for (const auto& r : results) {
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ingress::StoreError::kUnavailable);
  }
  // The node sends them again (it was not acknowledged); now they land.
  results = f.dispatch.RecordTaskReports({In("n1", 1, a, "accepted"), In("n2", 1, b, "accepted")});
  for (const auto& r : results) CHECK(r.ok());
  CHECK(f.Types(a).back() == "task.accepted");
  CHECK(f.Types(b).back() == "task.accepted");
}
