#pragma once
// A task as submitted: the five pins of code and environment, the command, resources,
// constraints and policies. Parsing validates every field and names the first bad one; the
// canonical JSON form is what `task.submitted` carries. Pure: no I/O.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace unidesk::core {

/// What a task needs of a node. CPU in thousandths of a core (0.5 cores = 500).
struct TaskResources {
  std::int64_t cpu_millis = 1000;
  std::int64_t memory_bytes = 512LL << 20;
  int gpus = 0;
  friend bool operator==(const TaskResources& a, const TaskResources& b) {
    return a.cpu_millis == b.cpu_millis && a.memory_bytes == b.memory_bytes && a.gpus == b.gpus;
  }
};

/// Which endings of an attempt start another, and how many attempts there may be in all.
struct RetryPolicy {
  int max_attempts = 3;
  bool on_lost = true;        // the node went away mid-task
  bool on_failed = false;     // non-zero exit, failed git/build
  bool on_timed_out = false;  // exceeded `timeout_s`
};

struct TaskSpec {
  std::string name;  // optional, for people
  std::string code_repo_url;
  std::string code_commit_id;  // 40 lowercase hex digits
  std::string env_repo_url;
  std::string env_commit_id;
  std::string dockerfile_path;  // relative, normalised ("./a//b" -> "a/b")
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  TaskResources resources;
  std::map<std::string, std::string> labels;  // the node must carry each (key = value)
  int priority = 0;                           // higher first; -1000..1000
  std::int64_t timeout_s = 3600;
  RetryPolicy retry;
};

/// Operator limits on what may be submitted.
struct TaskLimits {
  std::int64_t max_cpu_millis = 256'000;
  std::int64_t max_memory_bytes = 1LL << 40;
  int max_gpus = 16;
  std::int64_t max_timeout_s = 7 * 24 * 3600;
  int max_attempts = 10;
  bool allow_file_urls = false;  // file:// repositories (single-machine setups, tests)
};

/// The first thing wrong with a submission: the field's JSON path and why.
struct FieldError {
  std::string field;  // e.g. "resources.gpus", "command[2]", "" for the document itself
  std::string message;
};

/// Parses and validates a submission (a JSON object). Unknown fields are refused.
Result<TaskSpec, FieldError> ParseTaskSpec(std::string_view json, const TaskLimits& limits);

/// The canonical JSON object of `spec` (every field, fixed order): the data of `task.submitted`.
std::string ToJson(const TaskSpec& spec);

/// The retry policy of a stored spec, or of any object with the spec's `retry` field (the rest
/// is ignored); the default where there is none or it does not parse. For readers of the log,
/// which trust what was validated on the way in.
RetryPolicy RetryPolicyOf(std::string_view spec_json);

// Single-field checks, also used by the CLI before it sends anything.
/// nullopt when `url` is an accepted repository URL; else why not.
std::optional<std::string> CheckRepoUrl(std::string_view url, bool allow_file_urls);
/// nullopt when `id` is a full commit id (40 hex digits); else why not.
std::optional<std::string> CheckCommitId(std::string_view id);
/// The normalised relative path, or why it is refused (field "dockerfile_path").
Result<std::string, FieldError> NormaliseDockerfilePath(std::string_view path);

}  // namespace unidesk::core
