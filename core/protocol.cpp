#include "core/protocol.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "core/json.h"

namespace unidesk::core::protocol {

namespace {

using Value = rapidjson::Value;

/// Thrown inside the parsers only; turned into a ParseFailure at their boundary.
struct Bad {
  ParseError code;
  std::string message;
};

[[noreturn]] void Fail(std::string message) { throw Bad{ParseError::kBadMessage, message}; }

const Value& Field(const Value& o, const char* key) {
  auto it = o.FindMember(key);
  if (it == o.MemberEnd()) Fail(std::string("missing field '") + key + "'");
  return it->value;
}

std::string Str(const Value& o, const char* key, std::size_t max = 256) {
  const Value& v = Field(o, key);
  if (!v.IsString()) Fail(std::string("field '") + key + "' must be a string");
  if (v.GetStringLength() > max) Fail(std::string("field '") + key + "' is too long");
  return {v.GetString(), v.GetStringLength()};
}

std::string OptStr(const Value& o, const char* key, std::size_t max = 1024) {
  if (!o.HasMember(key)) return "";
  return Str(o, key, max);
}

std::int64_t Int(const Value& o, const char* key, std::int64_t min = 0) {
  const Value& v = Field(o, key);
  if (!v.IsInt64()) Fail(std::string("field '") + key + "' must be an integer");
  if (v.GetInt64() < min) Fail(std::string("field '") + key + "' is out of range");
  return v.GetInt64();
}

bool Bool(const Value& o, const char* key) {
  const Value& v = Field(o, key);
  if (!v.IsBool()) Fail(std::string("field '") + key + "' must be true or false");
  return v.GetBool();
}

const Value& Obj(const Value& o, const char* key) {
  const Value& v = Field(o, key);
  if (!v.IsObject()) Fail(std::string("field '") + key + "' must be an object");
  return v;
}

const Value& Arr(const Value& o, const char* key) {
  const Value& v = Field(o, key);
  if (!v.IsArray()) Fail(std::string("field '") + key + "' must be an array");
  return v;
}

std::string Serialize(const Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return {buf.GetString(), buf.GetSize()};
}

Resources ReadResources(const Value& o) {
  Resources r;
  r.cpu_cores = static_cast<int>(Int(o, "cpu_cores"));
  r.memory_bytes = Int(o, "memory_bytes");
  r.disk_bytes = Int(o, "disk_bytes");
  r.disk_free_bytes = Int(o, "disk_free_bytes");
  const Value& gpus = Arr(o, "gpus");
  if (gpus.Size() > 64) Fail("too many gpus");
  for (const Value& g : gpus.GetArray()) {
    if (!g.IsObject()) Fail("each gpu must be an object");
    r.gpus.push_back({static_cast<int>(Int(g, "index")), Str(g, "model"), Int(g, "memory_bytes")});
  }
  return r;
}

Health ReadHealth(const Value& o) {
  Health h;
  h.docker_ok = Bool(o, "docker_ok");
  h.docker_detail = OptStr(o, "docker_detail");
  h.gpus_ok = Bool(o, "gpus_ok");
  h.gpus_detail = OptStr(o, "gpus_detail");
  return h;
}

std::map<std::string, std::string> ReadLabels(const Value& o) {
  if (o.MemberCount() > kMaxLabels) Fail("too many labels");
  std::map<std::string, std::string> out;
  for (auto it = o.MemberBegin(); it != o.MemberEnd(); ++it) {
    std::string key(it->name.GetString(), it->name.GetStringLength());
    if (!IsValidLabelKey(key)) Fail("bad label key '" + key.substr(0, 64) + "'");
    if (!it->value.IsString() || it->value.GetStringLength() > kMaxLabelValue) {
      Fail("label '" + key + "' must be a string of at most 255 bytes");
    }
    out[key] = it->value.GetString();
  }
  return out;
}

rapidjson::Document ParseObject(std::string_view text) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (doc.HasParseError()) {
    throw Bad{ParseError::kInvalidJson, std::string("invalid JSON at byte ") +
                                            std::to_string(doc.GetErrorOffset()) + ": " +
                                            rapidjson::GetParseError_En(doc.GetParseError())};
  }
  if (!doc.IsObject()) Fail("a message must be a JSON object");
  return doc;
}

ProviderMessage ReadProvider(const Value& doc) {
  std::string type = Str(doc, "type", 64);
  std::string id = OptStr(doc, "id", 64);
  if (type == "hello") {
    Hello h;
    h.id = id;
    h.node = Str(doc, "node", 63);
    h.agent_version = Str(doc, "agent_version", 64);
    h.protocol_version = static_cast<int>(Int(doc, "protocol_version"));
    h.resources = ReadResources(Obj(doc, "resources"));
    h.labels = ReadLabels(Obj(doc, "labels"));
    for (const Value& r : Arr(doc, "runtimes").GetArray()) {
      if (!r.IsString()) Fail("runtimes must be strings");
      h.runtimes.emplace_back(r.GetString());
    }
    if (doc.HasMember("running_tasks")) h.running_tasks_json = Serialize(Arr(doc, "running_tasks"));
    h.health = ReadHealth(Obj(doc, "health"));
    return h;
  }
  if (type == "heartbeat") return Heartbeat{id, ReadHealth(Obj(doc, "health"))};
  if (type == "report") {
    Report r;
    r.id = id;
    r.outbox = Str(doc, "outbox", 64);
    r.seq = Int(doc, "seq", 1);
    r.kind = Str(doc, "kind", 64);
    r.body_json = Serialize(Obj(doc, "body"));
    return r;
  }
  throw Bad{ParseError::kUnknownType, type};
}

ServerMessage ReadServer(const Value& doc) {
  std::string type = Str(doc, "type", 64);
  if (type == "welcome") {
    return Welcome{OptStr(doc, "reply_to"), Str(doc, "session"), Str(doc, "node"),
                   Int(doc, "heartbeat_interval_ms", 1), OptStr(doc, "server_version")};
  }
  if (type == "ack") return Ack{Str(doc, "outbox"), Int(doc, "seq", 1), OptStr(doc, "rejected")};
  if (type == "error")
    return Error{OptStr(doc, "reply_to"), Str(doc, "code"), OptStr(doc, "message")};
  if (type == "assign") {
    Assign a{Str(doc, "task", 64), Int(doc, "attempt", 1), Serialize(Obj(doc, "spec")), {}};
    for (const Value& g : Arr(doc, "gpu_indices").GetArray()) {
      if (!g.IsInt()) Fail("gpu_indices must be integers");
      a.gpu_indices.push_back(g.GetInt());
    }
    return a;
  }
  if (type == "cancel") {
    return Cancel{Str(doc, "task", 64), Int(doc, "attempt", 1), OptStr(doc, "reason")};
  }
  throw Bad{ParseError::kUnknownType, type};
}

std::int64_t OptInt(const Value& o, const char* key, std::int64_t fallback, std::int64_t min) {
  return o.HasMember(key) ? Int(o, key, min) : fallback;
}

bool OptBool(const Value& o, const char* key) { return o.HasMember(key) && Bool(o, key); }

TaskReport ReadTaskReport(const Value& o) {
  TaskReport r;
  r.task = Str(o, "task", 64);
  r.attempt = Int(o, "attempt", 1);
  r.state = Str(o, "state", 32);
  if (!IsTaskReportState(r.state)) Fail("unknown task state '" + r.state + "'");
  r.phase = OptStr(o, "phase", 32);
  r.failure = OptStr(o, "failure", 32);
  r.reason = OptStr(o, "reason", 4096);
  r.exit_code = OptInt(o, "exit_code", -1, -1);
  r.image = OptStr(o, "image", 256);
  r.code_fetched = OptBool(o, "code_fetched");
  r.env_fetched = OptBool(o, "env_fetched");
  r.image_built = OptBool(o, "image_built");
  r.git_ms = OptInt(o, "git_ms", 0, 0);
  r.build_ms = OptInt(o, "build_ms", 0, 0);
  r.run_ms = OptInt(o, "run_ms", 0, 0);
  r.prepare_ms = OptInt(o, "prepare_ms", 0, 0);
  return r;
}

LogChunk ReadLogChunk(const Value& o) {
  LogChunk c;
  c.task = Str(o, "task", 64);
  c.attempt = Int(o, "attempt", 1);
  c.seq = Int(o, "seq", 1);
  c.stream = Str(o, "stream", 16);
  if (c.stream != "build" && c.stream != "stdout" && c.stream != "stderr") {
    Fail("stream must be build, stdout or stderr");
  }
  c.text = Str(o, "text", kMaxLogChunkBytes);
  return c;
}

template <class T, class Reader>
Result<T, ParseFailure> Guarded(std::string_view text, Reader read) {
  try {
    rapidjson::Document doc = ParseObject(text);
    return read(doc);
  } catch (const Bad& b) {
    return ParseFailure{b.code, b.message};
  }
}

}  // namespace

