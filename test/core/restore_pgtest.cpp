// Dump, restore into a fresh cluster, append: new events must sort after old ones. A fresh
// cluster's xids restart low, so the server refuses until the xid epoch is raised.

#include <doctest/doctest.h>

#include "core/event_reader.h"
#include "core/event_store.h"
#include "core/subscription.h"
#include "core/xid_horizon.h"
#include "test/support/harness.h"
#include "test/support/recording_handler.h"

using namespace unidesk;
using namespace std::chrono_literals;

namespace {

core::NewEvent Ev() {
  core::NewEvent e;
  e.type = "test.happened";
  e.metadata = {"user:test", "c", "", "test"};
  return e;
}

std::optional<std::string> Horizon(const std::string& conninfo) {
  pqxx::connection c(conninfo);
  pqxx::read_transaction tx(c);
  return core::CheckXidHorizon(tx);
}

}  // namespace

TEST_CASE("after a dump is restored into a fresh cluster, new events sort after old ones") {
  core::EventCatalogue catalogue = test::TestCatalogue();
  const std::string pgbin = "/usr/lib/postgresql/15/bin/";
  test::PrivateCluster source;
  // The source has lived long enough to be in xid epoch 1: its tx ids are all above 2^32.
  REQUIRE(test::Shell(test::RepoRoot() + "/ops/pgcluster raise-epoch " + source.dir() + " 1") == 0);
  test::TestDatabase old_db(test::TestDatabase::Schema::kMigrated, source.conninfo());
  {
    core::EventStore store({old_db.conninfo()}, catalogue, core::NullLogger());
    for (int i = 0; i < 5; ++i) {
      REQUIRE(store.Append({"test-r", core::ExpectedVersion::Any(), {Ev()}, {}}).ok());
    }
  }
  CHECK_FALSE(Horizon(old_db.conninfo()));

  // A subscriber takes everything before the dump; its checkpoint travels with the dump.
  test::CreateSeenTable(*old_db.Connect());
  test::RecordingHandler h("s");
  core::SubscriptionOptions o;
  o.name = "s";
  o.listen = false;
  {
    o.conninfo = old_db.conninfo();
    core::Subscription sub(o, catalogue, h, core::NullLogger());
    CHECK(sub.CatchUp() == 5);
  }
  o.conninfo = "";  // set to the restored database below

  test::PrivateCluster target;
  test::TestDatabase restored(test::TestDatabase::Schema::kEmpty, target.conninfo());
  std::string dump = pgbin + "pg_dump --no-owner -d '" + old_db.conninfo() + "' | " + pgbin +
                     "psql -q -v ON_ERROR_STOP=1 -d '" + restored.conninfo() + "' >/dev/null";
  REQUIRE(test::Shell(dump) == 0);
  REQUIRE(restored.Scalar("SELECT count(*) FROM events") == 5);

  // The trap: the fresh cluster's next xid is below the log's (every restored event would
  // look newer than anything appended now), and the server says so.
  auto behind = Horizon(restored.conninfo());
  REQUIRE(behind);
  CHECK(behind->find("raise-epoch") != std::string::npos);
  std::string out;
  int code = test::Shell(
      test::BuildDir() + "/ingress/unidesk-server --db '" + restored.conninfo() + "' 2>&1", &out);
  CHECK(code == 3);
  CHECK(out.find("xid epoch") != std::string::npos);

  // The fix: raise the epoch above the log's, as the message says.
  long long max_tx = restored.Scalar("SELECT max(tx_id)::text::bigint FROM events");
  REQUIRE(test::Shell(test::RepoRoot() + "/ops/pgcluster raise-epoch " + target.dir() + " " +
                      std::to_string(core::EpochAbove(max_tx))) == 0);
  CHECK_FALSE(Horizon(restored.conninfo()));
  {
    core::EventStore store({restored.conninfo()}, catalogue, core::NullLogger());
    REQUIRE(store.Append({"test-r", core::ExpectedVersion::Any(), {Ev()}, {}}).ok());
  }
  CHECK(restored.Scalar("SELECT count(*) FROM events WHERE tx_id > '" + std::to_string(max_tx) +
                        "'::xid8") == 1);
  o.conninfo = restored.conninfo();
  core::Subscription sub(o, catalogue, h, core::NullLogger());
  CHECK(sub.CatchUp() == 1);  // delivered, not sorted behind the checkpoint
  CHECK(restored.Scalar("SELECT count(*) FROM seen") == 6);
}
