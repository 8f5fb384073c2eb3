// The `unidesk` CLI and `unidesk-server` as a user or operator runs them: exit codes, output,
// and what they leave in the database.

#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <string>
#include <vector>

#include "core/event_store.h"
#include "ingress/schema_sources.h"
#include "test/e2e/e2e_support.h"

using namespace unidesk;
using namespace unidesk::test::e2e;
using namespace std::chrono_literals;

namespace {

constexpr const char* kNoDatabase = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2";

/// Appends one event per entry; returns their positions.
struct Ev {
  std::string stream;
  std::string type;
  std::string actor;
  int n;
};
std::vector<long long> Append(const test::TestDatabase& db, const std::vector<Ev>& events) {
  core::EventCatalogue catalogue = test::TestCatalogue();
  core::EventStore store({db.conninfo()}, catalogue, core::NullLogger());
  std::vector<long long> positions;
  for (const auto& e : events) {
    core::NewEvent ne;
    ne.type = e.type;
    ne.data_json = "{\"n\": " + std::to_string(e.n) + "}";
    ne.metadata = {e.actor, "corr-" + std::to_string(e.n), "", "test"};
    auto r = store.Append({e.stream, core::ExpectedVersion::Any(), {ne}, {}});
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    positions.push_back(r.value().first.value);
  }
  return positions;
}

/// One line of `events tail --json`.
struct TailLine {
  long long position = 0;
  std::string stream_id, type, actor;
  int n = -1;  // data.n
};

/// Parses every line of `out` as one JSON object (a CHECK fails on anything else).
std::vector<TailLine> ParseTail(const std::string& out) {
  std::vector<TailLine> lines;
  for (const auto& text : Lines(out)) {
    rapidjson::Document d;
    d.Parse(text.c_str());
    REQUIRE_MESSAGE(d.IsObject(), "not a JSON object: " << text);
    for (const char* key : {"position", "stream_id", "type", "actor", "data", "event_id",
                            "recorded_at", "correlation_id", "stream_version"}) {
      CHECK_MESSAGE(d.HasMember(key), key << " missing in " << text);
    }
    REQUIRE(d["data"].IsObject());
    TailLine l;
    l.position = d["position"].GetInt64();
    l.stream_id = d["stream_id"].GetString();
    l.type = d["type"].GetString();
    l.actor = d["actor"].GetString();
    if (d["data"].HasMember("n")) l.n = d["data"]["n"].GetInt();
    lines.push_back(l);
  }
  return lines;
}

std::vector<long long> PositionsOf(const std::vector<TailLine>& lines) {
  std::vector<long long> out;
  for (const auto& l : lines) out.push_back(l.position);
  return out;
}

std::vector<std::string> MigrationNames() {
  std::vector<std::string> names;
  for (const auto& m : ingress::SchemaSources()) names.push_back(m.name);
  return names;
}

int CodeVersion() { return ingress::SchemaSources().back().version; }

/// `unidesk-server` against `conninfo` that is expected to refuse: returns what it did.
Outcome ServerOnce(const std::string& conninfo, const std::string& extra = "--roles projector") {
  return Run(ServerBinary(), "--db " + Quote(conninfo) + " " + extra, 20);
}

}  // namespace

