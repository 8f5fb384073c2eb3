// Delivery order across a power of ten of transaction ids (999 -> 1000): the projector and
// `events tail --follow` must take every event once, in (tx_id, position) order.

#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "core/event_store.h"
#include "test/e2e/e2e_support.h"

using namespace unidesk;
using namespace unidesk::test::e2e;
using namespace std::chrono_literals;

namespace {

/// The next transaction id the cluster will hand out.
long long NextXid(pqxx::connection& c) {
  pqxx::nontransaction tx(c);
  return tx.exec("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")[0][0]
      .as<long long>();
}

/// Uses up transaction ids (one committed transaction each) until the next one is `target`.
void BurnXidsUntil(pqxx::connection& c, long long target) {
  pqxx::nontransaction(c).exec(
      "CREATE OR REPLACE PROCEDURE burn_xids(n int) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n "
      "LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$");
  long long left = target - NextXid(c);
  if (left > 0) pqxx::nontransaction(c).exec("CALL burn_xids(" + std::to_string(left) + ")");
}

/// Appends one event per transaction, `n` times.
void AppendOneByOne(const std::string& conninfo, int first, int n) {
  core::EventCatalogue catalogue = test::TestCatalogue();
  core::EventStore store({conninfo}, catalogue, core::NullLogger());
  for (int i = first; i < first + n; ++i) {
    core::NewEvent e;
    e.type = "test.happened";
    e.data_json = "{\"n\": " + std::to_string(i) + "}";
    e.metadata = {"user:alice", "corr", "", "test"};
    auto r = store.Append({"test-x", core::ExpectedVersion::Any(), {e}, {}});
    REQUIRE_MESSAGE(r.ok(), r.error().message);
  }
}

/// Positions of `events tail --json` lines, in printed order.
std::vector<long long> PrintedPositions(const std::string& out) {
  std::vector<long long> positions;
  for (const auto& line : Lines(out)) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    REQUIRE_MESSAGE(d.IsObject(), line);
    positions.push_back(d["position"].GetInt64());
  }
  return positions;
}

}  // namespace

TEST_CASE("events whose transaction ids cross 999 -> 1000 are delivered once and in order") {
  test::PrivateCluster cluster;  // its own transaction ids, which the test steers
  test::TestDatabase db(test::TestDatabase::Schema::kMigrated, cluster.conninfo());
  auto conn = db.Connect();
  long long boundary = 1000;
  while (boundary < NextXid(*conn) + 50) boundary *= 10;
  BurnXidsUntil(*conn, boundary - 4);
  AppendOneByOne(db.conninfo(), 0, 8);  // one transaction each: ids around the boundary
  REQUIRE(db.Scalar("SELECT min(tx_id::text::bigint) FROM events") < boundary);
  REQUIRE(db.Scalar("SELECT max(tx_id::text::bigint) FROM events") >= boundary);
  std::string expected_order = Text(
      db.conninfo(), "SELECT string_agg(position::text, ',' ORDER BY tx_id, position) FROM events");

  std::string log = TempPath("server.log");
  std::string out = TempPath("follow.out");
  auto server = StartServer(db.conninfo(), log);
  test::ChildProcess follow(
      {CliBinary(), "--db", db.conninfo(), "events", "tail", "--follow", "--json"}, {}, out);
  auto projected = [&](long long n) {
    return test::WaitUntil(
        [&] {
          return db.Scalar("SELECT count(*) FROM audit_log") == n ||
                 Contains(ReadFile(log), "failed a batch");
        },
        30s);
  };
  CHECK(projected(8));
  REQUIRE(test::WaitUntil([&] { return Lines(ReadFile(out)).size() >= 8; }, 20s));

  // One more event, after the boundary: the projector must take it, and the follower prints it
  // after everything before it (so its output is complete once the marker shows).
  AppendOneByOne(db.conninfo(), 8, 1);
  long long marker = db.Scalar("SELECT max(position) FROM events");
  CHECK(projected(9));
  bool shown = test::WaitUntil(
      [&] {
        auto p = PrintedPositions(ReadFile(out));
        return std::find(p.begin(), p.end(), marker) != p.end();
      },
      20s);
  CHECK(shown);
  CHECK(StopChild(follow, SIGINT, 5s) == 0);
  CHECK(StopChild(*server, SIGTERM) == 0);

  // These failed before 9118321 (ReadAfterCursor's ORDER BY tx_id sorted the ::text column):
  // the projector re-read projected events and stopped, the follower printed some twice.
  CHECK_MESSAGE(!Contains(ReadFile(log), "failed a batch"), "server log:\n" << ReadFile(log));
  CHECK(db.Scalar("SELECT count(*) FROM audit_log") == 9);
  CHECK(db.Scalar("SELECT events FROM subscriptions WHERE name = 'audit'") == 9);
  // The audit checkpoint (it reads every event) stands on the last event in delivery order;
  // the typed projectors' checkpoints may stand on the horizon past it instead.
  CHECK(Text(db.conninfo(),
             "SELECT s.tx_id::text || '/' || s.position FROM subscriptions s "
             "WHERE s.name = 'audit'") ==
        Text(db.conninfo(),
             "SELECT tx_id::text || '/' || position FROM events ORDER BY events.tx_id DESC, "
             "events.position DESC LIMIT 1"));
  auto printed = PrintedPositions(ReadFile(out));
  std::string order;
  for (std::size_t i = 0; i + 1 < printed.size(); ++i) {
    order += (i ? "," : "") + std::to_string(printed[i]);
  }
  CHECK(order == expected_order);
  CHECK(std::set<long long>(printed.begin(), printed.end()).size() == printed.size());
  CHECK(printed.size() == 9);
  std::remove(log.c_str());
  std::remove(out.c_str());
}
