// The provider protocol's pure parse/write functions.

#include "core/protocol.h"

#include <doctest/doctest.h>

using namespace unidesk::core::protocol;

TEST_CASE("hello round-trips and is validated field by field") {
  Hello h;
  h.id = "1";
  h.node = "gpu-1";
  h.agent_version = "0.1.0";
  h.protocol_version = kVersion;
  h.resources.cpu_cores = 8;
  h.resources.gpus.push_back({0, "A100", 42});
  h.labels = {{"site", "lab"}};
  h.runtimes = {"docker"};
  auto parsed = ParseProviderMessage(Write(h));
  REQUIRE(parsed.ok());
  const auto& back = std::get<Hello>(parsed.value());
  CHECK(back.node == "gpu-1");
  CHECK(back.resources == h.resources);
  CHECK(back.labels.at("site") == "lab");

  CHECK(ParseProviderMessage("{nope").error().code == ParseError::kInvalidJson);
  CHECK(ParseProviderMessage("[1]").error().code == ParseError::kBadMessage);
  CHECK(ParseProviderMessage("{\"id\":\"x\"}").error().message == "missing field 'type'");
  auto unknown = ParseProviderMessage("{\"type\":\"warp\"}");
  CHECK(unknown.error().code == ParseError::kUnknownType);
  CHECK(unknown.error().message == "warp");
  CHECK(
      ParseProviderMessage("{\"type\":\"heartbeat\",\"health\":{\"docker_ok\":1,\"gpus_ok\":true}}")
          .error()
          .message == "field 'docker_ok' must be true or false");
  CHECK(ParseProviderMessage("{\"type\":\"report\",\"outbox\":\"o\",\"seq\":0,\"kind\":\"k\","
                             "\"body\":{}}")
            .error()
            .message == "field 'seq' is out of range");
  std::string bad_label = Write(h);
  bad_label.replace(bad_label.find("\"site\""), 6, "\"si te\"");
  CHECK(ParseProviderMessage(bad_label).error().code == ParseError::kBadMessage);
}

TEST_CASE("server messages and names") {
  auto w = ParseServerMessage(Write(Welcome{"1", "s", "n", 15000, "0.1.0"}));
  REQUIRE(w.ok());
  CHECK(std::get<Welcome>(w.value()).heartbeat_interval_ms == 15000);
  auto a = ParseServerMessage(Write(Ack{"o", 7, "why"}));
  CHECK(std::get<Ack>(a.value()).rejected == "why");
  CHECK(IsValidNodeName("gpu-1.lab_2"));
  CHECK(!IsValidNodeName("-x"));
  CHECK(!IsValidNodeName("GPU"));
  CHECK(!IsValidNodeName(std::string(64, 'a')));
  CHECK(IsValidLabelKey("k8s.io/zone"));
  CHECK(!IsValidLabelKey("a b"));
}

TEST_CASE("assign and cancel round-trip; task and log reports parse strictly") {
  auto a = ParseServerMessage(Write(Assign{"t-1", 2, R"({"command":["true"]})", {0, 3}}));
  REQUIRE(a.ok());
  const auto& as = std::get<Assign>(a.value());
  CHECK(as.task == "t-1");
  CHECK(as.attempt == 2);
  CHECK(as.spec_json == R"({"command":["true"]})");
  CHECK(as.gpu_indices == std::vector<int>{0, 3});
  auto c = ParseServerMessage(Write(Cancel{"t-1", 2, "no longer needed"}));
  REQUIRE(c.ok());
  CHECK(std::get<Cancel>(c.value()).reason == "no longer needed");
  CHECK_FALSE(
      ParseServerMessage(R"({"type":"assign","task":"t","attempt":0,"spec":{},"gpu_indices":[]})")
          .ok());

  TaskReport r;
  r.task = "t-1";
  r.attempt = 1;
  r.state = "running";
  r.image_built = true;
  r.prepare_ms = 12;
  auto back = ParseTaskReport(ToJson(r));
  REQUIRE(back.ok());
  CHECK(back.value().image_built);
  CHECK(back.value().prepare_ms == 12);
  CHECK(back.value().exit_code == -1);
  CHECK_FALSE(ParseTaskReport(R"({"task":"t","attempt":1,"state":"exploded"})").ok());
  CHECK_FALSE(ParseTaskReport(R"({"task":"t","attempt":0,"state":"running"})").ok());

  LogChunk chunk{"t-1", 1, 7, "stdout", "hello\n"};
  auto lc = ParseLogChunk(ToJson(chunk));
  REQUIRE(lc.ok());
  CHECK(lc.value().seq == 7);
  CHECK(lc.value().text == "hello\n");
  CHECK_FALSE(ParseLogChunk(R"({"task":"t","attempt":1,"seq":1,"stream":"tty","text":""})").ok());
  std::string big(kMaxLogChunkBytes + 1, 'x');
  CHECK_FALSE(ParseLogChunk(ToJson(LogChunk{"t", 1, 1, "stdout", big})).ok());
}