bool operator==(const Resources& a, const Resources& b) { return ToJson(a) == ToJson(b); }

const char* ParseErrorName(ParseError e) {
  switch (e) {
    case ParseError::kInvalidJson:
      return "invalid_json";
    case ParseError::kBadMessage:
      return "bad_message";
    case ParseError::kUnknownType:
      return "unknown_type";
  }
  return "unknown";
}

Result<ProviderMessage, ParseFailure> ParseProviderMessage(std::string_view text) {
  return Guarded<ProviderMessage>(text, [](const Value& d) { return ReadProvider(d); });
}

Result<ServerMessage, ParseFailure> ParseServerMessage(std::string_view text) {
  return Guarded<ServerMessage>(text, [](const Value& d) { return ReadServer(d); });
}

Result<TaskReport, ParseFailure> ParseTaskReport(std::string_view json) {
  return Guarded<TaskReport>(json, [](const Value& d) { return ReadTaskReport(d); });
}

Result<LogChunk, ParseFailure> ParseLogChunk(std::string_view json) {
  return Guarded<LogChunk>(json, [](const Value& d) { return ReadLogChunk(d); });
}

bool IsTaskReportState(std::string_view state) {
  for (const char* s : {"accepted", "preparing", "running", "succeeded", "failed", "timed_out",
                        "cancelled", "lost"}) {
    if (state == s) return true;
  }
  return false;
}