TEST_CASE("migrate applies every migration once, then has nothing to apply") {
  test::TestDatabase db(test::TestDatabase::Schema::kEmpty);
  Outcome first = Cli(db.conninfo(), "migrate");
  INFO("stdout: " << first.out << "\nstderr: " << first.err);
  CHECK(first.code == 0);
  for (const auto& name : MigrationNames()) CHECK(Contains(first.out, "applied " + name));
  CHECK(Contains(first.out, "schema is now at version " + std::to_string(CodeVersion())));
  CHECK(db.Scalar("SELECT count(*) FROM schema_migrations") == CodeVersion());
  CHECK(db.Scalar("SELECT count(*) FROM events WHERE type = 'schema.migrated'") == 1);
  CHECK(db.Scalar("SELECT (data->>'to')::int FROM events WHERE type = 'schema.migrated'") ==
        CodeVersion());
  CHECK(db.Scalar("SELECT jsonb_array_length(data->'applied') FROM events WHERE type = "
                  "'schema.migrated'") == static_cast<long long>(MigrationNames().size()));
  CHECK(db.Scalar("SELECT count(*) FROM events WHERE stream_id = 'schema' AND metadata->>'actor' "
                  "LIKE 'cli:%'") == 1);

  Outcome second = Cli(db.conninfo(), "migrate");
  CHECK(second.code == 0);
  CHECK(Contains(second.out, "nothing to apply"));
  CHECK_FALSE(Contains(second.out, "applied "));

  Outcome json = Cli(db.conninfo(), "migrate --json");
  CHECK(json.code == 0);
  rapidjson::Document d;
  d.Parse(json.out.c_str());
  REQUIRE_MESSAGE(d.IsObject(), json.out);
  CHECK(d["version"].GetInt() == CodeVersion());
  CHECK(d["applied"].GetInt() == 0);
  CHECK(db.Scalar("SELECT count(*) FROM events WHERE type = 'schema.migrated'") == 1);
}

TEST_CASE("migrate --json on an empty database reports what it applied") {
  test::TestDatabase db(test::TestDatabase::Schema::kEmpty);
  Outcome o = Cli(db.conninfo(), "migrate --json");
  CHECK(o.code == 0);
  CHECK(Lines(o.out).size() == 1);
  rapidjson::Document d;
  d.Parse(o.out.c_str());
  REQUIRE_MESSAGE(d.IsObject(), o.out);
  CHECK(d["version"].GetInt() == CodeVersion());
  CHECK(d["applied"].GetInt() == static_cast<int>(MigrationNames().size()));
}

TEST_CASE("the server refuses an un-migrated database, creating nothing") {
  test::TestDatabase db(test::TestDatabase::Schema::kEmpty);
  Outcome o = ServerOnce(db.conninfo());
  INFO("stderr: " << o.err);
  CHECK(o.code == 3);
  CHECK(Contains(o.err, "refusing to start"));
  CHECK(Contains(o.err, "unidesk migrate"));
  CHECK(Text(db.conninfo(), "SELECT to_regclass('events')::text") == "");
  CHECK(Text(db.conninfo(), "SELECT to_regclass('schema_migrations')::text") == "");
}

TEST_CASE("the server refuses a database short of this build's migrations") {
  test::TestDatabase db(test::TestDatabase::Schema::kEmpty);
  {
    auto conn = db.Connect();
    auto first_only = ingress::SchemaSources();
    first_only.resize(1);
    REQUIRE(core::Migrate(*conn, first_only).ok());
  }
  Outcome o = ServerOnce(db.conninfo());
  INFO("stderr: " << o.err);
  CHECK(o.code == 3);
  CHECK(Contains(o.err, "unidesk migrate"));
  CHECK(db.Scalar("SELECT count(*) FROM events") == 0);
  CHECK(db.Scalar("SELECT count(*) FROM subscriptions") == 0);
}

