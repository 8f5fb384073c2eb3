// The classic event-log bugs (docs/architecture.md, "Ordering"), each driven against Postgres.

#include <doctest/doctest.h>

#include <thread>

#include "core/checkpoint.h"
#include "core/event_reader.h"
#include "core/event_store.h"
#include "core/ids.h"
#include "core/projection.h"
#include "core/subscription.h"
#include "projections/audit_projector.h"
#include "test/support/harness.h"
#include "test/support/recording_handler.h"

using namespace unidesk;
using core::ExpectedVersion;
using namespace std::chrono_literals;

namespace {

core::NewEvent Ev(int n = 0) {
  core::NewEvent e;
  e.type = "test.happened";
  e.data_json = "{\"n\": " + std::to_string(n) + "}";
  e.metadata = {"user:test", "corr", "", "test"};
  return e;
}

struct Bus {
  test::TestDatabase db;
  core::EventCatalogue catalogue = test::TestCatalogue();
  std::unique_ptr<core::EventStore> store;
  std::unique_ptr<pqxx::connection> admin = db.Connect();

  explicit Bus(bool notify = true) {
    core::EventStoreOptions o{db.conninfo()};
    o.notify = notify;
    store = std::make_unique<core::EventStore>(o, catalogue, core::NullLogger());
    test::CreateSeenTable(*admin);
  }
  core::SubscriptionOptions Options(const std::string& name) const {
    core::SubscriptionOptions o;
    o.name = name;
    o.conninfo = db.conninfo();
    o.poll_interval = 300ms;
    return o;
  }
  long long Seen(const std::string& sub) const {
    return db.Scalar("SELECT count(*) FROM seen WHERE sub = '" + sub + "'");
  }
  void Append(const std::string& stream, int n = 0) {
    auto r = store->Append({stream, ExpectedVersion::Any(), {Ev(n)}, {}});
    REQUIRE_MESSAGE(r.ok(), r.error().message);
  }
};

}  // namespace

TEST_CASE("a slow append with a lower position is delivered, before the fast one") {
  Bus bus;
  test::RecordingHandler h("s");
  core::Subscription sub(bus.Options("s"), bus.catalogue, h, core::NullLogger());
  sub.Start();
  auto slow_conn = bus.db.Connect();
  pqxx::work slow(*slow_conn);
  auto low =
      bus.store->AppendInTransaction(slow, {"test-slow", ExpectedVersion::Any(), {Ev()}, {}});
  REQUIRE(low.ok());
  bus.Append("test-fast");  // commits with a higher position while the slow one is open
  std::this_thread::sleep_for(300ms);
  CHECK(bus.Seen("s") == 0);  // held back, not skipped
  slow.commit();
  bus.store->NotifyCommitted();
  REQUIRE(test::WaitUntil([&] { return bus.Seen("s") == 2; }, 10s));
  CHECK(bus.db.Scalar("SELECT position FROM seen ORDER BY seq LIMIT 1") == low.value().first.value);
  sub.Stop();
}

TEST_CASE("a rolled-back append leaves a hole that does not stall subscribers") {
  Bus bus;
  {
    auto c = bus.db.Connect();
    pqxx::work tx(*c);
    REQUIRE(
        bus.store->AppendInTransaction(tx, {"test-r", ExpectedVersion::Any(), {Ev()}, {}}).ok());
    tx.abort();
  }
  bus.Append("test-r");
  test::RecordingHandler h("s");
  core::Subscription sub(bus.Options("s"), bus.catalogue, h, core::NullLogger());
  CHECK(sub.CatchUp() == 1);
  CHECK(bus.db.Scalar("SELECT min(position) FROM events") > 1);  // the hole is there
  CHECK(bus.db.Scalar("SELECT stream_version FROM events") == 0);
}

TEST_CASE("a long transaction in another database delays delivery and never loses events") {
  Bus bus;
  test::TestDatabase other(test::TestDatabase::Schema::kEmpty);
  auto oc = other.Connect();
  auto blocker = std::make_unique<pqxx::work>(*oc);
  blocker->exec("SELECT pg_current_xact_id()");  // holds an xid, so the cluster's xmin
  bus.Append("test-l");
  {
    auto c = bus.db.Connect();
    pqxx::read_transaction tx(*c);
    core::SafeBatch b = core::ReadAfterCursor(tx, bus.catalogue, {}, 100);
    CHECK(b.events.empty());
    CHECK(b.held_back);  // the lag is visible, not silent
  }
  test::RecordingHandler h("s");
  core::Subscription sub(bus.Options("s"), bus.catalogue, h, core::NullLogger());
  sub.Start();
  std::this_thread::sleep_for(500ms);
  CHECK(bus.Seen("s") == 0);
  blocker->commit();
  CHECK(test::WaitUntil([&] { return bus.Seen("s") == 1; }, 10s));
  sub.Stop();
}