std::string ToJson(const TaskReport& r) {
  return JsonObject()
      .Str("task", r.task)
      .Int("attempt", r.attempt)
      .Str("state", r.state)
      .Str("phase", r.phase)
      .Str("failure", r.failure)
      .Str("reason", r.reason)
      .Int("exit_code", r.exit_code)
      .Str("image", r.image)
      .Bool("code_fetched", r.code_fetched)
      .Bool("env_fetched", r.env_fetched)
      .Bool("image_built", r.image_built)
      .Int("git_ms", r.git_ms)
      .Int("build_ms", r.build_ms)
      .Int("run_ms", r.run_ms)
      .Int("prepare_ms", r.prepare_ms)
      .Done();
}

std::string ToJson(const LogChunk& c) {
  return JsonObject()
      .Str("task", c.task)
      .Int("attempt", c.attempt)
      .Int("seq", c.seq)
      .Str("stream", c.stream)
      .Str("text", c.text)
      .Done();
}

Result<Resources, ParseFailure> ParseResources(std::string_view json) {
  return Guarded<Resources>(json, [](const Value& d) { return ReadResources(d); });
}

std::string ToJson(const Resources& r) {
  std::string gpus = "[";
  for (std::size_t i = 0; i < r.gpus.size(); ++i) {
    if (i) gpus += ",";
    gpus += JsonObject()
                .Int("index", r.gpus[i].index)
                .Str("model", r.gpus[i].model)
                .Int("memory_bytes", r.gpus[i].memory_bytes)
                .Done();
  }
  gpus += "]";
  return JsonObject()
      .Int("cpu_cores", r.cpu_cores)
      .Int("memory_bytes", r.memory_bytes)
      .Int("disk_bytes", r.disk_bytes)
      .Int("disk_free_bytes", r.disk_free_bytes)
      .Raw("gpus", gpus)
      .Done();
}