TEST_CASE("server and migrate refuse a schema in an unknown state and write nothing") {
  struct Case {
    const char* what;
    const char* sql;
    const char* message;  // a fragment of what the operator is told
  };
  const Case cases[] = {
      {"a migration newer than this build",
       "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, '0999_future', 'x')",
       "newer"},
      {"an applied migration whose checksum differs",
       "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", "differs"},
      {"a gap: migration 1 missing, 2 applied", "DELETE FROM schema_migrations WHERE version = 1",
       "is applied but an earlier one"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    test::TestDatabase db;
    {
      auto conn = db.Connect();
      pqxx::work tx(*conn);
      tx.exec(c.sql);
      tx.commit();
    }
    Outcome server = ServerOnce(db.conninfo());
    INFO("server stderr: " << server.err);
    CHECK(server.code == 3);
    CHECK(Contains(server.err, "refusing to start"));
    CHECK(Contains(server.err, c.message));
    Outcome migrate = Cli(db.conninfo(), "migrate");
    INFO("migrate stdout: " << migrate.out << "\nmigrate stderr: " << migrate.err);
    CHECK(migrate.code == 3);
    CHECK(Contains(migrate.err, c.message));
    CHECK(db.Scalar("SELECT count(*) FROM events") == 0);
    CHECK(db.Scalar("SELECT count(*) FROM subscriptions") == 0);
    CHECK(db.Scalar("SELECT count(*) FROM audit_log") == 0);
  }
}

TEST_CASE("the server projects while it runs and exits 0 soon after SIGTERM or SIGINT") {
  for (int sig : {SIGTERM, SIGINT}) {
    CAPTURE(sig);
    test::TestDatabase db;
    std::string log = TempPath("server.log");
    auto server = StartServer(db.conninfo(), log);
    Append(db, {{"test-a", "test.happened", "user:alice", 1}});
    bool projected =
        test::WaitUntil([&] { return db.Scalar("SELECT count(*) FROM audit_log") == 1; }, 30s);
    REQUIRE_MESSAGE(projected, "server log:\n" << ReadFile(log));
    REQUIRE(server->Running());
    auto asked = std::chrono::steady_clock::now();
    CHECK(StopChild(*server, sig, 5s) == 0);
    CHECK(std::chrono::steady_clock::now() - asked < 5s);
    CHECK(Contains(ReadFile(log), "stopped"));
    std::remove(log.c_str());
  }
}

TEST_CASE("events tail prints JSON lines and filters by stream, type and position") {
  test::TestDatabase db;
  auto pos = Append(db, {{"test-a", "test.happened", "user:alice", 1},
                         {"test-b", "test.versioned", "user:bob", 2},
                         {"test-a", "test.happened", "user:alice", 3},
                         {"test-b", "test.happened", "user:bob", 4},
                         {"test-a", "test.versioned", "user:carol", 5}});

  Outcome all = Cli(db.conninfo(), "events tail --json");
  CHECK(all.code == 0);
  auto lines = ParseTail(all.out);
  REQUIRE(lines.size() == 5);
  CHECK(PositionsOf(lines) == pos);
  CHECK(lines[0].stream_id == "test-a");
  CHECK(lines[0].type == "test.happened");
  CHECK(lines[0].actor == "user:alice");
  CHECK(lines[0].n == 1);
  CHECK(lines[1].stream_id == "test-b");
  CHECK(lines[1].type == "test.versioned");
  CHECK(lines[1].actor == "user:bob");
  CHECK(lines[4].n == 5);

  auto stream_b = ParseTail(Cli(db.conninfo(), "events tail --json --stream test-b").out);
  CHECK(PositionsOf(stream_b) == std::vector<long long>{pos[1], pos[3]});
  auto versioned = ParseTail(Cli(db.conninfo(), "events tail --json --type test.versioned").out);
  CHECK(PositionsOf(versioned) == std::vector<long long>{pos[1], pos[4]});
  auto both =
      ParseTail(Cli(db.conninfo(), "events tail --json --stream test-a --type test.happened").out);
  CHECK(PositionsOf(both) == std::vector<long long>{pos[0], pos[2]});
  auto since =
      ParseTail(Cli(db.conninfo(), "events tail --json --since " + std::to_string(pos[2])).out);
  CHECK(PositionsOf(since) == std::vector<long long>{pos[3], pos[4]});
  auto last = ParseTail(Cli(db.conninfo(), "events tail --json --limit 2").out);
  CHECK(PositionsOf(last) == std::vector<long long>{pos[3], pos[4]});

  Outcome human = Cli(db.conninfo(), "events tail");
  CHECK(human.code == 0);
  CHECK(Lines(human.out).size() == 5);
  CHECK(Contains(human.out, "test-b@1"));
  CHECK(Contains(human.out, "by user:carol"));

  Outcome bad = Cli(db.conninfo(), "events tail --since abc");
  CHECK(bad.code == 2);
  CHECK(Contains(bad.err, "whole numbers"));
}

TEST_CASE("events tail --follow shows an event appended after it started; SIGINT ends it") {
  test::TestDatabase db;
  Append(db, {{"test-a", "test.happened", "user:alice", 1},
              {"test-a", "test.happened", "user:alice", 2}});
  std::string out = TempPath("follow.out");
  test::ChildProcess follow(
      {CliBinary(), "--db", db.conninfo(), "events", "tail", "--follow", "--json"}, {}, out);
  // Its first lines are the events already there: then it is in its follow loop.
  bool started = test::WaitUntil([&] { return Lines(ReadFile(out)).size() >= 2; }, 20s);
  REQUIRE_MESSAGE(started, ReadFile(out));
  auto late = Append(db, {{"test-b", "test.happened", "user:dave", 42}});
  bool shown = test::WaitUntil([&] { return Lines(ReadFile(out)).size() >= 3; }, 20s);
  CHECK_MESSAGE(shown, ReadFile(out));
  CHECK(StopChild(follow, SIGINT, 5s) == 0);
  auto lines = ParseTail(ReadFile(out));
  REQUIRE(lines.size() == 3);  // each event once
  CHECK(lines[2].position == late[0]);
  CHECK(lines[2].stream_id == "test-b");
  CHECK(lines[2].actor == "user:dave");
  CHECK(lines[2].n == 42);
  std::remove(out.c_str());
}

TEST_CASE("projections status: never started, then checkpoint and lag after the server ran") {
  test::TestDatabase db;
  auto pos = Append(db, {{"test-a", "test.happened", "user:alice", 1},
                         {"test-a", "test.happened", "user:alice", 2},
                         {"test-b", "test.happened", "user:bob", 3}});

  Outcome never = Cli(db.conninfo(), "projections status");
  INFO("stdout: " << never.out << "\nstderr: " << never.err);
  CHECK(never.code == 0);
  CHECK(Contains(never.out, "audit"));
  CHECK(Contains(never.out, "never started"));
  Outcome never_json = Cli(db.conninfo(), "projections status --json");
  CHECK(never_json.code == 0);
  {
    // One line per projector (audit, nodes, tasks).
    auto json_lines = Lines(never_json.out);
    REQUIRE(json_lines.size() == 3);
    rapidjson::Document d;
    d.Parse(json_lines[0].c_str());
    REQUIRE_MESSAGE(d.IsObject(), never_json.out);
    CHECK(std::string(d["name"].GetString()) == "audit");
    CHECK(d["started"].GetBool() == false);
  }

  std::string log = TempPath("server.log");
  auto server = StartServer(db.conninfo(), log);
  bool projected =
      test::WaitUntil([&] { return db.Scalar("SELECT count(*) FROM audit_log") == 3; }, 30s);
  REQUIRE_MESSAGE(projected, "server log:\n" << ReadFile(log));
  // The typed projectors (nodes, tasks) take none of these events but move past them. Their
  // checkpoint is the horizon they read up to, which a transaction running anywhere in the
  // cluster (another test's database too) holds back: wait until it covers the last event.
  CHECK(test::WaitUntil(
      [&] {
        return db.Scalar("SELECT count(*) FROM subscriptions s, events e WHERE e.position = " +
                         std::to_string(pos[2]) +
                         " AND (s.tx_id, s.position) >= (e.tx_id, e.position)") == 3;
      },
      10s));
  CHECK(StopChild(*server, SIGTERM) == 0);
  auto later = Append(db, {{"test-c", "test.happened", "user:carol", 4},
                           {"test-c", "test.happened", "user:carol", 5}});

  Outcome text = Cli(db.conninfo(), "projections status");
  INFO("stdout: " << text.out);
  CHECK(text.code == 0);
  CHECK_FALSE(Contains(text.out, "never started"));
  std::string audit_line;
  for (const auto& l : Lines(text.out)) {
    if (l.rfind("audit ", 0) == 0) audit_line = l;
  }
  REQUIRE_FALSE(audit_line.empty());
  std::istringstream fields(audit_line);
  std::string name, position, events, lag;
  fields >> name >> position >> events >> lag;
  CHECK(position == std::to_string(pos[2]));
  CHECK(events == "3");
  CHECK(lag == "2");

  Outcome json = Cli(db.conninfo(), "projections status --json");
  CHECK(json.code == 0);
  REQUIRE(Lines(json.out).size() == 3);  // audit, nodes, tasks
  rapidjson::Document d;
  d.Parse(Lines(json.out)[0].c_str());
  REQUIRE_MESSAGE(d.IsObject(), json.out);
  CHECK(std::string(d["name"].GetString()) == "audit");
  CHECK(d["position"].GetInt64() == pos[2]);
  CHECK(d["events"].GetInt64() == 3);
  CHECK(d["lag_events"].GetInt64() == static_cast<long long>(later.size()));
  CHECK(d["lag_seconds"].GetDouble() >= 0);
  for (std::size_t i = 1; i < 3; ++i) {
    // Not the cursor they keep past what they skipped (2^63-1): the last event they passed.
    rapidjson::Document typed;
    typed.Parse(Lines(json.out)[i].c_str());
    REQUIRE(typed.IsObject());
    INFO("projector " << typed["name"].GetString());
    CHECK(typed["position"].GetInt64() == pos[2]);
    CHECK(typed["events"].GetInt64() == 0);
  }
  std::remove(log.c_str());
}

TEST_CASE("unknown commands and options exit 2 with a message") {
  std::string db = "--db " + Quote(kNoDatabase);
  Outcome cmd = Run(CliBinary(), db + " frobnicate");
  CHECK(cmd.code == 2);
  CHECK(Contains(cmd.err, "unknown command 'frobnicate'"));
  Outcome half = Run(CliBinary(), db + " events");
  CHECK(half.code == 2);
  CHECK(Contains(half.err, "unknown command 'events'"));
  Outcome opt = Run(CliBinary(), db + " events tail --frobnicate");
  CHECK(opt.code == 2);
  CHECK(Contains(opt.err, "unknown option --frobnicate"));
  Outcome valueless = Run(CliBinary(), "events tail --db");
  CHECK(valueless.code == 2);
  CHECK(Contains(valueless.err, "--db needs a value"));
  Outcome nothing = Run(CliBinary(), "");
  CHECK(nothing.code == 2);
  CHECK(Contains(nothing.err, "usage: unidesk"));
  Outcome help = Run(CliBinary(), "--help");
  CHECK(help.code == 0);
  CHECK(Contains(help.out, "usage: unidesk"));

  Outcome server_opt = Run(ServerBinary(), db + " --frobnicate");
  CHECK(server_opt.code == 2);
  CHECK(Contains(server_opt.err, "unknown option --frobnicate"));
  Outcome server_role = Run(ServerBinary(), db + " --roles gateway");
  CHECK(server_role.code == 2);
  CHECK(Contains(server_role.err, "role 'gateway' is not available"));
}

TEST_CASE("projections rebuild of an unknown projection exits 2 naming the known ones") {
  test::TestDatabase db;
  Outcome o = Cli(db.conninfo(), "projections rebuild nosuch");
  CHECK(o.code == 2);
  CHECK(Contains(o.err, "unknown projection 'nosuch'"));
  CHECK(Contains(o.err, "known: audit"));
  CHECK(db.Scalar("SELECT count(*) FROM events") == 0);
  Outcome missing = Cli(db.conninfo(), "projections rebuild");
  CHECK(missing.code == 2);
  CHECK(Contains(missing.err, "usage: unidesk projections rebuild NAME"));
}

TEST_CASE("a database that does not answer: exit 1 with 'cannot reach Postgres'") {
  for (const char* args : {"migrate", "events tail", "events tail --follow", "projections status",
                           "projections rebuild audit"}) {
    CAPTURE(args);
    auto started = std::chrono::steady_clock::now();
    Outcome o = Cli(kNoDatabase, args);
    CHECK(o.code == 1);
    CHECK(Contains(o.err, "cannot reach Postgres"));
    CHECK(std::chrono::steady_clock::now() - started < 15s);
  }
  Outcome server = ServerOnce(kNoDatabase);
  CHECK(server.code == 1);
  CHECK(Contains(server.err, "cannot reach Postgres"));
}
