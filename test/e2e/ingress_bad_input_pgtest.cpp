// Bad input at the provider ingress, sent over real sockets by a raw WebSocket client: each gets
// a clear answer (HTTP status, error frame, close code) and an ingress.rejected event, and a real
// provider connected to the same server stays online throughout.

#include <doctest/doctest.h>

#include <thread>

#include "core/protocol.h"
#include "test/e2e/node_support.h"
#include "test/e2e/raw_client.h"

using namespace unidesk;
using namespace unidesk::test;
using namespace unidesk::test::e2e;
using namespace std::chrono_literals;
namespace proto = core::protocol;

namespace {

long long Rejected(const std::string& conninfo, const std::string& reason) {
  return CountEvents(conninfo, "type = 'ingress.rejected' AND data->>'reason' = '" + reason + "'");
}

bool WaitRejected(const std::string& conninfo, const std::string& reason, long long n = 1) {
  return WaitUntil([&] { return Rejected(conninfo, reason) >= n; }, 5s);
}

}  // namespace

TEST_CASE("bad input at the ingress: clear errors, recorded, everyone else served") {
  TestDatabase db;
  std::string good = AddNode(db.conninfo(), "good");
  std::string token = ReadFile(AddNode(db.conninfo(), "raw")).substr(0, 47);
  std::string revoked = ReadFile(AddNode(db.conninfo(), "gone")).substr(0, 47);
  REQUIRE(Cli(db.conninfo(), "nodes revoke gone").code == 0);
  auto server = StartNodeServer(db.conninfo(), {"--messages-per-s", "20"});
  auto provider = StartProvider(server.port, "good", good);
  REQUIRE(WaitForStatus(db.conninfo(), "good", "online"));
  std::string bearer = "Bearer " + token;

  SUBCASE("tokens: missing, malformed, unknown, revoked") {
    // curl sends the upgrade request and shows the refusal as it is (status line and body).
    auto upgrade = [&](const std::string& authorization) {
      std::string out;
      Shell(
          "curl -s -i -H 'Connection: Upgrade' -H 'Upgrade: websocket' "
          "-H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' " +
              (authorization.empty() ? "" : "-H " + ShellQuote("Authorization: " + authorization)) +
              " http://127.0.0.1:" + std::to_string(server.port) + proto::kPath,
          &out);
      return out;
    };
    std::string missing = upgrade("");
    CHECK(Contains(missing, "401 Unauthorized"));
    CHECK(Contains(missing, "token_missing"));
    std::string malformed = upgrade("Bearer not-a-token");
    CHECK(Contains(malformed, "401 Unauthorized"));
    CHECK(Contains(malformed, "token_malformed"));
    CHECK(Contains(upgrade("Basic dXNlcjpwYXNz"), "401 Unauthorized"));
    std::string unknown = upgrade("Bearer udn_" + std::string(43, 'A'));
    CHECK(Contains(unknown, "401 Unauthorized"));
    CHECK(Contains(unknown, "token_unknown"));
    std::string gone = upgrade("Bearer " + revoked);
    CHECK(Contains(gone, "403 Forbidden"));
    CHECK(Contains(gone, "token_revoked"));
    RawClient refused(server.port, "");  // a real WebSocket client is refused the same way
    CHECK(refused.status != 101);
    CHECK(WaitRejected(db.conninfo(), "token_missing"));
    CHECK(WaitRejected(db.conninfo(), "token_malformed", 2));
    CHECK(WaitRejected(db.conninfo(), "token_unknown"));
    CHECK(WaitRejected(db.conninfo(), "token_revoked"));
    // What a rejection records: who, from where, and the answer given.
    CHECK(Text(db.conninfo(),
               "SELECT data->>'close_code' FROM events WHERE type = "
               "'ingress.rejected' AND data->>'reason' = 'token_revoked'") == "403");
    CHECK(Contains(Text(db.conninfo(),
                        "SELECT data->>'remote' FROM events WHERE type = "
                        "'ingress.rejected' LIMIT 1"),
                   "127.0.0.1:"));
  }
  SUBCASE("a frame over the limit closes with 1009") {
    RawClient c(server.port, bearer);
    REQUIRE(c.status == 101);
    c.Hello("raw");
    CHECK(Contains(c.Read(), "welcome"));
    c.Send(std::string(proto::kMaxFrameBytes + 1, 'x'));
    CHECK(c.ReadUntilClosed() == 1009);
    CHECK(WaitRejected(db.conninfo(), "frame_too_big"));
  }
  SUBCASE("invalid UTF-8 closes with 1007") {
    RawClient c(server.port, bearer);
    c.Send(std::string("{\"type\":\"hello\",\"x\":\"\xff\xfe\"}"));
    CHECK(c.ReadUntilClosed() == 1007);
    CHECK(WaitRejected(db.conninfo(), "invalid_utf8"));
  }
  SUBCASE("invalid JSON gets an error frame and 4000") {
    RawClient c(server.port, bearer);
    c.Send("{not json");
    std::string frames;
    CHECK(c.ReadUntilClosed(&frames) == 4000);
    CHECK(Contains(frames, "\"code\":\"invalid_json\""));
    CHECK(WaitRejected(db.conninfo(), "invalid_json"));
  }
  SUBCASE("a binary frame is refused") {
    RawClient c(server.port, bearer);
    c.Send("{}", true);
    CHECK(c.ReadUntilClosed() == 4000);
    CHECK(WaitRejected(db.conninfo(), "binary_frame"));
  }
  SUBCASE("an unknown message type is answered and the session goes on") {
    RawClient c(server.port, bearer);
    c.Hello("raw");
    CHECK(Contains(c.Read(), "welcome"));
    c.Send("{\"type\":\"teleport\",\"id\":\"x\"}");
    std::string answer = c.Read();
    CHECK(Contains(answer, "\"code\":\"unknown_type\""));
    CHECK(Contains(answer, "teleport"));
    c.Send(proto::Write(proto::Heartbeat{"hb", {}}));
    c.Send(
        "{\"type\":\"report\",\"id\":\"r\",\"outbox\":\"o\",\"seq\":1,\"kind\":\"resources\","
        "\"body\":{\"cpu_cores\":3,\"memory_bytes\":1,\"disk_bytes\":1,\"disk_free_bytes\":1,"
        "\"gpus\":[]}}");
    CHECK(Contains(c.Read(), "\"type\":\"ack\""));  // still served
    CHECK(WaitRejected(db.conninfo(), "unknown_type"));
  }
  SUBCASE("a heartbeat before hello closes with 4001") {
    RawClient c(server.port, bearer);
    c.Send(proto::Write(proto::Heartbeat{"hb", {}}));
    CHECK(c.ReadUntilClosed() == 4001);
    CHECK(WaitRejected(db.conninfo(), "before_hello"));
  }
  SUBCASE("hello twice closes with 4001") {
    RawClient c(server.port, bearer);
    c.Hello("raw");
    CHECK(Contains(c.Read(), "welcome"));
    c.Hello("raw");
    CHECK(c.ReadUntilClosed() == 4001);
    CHECK(WaitRejected(db.conninfo(), "hello_twice"));
  }
  SUBCASE("a protocol version the server does not speak closes with 4002") {
    RawClient c(server.port, bearer);
    c.Hello("raw", 99);
    std::string frames;
    CHECK(c.ReadUntilClosed(&frames) == 4002);
    CHECK(Contains(frames, "unsupported_protocol"));
    CHECK(WaitRejected(db.conninfo(), "unsupported_protocol"));
  }
  SUBCASE("a hello naming another node closes with 4000") {
    RawClient c(server.port, bearer);
    c.Hello("good");
    CHECK(c.ReadUntilClosed() == 4000);
    CHECK(WaitRejected(db.conninfo(), "node_mismatch"));
  }
  SUBCASE("a flood beyond the rate limit closes with 4008") {
    RawClient c(server.port, bearer);
    c.Hello("raw");
    CHECK(Contains(c.Read(), "welcome"));
    for (int i = 0; i < 300; ++i) c.Send(proto::Write(proto::Heartbeat{"hb", {}}));
    CHECK(c.ReadUntilClosed() == 4008);
    CHECK(WaitRejected(db.conninfo(), "rate_limited"));
  }
  SUBCASE("plain HTTP: health, readiness, wrong path, no upgrade") {
    std::string out;
    Shell("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" + std::to_string(server.port) +
              "/readyz",
          &out);
    CHECK(out == "200");
    Shell("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" + std::to_string(server.port) +
              "/nowhere",
          &out);
    CHECK(out == "404");
    Shell("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" + std::to_string(server.port) +
              "/v1/provider",
          &out);
    CHECK(out == "426");
  }

  // The real provider was served throughout.
  std::this_thread::sleep_for(300ms);
  CHECK(NodeStatus(db.conninfo(), "good") == "online");
  CHECK(provider->Running());
  CHECK(CountEvents(db.conninfo(), "stream_id = 'node-good' AND type = 'node.disconnected'") == 0);
}