std::string ToJson(const Health& h) {
  return JsonObject()
      .Bool("docker_ok", h.docker_ok)
      .Str("docker_detail", h.docker_detail)
      .Bool("gpus_ok", h.gpus_ok)
      .Str("gpus_detail", h.gpus_detail)
      .Done();
}

std::string ToJson(const std::map<std::string, std::string>& labels) {
  JsonObject o;
  for (const auto& [k, v] : labels) o.Str(k, v);
  return o.Done();
}

std::string ToJson(const std::vector<std::string>& strings) {
  std::string out = "[";
  for (std::size_t i = 0; i < strings.size(); ++i) {
    if (i) out += ",";
    out += JsonQuote(strings[i]);
  }
  return out + "]";
}

std::string Write(const Hello& m) {
  return JsonObject()
      .Str("type", "hello")
      .Str("id", m.id)
      .Str("node", m.node)
      .Str("agent_version", m.agent_version)
      .Int("protocol_version", m.protocol_version)
      .Raw("resources", ToJson(m.resources))
      .Raw("labels", ToJson(m.labels))
      .Raw("runtimes", ToJson(m.runtimes))
      .Raw("running_tasks", m.running_tasks_json)
      .Raw("health", ToJson(m.health))
      .Done();
}

std::string Write(const Heartbeat& m) {
  return JsonObject()
      .Str("type", "heartbeat")
      .Str("id", m.id)
      .Raw("health", ToJson(m.health))
      .Done();
}

std::string Write(const Report& m) {
  return JsonObject()
      .Str("type", "report")
      .Str("id", m.id)
      .Str("outbox", m.outbox)
      .Int("seq", m.seq)
      .Str("kind", m.kind)
      .Raw("body", m.body_json)
      .Done();
}

std::string Write(const Welcome& m) {
  return JsonObject()
      .Str("type", "welcome")
      .Str("reply_to", m.reply_to)
      .Str("session", m.session)
      .Str("node", m.node)
      .Int("heartbeat_interval_ms", m.heartbeat_interval_ms)
      .Int("protocol_version", kVersion)
      .Str("server_version", m.server_version)
      .Done();
}

std::string Write(const Ack& m) {
  JsonObject o;
  o.Str("type", "ack").Str("outbox", m.outbox).Int("seq", m.seq);
  if (!m.rejected.empty()) o.Str("rejected", m.rejected);
  return o.Done();
}

std::string Write(const Error& m) {
  return JsonObject()
      .Str("type", "error")
      .Str("reply_to", m.reply_to)
      .Str("code", m.code)
      .Str("message", m.message)
      .Done();
}

std::string Write(const Assign& m) {
  std::string gpus = "[";
  for (std::size_t i = 0; i < m.gpu_indices.size(); ++i) {
    gpus += (i ? "," : "") + std::to_string(m.gpu_indices[i]);
  }
  return JsonObject()
      .Str("type", "assign")
      .Str("task", m.task)
      .Int("attempt", m.attempt)
      .Raw("spec", m.spec_json)
      .Raw("gpu_indices", gpus + "]")
      .Done();
}

std::string Write(const Cancel& m) {
  return JsonObject()
      .Str("type", "cancel")
      .Str("task", m.task)
      .Int("attempt", m.attempt)
      .Str("reason", m.reason)
      .Done();
}

bool IsValidNodeName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '-' && c != '_' && c != '.'))) return false;
  }
  return true;
}

bool IsValidLabelKey(std::string_view key) {
  if (key.empty() || key.size() > 63) return false;
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '/';
    if (!ok) return false;
  }
  return true;
}

}  // namespace unidesk::core::protocol
