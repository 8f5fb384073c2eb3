#pragma once
// The provider protocol (docs/protocol.md): message shapes, limits and close codes, parsed and
// written by pure functions shared by the ingress and the Provider Gateway agent.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/result.h"

namespace unidesk::core::protocol {

constexpr int kVersion = 1;
constexpr const char* kPath = "/v1/provider";
/// Largest frame either side accepts; a larger one closes the session with 1009.
constexpr std::size_t kMaxFrameBytes = 64 * 1024;
constexpr std::size_t kMaxLabels = 64;
constexpr std::size_t kMaxLabelValue = 255;

/// WebSocket close codes the server uses (4000-4999 are the application's own range).
enum class CloseCode : std::uint16_t {
  kNormal = 1000,
  kGoingAway = 1001,          // server stopping, or agent shutting down
  kInvalidPayload = 1007,     // a text frame that is not UTF-8 (Beast checks it)
  kTooBig = 1009,             // a frame over kMaxFrameBytes
  kTryAgainLater = 1013,      // the server cannot record what the node said (Postgres down)
  kBadMessage = 4000,         // not JSON, not an object, missing or ill-typed field
  kProtocolViolation = 4001,  // heartbeat or report before hello, hello twice
  kUnsupportedVersion = 4002,
  kRevoked = 4003,     // the node's token was revoked while connected
  kSuperseded = 4004,  // a newer session of the same node took over
  kRateLimited = 4008,
  kSilent = 4010,  // nothing heard (not even a pong) within the offline window
};

/// What a node declares about its machine.
struct Gpu {
  int index = 0;
  std::string model;
  std::int64_t memory_bytes = 0;
};
struct Resources {
  int cpu_cores = 0;
  std::int64_t memory_bytes = 0;
  std::int64_t disk_bytes = 0;  // of the data dir's file system
  std::int64_t disk_free_bytes = 0;
  std::vector<Gpu> gpus;
  friend bool operator==(const Resources& a, const Resources& b);
};
/// Whether the node can take work: Docker reachable, GPUs healthy. `detail` says why not.
struct Health {
  bool docker_ok = false;
  std::string docker_detail;
  bool gpus_ok = true;
  std::string gpus_detail;
  friend bool operator==(const Health& a, const Health& b) {
    return a.docker_ok == b.docker_ok && a.docker_detail == b.docker_detail &&
           a.gpus_ok == b.gpus_ok && a.gpus_detail == b.gpus_detail;
  }
};

// Provider -> server.
struct Hello {
  std::string id;
  std::string node;
  std::string agent_version;
  int protocol_version = 0;
  Resources resources;
  std::map<std::string, std::string> labels;
  std::vector<std::string> runtimes;
  std::string running_tasks_json = "[]";  // reconciliation input (tasks issue), kept verbatim
  Health health;
};
struct Heartbeat {
  std::string id;
  Health health;
};
/// A sequenced report from the agent's outbox; the server applies each (outbox, seq) once.
struct Report {
  std::string id;
  std::string outbox;  // the outbox's id: sequence numbers restart only with a new outbox
  std::int64_t seq = 0;
  std::string kind;       // "resources", "task" or "log"
  std::string body_json;  // canonical JSON object
};
using ProviderMessage = std::variant<Hello, Heartbeat, Report>;

// Server -> provider.
struct Welcome {
  std::string reply_to;
  std::string session;
  std::string node;
  std::int64_t heartbeat_interval_ms = 15000;
  std::string server_version;
};
struct Ack {
  std::string outbox;
  std::int64_t seq = 0;
  std::string rejected;  // empty when applied; else why it was recorded as rejected
};
struct Error {
  std::string reply_to;
  std::string code;  // stable name, e.g. "unknown_type"
  std::string message;
};
/// Run an attempt of a task (sent on every scheduler assignment, and again after each hello
/// until the node reports on it). The node answers with a `task` report, state `accepted`.
struct Assign {
  std::string task;
  std::int64_t attempt = 0;
  std::string spec_json;  // the task's canonical spec (core/task_spec.h)
  std::vector<int> gpu_indices;
};
/// Stop an attempt: someone cancelled the task, or the server no longer runs that attempt.
struct Cancel {
  std::string task;
  std::int64_t attempt = 0;
  std::string reason;
};
using ServerMessage = std::variant<Welcome, Ack, Error, Assign, Cancel>;

/// Body of a report of kind "task": where an attempt is. `state` is accepted, preparing,
/// running, succeeded, failed, timed_out or cancelled; the other fields fill in as it goes.
struct TaskReport {
  std::string task;
  std::int64_t attempt = 0;
  std::string state;
  std::string phase;    // preparing: "git" or "build"
  std::string failure;  // failed/timed_out/cancelled: exit, git, build, start, timeout, ...
  std::string reason;
  std::int64_t exit_code = -1;
  std::string image;
  bool code_fetched = false, env_fetched = false, image_built = false;
  std::int64_t git_ms = 0, build_ms = 0, run_ms = 0, prepare_ms = 0;
};
/// Body of a report of kind "log": the next piece of an attempt's output, in order per attempt.
struct LogChunk {
  std::string task;
  std::int64_t attempt = 0;
  std::int64_t seq = 0;  // 1, 2, ... per attempt
  std::string stream;    // "build", "stdout" or "stderr"
  std::string text;      // at most kMaxLogChunkBytes
};
/// A log chunk's text, so that the escaped report stays far below kMaxFrameBytes.
constexpr std::size_t kMaxLogChunkBytes = 8 * 1024;

enum class ParseError { kInvalidJson, kBadMessage, kUnknownType };
const char* ParseErrorName(ParseError e);
using ParseFailure = TypedError<ParseError>;

/// Parses one text frame from a provider. kUnknownType carries the type name as the message.
Result<ProviderMessage, ParseFailure> ParseProviderMessage(std::string_view text);
Result<ServerMessage, ParseFailure> ParseServerMessage(std::string_view text);

std::string Write(const Hello& m);
std::string Write(const Heartbeat& m);
std::string Write(const Report& m);
std::string Write(const Welcome& m);
std::string Write(const Ack& m);
std::string Write(const Error& m);
std::string Write(const Assign& m);
std::string Write(const Cancel& m);
/// Report bodies (canonical JSON objects) and their parsers.
std::string ToJson(const TaskReport& r);
std::string ToJson(const LogChunk& c);
Result<TaskReport, ParseFailure> ParseTaskReport(std::string_view json);
Result<LogChunk, ParseFailure> ParseLogChunk(std::string_view json);
/// The states a task report may carry, in lifecycle order.
bool IsTaskReportState(std::string_view state);

/// Canonical JSON of the parts that events and read models store.
std::string ToJson(const Resources& r);
std::string ToJson(const Health& h);
std::string ToJson(const std::map<std::string, std::string>& labels);
std::string ToJson(const std::vector<std::string>& strings);
/// Parses a resources object (used for report bodies and the agent's override file).
Result<Resources, ParseFailure> ParseResources(std::string_view json);

/// True for a node name: 1-63 of [a-z0-9-_.], starting with a letter or digit.
bool IsValidNodeName(std::string_view name);
/// True for a label key: 1-63 of [A-Za-z0-9-_./].
bool IsValidLabelKey(std::string_view key);

}  // namespace unidesk::core::protocol