TEST_CASE("early-xid inversion: an append after another write in its transaction is refused") {
  Bus bus;
  bus.Append("test-x");  // v0
  auto c = bus.db.Connect();
  pqxx::work tx(*c);
  tx.exec("SELECT pg_current_xact_id()");  // this transaction took its xid before the lock
  auto r = bus.store->AppendInTransaction(tx, {"test-x", ExpectedVersion::Exactly(0), {Ev()}, {}});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == core::AppendError::kTransactionAlreadyWrote);
}

TEST_CASE("in-doubt commit: the connection dies at COMMIT, a retry with the same id lands once") {
  Bus bus;
  core::NewEvent e = Ev();
  e.event_id = core::NewUuid();
  auto c = bus.db.Connect();
  {
    pqxx::work tx(*c);
    REQUIRE(bus.store->AppendInTransaction(tx, {"test-d", ExpectedVersion::Any(), {e}, {}}).ok());
    pqxx::nontransaction(*bus.admin)
        .exec("SELECT pg_terminate_backend(" + std::to_string(c->backendpid()) + ")");
    CHECK_THROWS(tx.commit());  // the outcome is unknown to this client
  }
  auto retry = bus.store->Append({"test-d", ExpectedVersion::Any(), {e}, {}});
  REQUIRE(retry.ok());
  auto again = bus.store->Append({"test-d", ExpectedVersion::Any(), {e}, {}});
  REQUIRE(again.ok());
  CHECK(again.value().repeated);
  CHECK(again.value().first.value == retry.value().first.value);
  CHECK(bus.db.Scalar("SELECT count(*) FROM events WHERE event_id = '" + e.event_id + "'") == 1);
}

TEST_CASE("a projector that crashes between apply and commit leaves the read model exact") {
  Bus bus;
  for (int i = 0; i < 50; ++i) bus.Append("test-p" + std::to_string(i % 3), i);
  test::RecordingHandler h("s");
  h.fail_next_after_write = true;
  auto o = bus.Options("s");
  o.batch_size = 10;
  o.reconnect_min = 10ms;
  core::Subscription sub(o, bus.catalogue, h, core::NullLogger());
  sub.Start();
  REQUIRE(test::WaitUntil([&] { return bus.Seen("s") == 50; }, 10s));
  std::this_thread::sleep_for(200ms);
  CHECK(bus.Seen("s") == 50);
  CHECK(bus.db.Scalar("SELECT count(DISTINCT position) FROM seen") == 50);
  CHECK(h.fail_next_after_write == false);  // the crash did happen
  sub.Stop();
}

TEST_CASE("two instances of one subscriber: a stale checkpoint write is refused") {
  Bus bus;
  auto c = bus.db.Connect();
  {
    pqxx::work tx(*c);
    core::Checkpoint cp = core::LoadCheckpoint(tx, "p");
    REQUIRE(core::AdvanceCheckpoint(tx, "p", cp.cursor, {10, 5}, 1).ok());
    auto stale = core::AdvanceCheckpoint(tx, "p", cp.cursor, {11, 6}, 1);
    REQUIRE_FALSE(stale.ok());
    CHECK(stale.error().code == core::CheckpointError::kStale);
  }
  SUBCASE("with the owner lock only one runs, and the other takes over when it stops") {
    test::RecordingHandler h1("s"), h2("s");
    auto one = std::make_unique<core::Subscription>(bus.Options("s"), bus.catalogue, h1,
                                                    core::NullLogger());
    core::Subscription two(bus.Options("s"), bus.catalogue, h2, core::NullLogger());
    one->Start();
    two.Start();
    REQUIRE(test::WaitUntil([&] { return one->status().owner || two.status().owner; }, 5s));
    std::this_thread::sleep_for(200ms);
    CHECK(one->status().owner != two.status().owner);
    bool first_owned = one->status().owner;
    for (int i = 0; i < 20; ++i) bus.Append("test-t", i);
    REQUIRE(test::WaitUntil([&] { return bus.Seen("s") == 20; }, 10s));
    if (first_owned) {
      one.reset();
      REQUIRE(test::WaitUntil([&] { return two.status().owner; }, 5s));
    }
    for (int i = 0; i < 20; ++i) bus.Append("test-t", i);
    REQUIRE(test::WaitUntil([&] { return bus.Seen("s") == 40; }, 10s));
    CHECK(bus.db.Scalar("SELECT count(DISTINCT position) FROM seen") == 40);
    two.Stop();
  }
  SUBCASE("without it, the compare-and-set alone keeps every effect exactly once") {
    test::RecordingHandler h1("s"), h2("s");
    auto o = bus.Options("s");
    o.exclusive = false;
    o.batch_size = 5;
    core::Subscription one(o, bus.catalogue, h1, core::NullLogger());
    core::Subscription two(o, bus.catalogue, h2, core::NullLogger());
    one.Start();
    two.Start();
    for (int i = 0; i < 200; ++i) bus.Append("test-u" + std::to_string(i % 4), i);
    REQUIRE(test::WaitUntil([&] { return bus.Seen("s") >= 200; }, 20s));
    std::this_thread::sleep_for(300ms);
    CHECK(bus.Seen("s") == 200);
    CHECK(bus.db.Scalar("SELECT count(DISTINCT position) FROM seen") == 200);
    one.Stop();
    two.Stop();
  }
}

