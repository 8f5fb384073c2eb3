// An append whose COMMIT dies without landing (the in-doubt case the Postgres-restart test hits
// by chance), made deterministic: a deferred trigger ends the session at COMMIT, once.

#include <doctest/doctest.h>

#include <string>

#include "core/event_store.h"
#include "core/ids.h"
#include "test/e2e/e2e_support.h"

using namespace unidesk;

namespace {

/// The first event inserted after this kills its own session while committing; later ones pass.
void ArmCommitFault(const test::TestDatabase& db) {
  auto c = db.Connect();
  pqxx::work tx(*c);
  tx.exec("CREATE SEQUENCE commit_fault");  // nextval is not rolled back: the fault fires once
  tx.exec(
      "CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF "
      "nextval('commit_fault') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM "
      "pg_sleep(5); END IF; RETURN NULL; END $$");
  tx.exec(
      "CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON events DEFERRABLE INITIALLY "
      "DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit()");
  tx.commit();
}

}  // namespace

TEST_CASE("an append whose COMMIT died without landing is run again and lands once") {
  test::TestDatabase db;
  ArmCommitFault(db);
  core::EventCatalogue catalogue = test::TestCatalogue();
  core::EventStoreOptions options{db.conninfo()};
  options.writer_connections = 1;
  core::EventStore store(options, catalogue, core::NullLogger());
  core::NewEvent e;
  e.type = "test.happened";
  e.data_json = "{\"n\": 1}";
  e.metadata = {"user:alice", "corr-1", "", "test"};
  e.event_id = core::NewUuid();
  core::AppendRequest req{"test-d", core::ExpectedVersion::Any(), {e}, {}};

  auto r = store.Append(req);
  // Fails while core/detail/append_batcher.cpp ResolveInDoubt runs the group again with its
  // probe nontransaction still open (see the report): invalid_request "Started
  // transaction<READ COMMITTED> while nontransaction still active", for a valid request.
  CHECK_MESSAGE(r.ok(), (r.ok() ? ""
                                : std::string(core::AppendErrorName(r.error().code)) + ": " +
                                      r.error().message));
  CHECK(db.Scalar("SELECT last_value FROM commit_fault") == 2);  // died once, then ran again
  if (!r.ok()) {
    // What a careful client does with an error after an unknown outcome: the same ids again.
    auto retry = store.Append(req);
    CHECK_MESSAGE(retry.ok(), (retry.ok() ? "" : retry.error().message));
  }
  CHECK(db.Scalar("SELECT count(*) FROM events WHERE event_id = '" + e.event_id + "'") == 1);
  auto again = store.Append(req);
  REQUIRE(again.ok());
  CHECK(again.value().repeated);
  CHECK(db.Scalar("SELECT count(*) FROM events") == 1);
}
