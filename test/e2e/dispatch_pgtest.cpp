// Dispatch at the protocol level, with a raw client playing the node over a real socket (so the
// test chooses what the node says and when): the assignment arrives; one nobody acknowledges is
// lost and moved; reports of a superseded attempt are rejected, recorded, never applied, and
// answered with `cancel`; malformed and oversized reports are refused; a resent report is
// applied once; an unacknowledged assignment is offered again after a reconnect, and an attempt
// the server no longer runs is cancelled; the retry policy decides on a reported failure.

#include <doctest/doctest.h>

#include "core/json.h"
#include "core/protocol.h"
#include "test/e2e/node_support.h"
#include "test/e2e/raw_client.h"

using namespace unidesk;
using namespace unidesk::test;
using namespace unidesk::test::e2e;
using namespace std::chrono_literals;
namespace proto = core::protocol;

namespace {

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

std::string Submit(const std::string& conninfo, const std::string& name,
                   const std::string& flags = "") {
  Outcome o = Cli(conninfo, "tasks submit --json --name " + name + " " + flags +
                                " --code-repo https://g.example/a.git --code-commit " + kCommit +
                                " --env-repo https://g.example/e.git --env-commit " + kCommit +
                                " -- echo hi");
  if (o.code != 0) throw std::runtime_error("submit failed: " + o.err);
  return core::JsonReader(o.out).Str("task").value_or("");
}

/// Reads until a message of `type` (others are skipped); the parsed message, or nothing.
std::optional<proto::ServerMessage> ReadUntil(RawClient& c, const std::string& type) {
  for (int i = 0; i < 50; ++i) {
    std::string m = c.Read();
    if (m.empty()) return std::nullopt;
    if (core::JsonReader(m).Str("type") != type) continue;
    auto parsed = proto::ParseServerMessage(m);
    if (parsed.ok()) return parsed.value();
  }
  return std::nullopt;
}

std::string Report(const std::string& outbox, std::int64_t seq, const std::string& kind,
                   const std::string& body) {
  return proto::Write(proto::Report{"r" + std::to_string(seq), outbox, seq, kind, body});
}

std::string TaskBody(const std::string& task, int attempt, const std::string& state) {
  proto::TaskReport r;
  r.task = task;
  r.attempt = attempt;
  r.state = state;
  if (state == "succeeded") r.exit_code = 0;
  if (state == "failed") r.exit_code = 1;
  return proto::ToJson(r);
}

long long Count(const std::string& conninfo, const std::string& where) {
  return CountEvents(conninfo, where);
}

}  // namespace