TEST_CASE("the listener's backend is killed while appending: the subscriber catches up") {
  Bus bus;
  test::RecordingHandler h("s");
  auto o = bus.Options("s");
  o.reconnect_min = 20ms;
  core::Subscription sub(o, bus.catalogue, h, core::NullLogger());
  sub.Start();
  for (int i = 0; i < 10; ++i) bus.Append("test-k", i);
  REQUIRE(test::WaitUntil([&] { return bus.Seen("s") == 10; }, 10s));
  pqxx::nontransaction(*bus.admin)
      .exec(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
          "current_database() AND pid <> pg_backend_pid()");
  for (int i = 0; i < 10; ++i) bus.Append("test-k", i);
  CHECK(test::WaitUntil([&] { return bus.Seen("s") == 20; }, 15s));
  CHECK(sub.status().reconnects >= 1);
  sub.Stop();
}

TEST_CASE("with NOTIFY switched off, the poll still delivers") {
  Bus bus(/*notify=*/false);
  test::RecordingHandler h("s");
  core::Subscription sub(bus.Options("s"), bus.catalogue, h, core::NullLogger());
  sub.Start();
  std::this_thread::sleep_for(100ms);
  bus.Append("test-n");
  CHECK(test::WaitUntil([&] { return bus.Seen("s") == 1; }, 5s));
  sub.Stop();
}

TEST_CASE("a paced subscription reads a steady stream in few batches and misses nothing") {
  Bus bus;
  struct Counting : test::RecordingHandler {
    using RecordingHandler::RecordingHandler;
    std::atomic<int> batches{0};
    void Handle(pqxx::work& tx, const std::vector<core::RecordedEvent>& batch) override {
      ++batches;
      RecordingHandler::Handle(tx, batch);
    }
  } h("paced");
  auto options = bus.Options("paced");
  options.min_step_interval = 100ms;
  core::Subscription sub(options, bus.catalogue, h, core::NullLogger());
  sub.Start();
  std::this_thread::sleep_for(100ms);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 60; ++i) {  // a wake-up every 5 ms or so
    bus.Append("test-paced", i);
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(test::WaitUntil([&] { return bus.Seen("paced") == 60; }, 10s));
  auto elapsed = std::chrono::steady_clock::now() - t0;
  sub.Stop();
  // At most one read per 100 ms (plus the first), however many wake-ups came.
  CHECK(h.batches.load() <= elapsed / 100ms + 2);
  CHECK(bus.db.Scalar("SELECT count(*) FROM (SELECT stream_version, row_number() OVER (ORDER BY "
                      "seq) - 1 AS k FROM seen) s WHERE stream_version = k") == 60);
}

TEST_CASE("a subscription of chosen types gets only those, in order, and its checkpoint moves on") {
  Bus bus;
  auto versioned = [&](const std::string& stream) {
    core::NewEvent e = Ev();
    e.type = "test.versioned";
    auto r = bus.store->Append({stream, ExpectedVersion::Any(), {e}, {}});
    REQUIRE_MESSAGE(r.ok(), r.error().message);
  };
  for (int i = 0; i < 5; ++i) {
    bus.Append("test-h", i);
    versioned("test-v");
  }
  test::RecordingHandler h("typed");
  auto options = bus.Options("typed");
  options.types = {"test.versioned"};
  core::Subscription sub(options, bus.catalogue, h, core::NullLogger());
  CHECK(sub.CatchUp() == 5);  // the five test.happened never reach the handler
  CHECK(bus.db.Scalar("SELECT count(*) FROM seen WHERE stream_id <> 'test-v'") == 0);
  CHECK(bus.db.Scalar("SELECT count(*) FROM seen WHERE sub = 'typed'") == 5);
  // In delivery order: the versions 0..4 of test-v, each once.
  CHECK(bus.db.Scalar("SELECT count(*) FROM (SELECT stream_version, row_number() OVER (ORDER BY "
                      "seq) - 1 AS k FROM seen) s WHERE stream_version = k") == 5);

  // Then only skipped events: the checkpoint still follows, within about a second.
  sub.Start();
  for (int i = 0; i < 20; ++i) bus.Append("test-h", i);
  auto last = bus.db.Scalar("SELECT max(position) FROM events");
  CHECK(test::WaitUntil(
      [&] {
        // Compared as a cursor: a horizon's position is 2^63-1 whatever its transaction.
        return bus.db.Scalar(
                   "SELECT count(*) FROM subscriptions s, events e WHERE s.name = "
                   "'typed' AND e.position = " +
                   std::to_string(last) + " AND (s.tx_id, s.position) >= (e.tx_id, e.position)") ==
               1;
      },
      5s));
  versioned("test-v");  // and a new match is delivered as ever
  CHECK(test::WaitUntil([&] { return bus.Seen("typed") == 6; }, 5s));
  sub.Stop();
  // A prefix names a family of types.
  test::RecordingHandler all("prefix");
  auto prefixed = bus.Options("prefix");
  prefixed.types = {"test."};
  core::Subscription family(prefixed, bus.catalogue, all, core::NullLogger());
  CHECK(family.CatchUp() == 31);  // 25 test.happened and 6 test.versioned
}

TEST_CASE("a subscription that skips the data gets every event's metadata, and {} for data") {
  Bus bus;
  for (int i = 0; i < 4; ++i) bus.Append("test-m", i + 1);
  struct Collect : core::SubscriptionHandler {
    std::vector<core::RecordedEvent> got;
    void Handle(pqxx::work&, const std::vector<core::RecordedEvent>& batch) override {
      got.insert(got.end(), batch.begin(), batch.end());
    }
  };
  for (std::vector<std::string> types : {std::vector<std::string>{}, {"test."}}) {
    CAPTURE(types.size());
    Collect whole, skipped;
    std::string suffix = types.empty() ? "all" : "typed";
    auto o = bus.Options("whole-" + suffix);
    o.types = types;
    core::Subscription a(o, bus.catalogue, whole, core::NullLogger());
    CHECK(a.CatchUp() == 4);
    o = bus.Options("skip-" + suffix);
    o.types = types;
    o.data = core::EventData::kSkip;
    core::Subscription b(o, bus.catalogue, skipped, core::NullLogger());
    CHECK(b.CatchUp() == 4);
    REQUIRE(skipped.got.size() == whole.got.size());
    for (std::size_t i = 0; i < whole.got.size(); ++i) {
      const auto &w = whole.got[i], &s = skipped.got[i];
      CHECK(w.data_json == "{\"n\": " + std::to_string(i + 1) + "}");
      CHECK(s.data_json == "{}");
      CHECK(s.event_id == w.event_id);
      CHECK(s.type == w.type);
      CHECK(s.stream_id == w.stream_id);
      CHECK(s.stream_version == w.stream_version);
      CHECK(s.recorded_at == w.recorded_at);
      CHECK(s.metadata.actor == "user:test");
      CHECK(s.metadata.correlation_id == w.metadata.correlation_id);
      CHECK(s.metadata.source == w.metadata.source);
    }
  }
}

TEST_CASE("a rebuilt projection equals the live one (checksum)") {
  Bus bus;
  for (int i = 0; i < 300; ++i) bus.Append("test-a" + std::to_string(i % 7), i);
  projections::AuditProjector audit;
  core::ProjectionHandler handler(audit);
  auto o = bus.Options("audit");
  o.batch_size = 37;
  core::Subscription live(o, bus.catalogue, handler, core::NullLogger());
  CHECK(live.CatchUp() == 300);
  const std::string checksum =
      "SELECT ('x' || substr(md5(string_agg(a::text, ',' ORDER BY position)), 1, 15))::bit(60)"
      "::bigint FROM audit_log a";
  long long before = bus.db.Scalar(checksum);
  {
    pqxx::work tx(*bus.admin);
    core::ResetProjection(tx, audit);
    tx.commit();
  }
  CHECK(bus.db.Scalar("SELECT count(*) FROM audit_log") == 0);
  CHECK(live.CatchUp() == 300);
  CHECK(bus.db.Scalar("SELECT count(*) FROM audit_log") == 300);
  CHECK(bus.db.Scalar(checksum) == before);
}