TEST_CASE("dispatch over the session: acknowledge, move, fence, re-offer") {
  TestDatabase db;
  // Default liveness (suspect after 35 s): the raw node needs no heartbeats during the test.
  Server server =
      StartNodeServer(db.conninfo(), {"--schedule-interval", "20ms", "--accept-timeout", "2s"});
  REQUIRE(server.port > 0);
  std::string token = ReadFile(AddNode(db.conninfo(), "raw"));
  token.pop_back();  // the newline
  std::string bearer = "Bearer " + token;
  const std::string outbox = "0b1e2c3d-0000-4000-8000-000000000001";

  auto c = std::make_unique<RawClient>(server.port, bearer);
  REQUIRE(c->status == 101);
  c->Hello("raw", proto::kVersion, "[]", /*docker_ok=*/true);
  REQUIRE(ReadUntil(*c, "welcome"));

  // 1. The assignment arrives with the spec, once (this copy's scheduler hands it to the
  // ingress in-process, and the bus brings it again); nobody acknowledges it: lost after the
  // accept timeout, moved (here to the same node, the only one) as attempt 2.
  std::string id = Submit(db.conninfo(), "moved");
  auto first = ReadUntil(*c, "assign");
  REQUIRE(first);
  const auto& a1 = std::get<proto::Assign>(*first);
  CHECK(a1.task == id);
  CHECK(a1.attempt == 1);
  CHECK(core::JsonReader(a1.spec_json).Raw("command") == R"(["echo","hi"])");
  auto second = ReadUntil(*c, "assign");
  REQUIRE(second);
  CHECK(std::get<proto::Assign>(*second).attempt == 2);
  CHECK(Text(db.conninfo(),
             "SELECT data->>'reason' FROM events WHERE type = 'task.lost' AND "
             "stream_id = 'task-" +
                 id + "'")
            .rfind("the node did not acknowledge the assignment", 0) == 0);

  // 2. A report about attempt 1 is stale: rejected, recorded, never applied, and cancelled.
  c->Send(Report(outbox, 1, "task", TaskBody(id, 1, "succeeded")));
  auto ack = ReadUntil(*c, "ack");
  REQUIRE(ack);
  CHECK(Contains(std::get<proto::Ack>(*ack).rejected, "stale attempt"));
  auto stop = ReadUntil(*c, "cancel");
  REQUIRE(stop);
  CHECK(std::get<proto::Cancel>(*stop).attempt == 1);
  CHECK(Count(db.conninfo(), "type = 'task.succeeded' AND stream_id = 'task-" + id + "'") == 0);
  CHECK(Count(db.conninfo(), "type = 'ingress.rejected' AND data->>'reason' = 'stale_report'") ==
        1);

  // 3. Attempt 2 acknowledged, its output, a malformed and an oversized report, the ending.
  c->Send(Report(outbox, 2, "task", TaskBody(id, 2, "accepted")));
  ack = ReadUntil(*c, "ack");
  REQUIRE(ack);
  CHECK(std::get<proto::Ack>(*ack).rejected.empty());
  c->Send(Report(outbox, 3, "task", R"({"task":")" + id + R"(","attempt":2,"state":"exploded"})"));
  ack = ReadUntil(*c, "ack");
  REQUIRE(ack);
  CHECK(Contains(std::get<proto::Ack>(*ack).rejected, "unknown task state 'exploded'"));
  c->Send(Report(outbox, 4, "log",
                 R"({"task":")" + id + R"(","attempt":2,"seq":1,"stream":"stdout","text":")" +
                     std::string(proto::kMaxLogChunkBytes + 1, 'x') + R"("})"));
  ack = ReadUntil(*c, "ack");
  REQUIRE(ack);
  CHECK(Contains(std::get<proto::Ack>(*ack).rejected, "too long"));
  c->Send(Report(outbox, 5, "log", proto::ToJson(proto::LogChunk{id, 2, 1, "stdout", "hi\n"})));
  REQUIRE(ReadUntil(*c, "ack"));
  std::string done = Report(outbox, 6, "task", TaskBody(id, 2, "succeeded"));
  c->Send(done);
  ack = ReadUntil(*c, "ack");
  REQUIRE(ack);
  CHECK(std::get<proto::Ack>(*ack).rejected.empty());
  // The same report again (a lost ack): applied once, acknowledged again.
  c->Send(done);
  ack = ReadUntil(*c, "ack");
  REQUIRE(ack);
  CHECK(std::get<proto::Ack>(*ack).rejected.empty());
  CHECK(Count(db.conninfo(), "type = 'task.succeeded' AND stream_id = 'task-" + id + "'") == 1);
  CHECK(WaitUntil([&] { return Cli(db.conninfo(), "tasks logs " + id).out == "hi\n"; }, 5s));
  CHECK(Text(db.conninfo(),
             "SELECT count(*) FROM scheduler_placements WHERE task_id = '" + id + "'") == "0");

  // 4. An assignment the node received but did not acknowledge is offered again after it
  // reconnects; an attempt it says it runs that the server does not is cancelled.
  std::string again = Submit(db.conninfo(), "again");
  auto offered = ReadUntil(*c, "assign");
  REQUIRE(offered);
  CHECK(std::get<proto::Assign>(*offered).task == again);
  c.reset();  // the connection drops (no goodbye): the node stays online meanwhile
  c = std::make_unique<RawClient>(server.port, bearer);
  c->Hello("raw", proto::kVersion,
           R"([{"task":"5b0e8c1a-2f4d-4c3b-9a7e-1d2c3b4a5f60","attempt":3}])", true);
  REQUIRE(ReadUntil(*c, "welcome"));
  std::optional<proto::Assign> reoffered;
  std::optional<proto::Cancel> orphan;
  for (int i = 0; i < 4 && !(reoffered && orphan); ++i) {
    std::string m = c->Read();
    auto parsed = proto::ParseServerMessage(m);
    if (!parsed.ok()) continue;
    if (auto* as = std::get_if<proto::Assign>(&parsed.value())) reoffered = *as;
    if (auto* cn = std::get_if<proto::Cancel>(&parsed.value())) orphan = *cn;
  }
  REQUIRE(reoffered);
  CHECK(reoffered->task == again);
  CHECK(reoffered->attempt == 1);
  REQUIRE(orphan);
  CHECK(orphan->task == "5b0e8c1a-2f4d-4c3b-9a7e-1d2c3b4a5f60");
  CHECK(orphan->reason == "the server no longer runs this attempt");
  c->Send(Report(outbox, 7, "task", TaskBody(again, 1, "accepted")));
  REQUIRE(ReadUntil(*c, "ack"));
  CHECK(Count(db.conninfo(), "type = 'task.accepted' AND stream_id = 'task-" + again + "'") == 1);

  // 5. The submission's retry policy decides on a failure the node reports: a task retried on
  // `failed` gets attempt 2 (the report path folds the stream with only the spec's policy).
  Outcome bad = Cli(db.conninfo(),
                    "tasks submit --name x --retry-on sometimes --code-repo "
                    "https://g.example/a.git --code-commit " +
                        kCommit +
                        " --env-repo https://g.example/e.git "
                        "--env-commit " +
                        kCommit + " -- echo hi");
  CHECK(bad.code != 0);
  CHECK(Contains(bad.err, "retry.on"));
  std::string flaky = Submit(db.conninfo(), "flaky", "--max-attempts 2 --retry-on failed");
  auto placed = ReadUntil(*c, "assign");
  REQUIRE(placed);
  CHECK(std::get<proto::Assign>(*placed).task == flaky);
  c->Send(Report(outbox, 8, "task", TaskBody(flaky, 1, "accepted")));
  REQUIRE(ReadUntil(*c, "ack"));
  c->Send(Report(outbox, 9, "task", TaskBody(flaky, 1, "failed")));
  REQUIRE(ReadUntil(*c, "ack"));
  auto retried = ReadUntil(*c, "assign");
  REQUIRE(retried);
  CHECK(std::get<proto::Assign>(*retried).task == flaky);
  CHECK(std::get<proto::Assign>(*retried).attempt == 2);
  CHECK(Count(db.conninfo(), "type = 'task.requeued' AND stream_id = 'task-" + flaky + "'") == 1);
  c.reset();
  StopChild(*server.process, SIGTERM);
}
