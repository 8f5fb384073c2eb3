#include "core/task_spec.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <cmath>
#include <limits>
#include <set>

#include "core/json.h"
#include "core/protocol.h"

namespace unidesk::core {

namespace {

constexpr std::size_t kMaxUrl = 2048;
constexpr std::size_t kMaxArgs = 1024;
constexpr std::size_t kMaxArg = 8192;
constexpr std::size_t kMaxEnv = 256;
constexpr std::size_t kMaxEnvValue = 8192;
constexpr std::size_t kMaxName = 200;
constexpr std::size_t kMaxPath = 1024;

using Spec = Result<TaskSpec, FieldError>;
using Value = rapidjson::Value;

FieldError Bad(std::string field, std::string message) {
  return FieldError{std::move(field), std::move(message)};
}

bool HasControl(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool IsEnvName(std::string_view s) {
  if (s.empty() || s.size() > 255 || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

std::optional<FieldError> OnlyKnown(const Value& o, const std::string& prefix,
                                    const std::set<std::string>& known) {
  for (auto it = o.MemberBegin(); it != o.MemberEnd(); ++it) {
    std::string key(it->name.GetString(), it->name.GetStringLength());
    if (!known.count(key)) {
      std::string all;
      for (const auto& k : known) all += (all.empty() ? "" : ", ") + k;
      return Bad(prefix + key, "unknown field (known: " + all + ")");
    }
  }
  return std::nullopt;
}

/// A required or optional string member; error when present with another type.
std::optional<FieldError> GetString(const Value& o, const char* key, bool required,
                                    std::string& out) {
  auto it = o.FindMember(key);
  if (it == o.MemberEnd() || it->value.IsNull()) {
    if (required) return Bad(key, "is required");
    return std::nullopt;
  }
  if (!it->value.IsString()) return Bad(key, "must be a string");
  out.assign(it->value.GetString(), it->value.GetStringLength());
  return std::nullopt;
}

/// An integer member in [lo, hi]; absent keeps `out`.
std::optional<FieldError> GetInt(const Value& o, const char* key, const std::string& field,
                                 std::int64_t lo, std::int64_t hi, std::int64_t& out) {
  auto it = o.FindMember(key);
  if (it == o.MemberEnd() || it->value.IsNull()) return std::nullopt;
  if (!it->value.IsInt64()) return Bad(field, "must be an integer");
  std::int64_t v = it->value.GetInt64();
  if (v < lo || v > hi) {
    return Bad(field, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                          " (got " + std::to_string(v) + ")");
  }
  out = v;
  return std::nullopt;
}

std::optional<FieldError> ParseStringMap(const Value& o, const char* key,
                                         std::map<std::string, std::string>& out, bool env_names) {
  auto it = o.FindMember(key);
  if (it == o.MemberEnd() || it->value.IsNull()) return std::nullopt;
  if (!it->value.IsObject()) return Bad(key, "must be an object of strings");
  std::size_t limit = env_names ? kMaxEnv : protocol::kMaxLabels;
  if (it->value.MemberCount() > limit) {
    return Bad(key, "has more than " + std::to_string(limit) + " entries");
  }
  for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd(); ++m) {
    std::string k(m->name.GetString(), m->name.GetStringLength());
    std::string field = std::string(key) + "." + k;
    if (env_names) {
      if (!IsEnvName(k)) return Bad(field, "is not a variable name ([A-Za-z_][A-Za-z0-9_]*)");
      if (k.rfind("UNIDESK_", 0) == 0) return Bad(field, "UNIDESK_* variables are reserved");
    } else if (!protocol::IsValidLabelKey(k)) {
      return Bad(field, "is not a label key (A-Z a-z 0-9 - _ . /, at most 63)");
    }
    if (!m->value.IsString()) return Bad(field, "must be a string");
    std::string v(m->value.GetString(), m->value.GetStringLength());
    if (v.find('\0') != std::string::npos) return Bad(field, "contains a NUL byte");
    if (v.size() > (env_names ? kMaxEnvValue : protocol::kMaxLabelValue)) {
      return Bad(field, "is too long");
    }
    out[k] = std::move(v);
  }
  return std::nullopt;
}

std::optional<FieldError> ParseResources(const Value& o, const TaskLimits& limits,
                                         TaskResources& r) {
  auto it = o.FindMember("resources");
  if (it == o.MemberEnd() || it->value.IsNull()) return std::nullopt;
  const Value& v = it->value;
  if (!v.IsObject()) return Bad("resources", "must be an object");
  if (auto e = OnlyKnown(v, "resources.", {"cpu", "memory_mb", "gpus"})) return e;
  auto cpu = v.FindMember("cpu");
  if (cpu != v.MemberEnd() && !cpu->value.IsNull()) {
    if (!cpu->value.IsNumber()) return Bad("resources.cpu", "must be a number of cores");
    double cores = cpu->value.GetDouble();
    double millis = std::round(cores * 1000.0);
    if (!(cores > 0) || millis < 1) return Bad("resources.cpu", "must be positive");
    if (millis > static_cast<double>(limits.max_cpu_millis)) {
      return Bad("resources.cpu",
                 "must be at most " + std::to_string(limits.max_cpu_millis / 1000) + " cores");
    }
    r.cpu_millis = static_cast<std::int64_t>(millis);
  }
  std::int64_t mb = r.memory_bytes >> 20;
  if (auto e =
          GetInt(v, "memory_mb", "resources.memory_mb", 1, limits.max_memory_bytes >> 20, mb)) {
    return e;
  }
  r.memory_bytes = mb << 20;
  std::int64_t gpus = r.gpus;
  if (auto e = GetInt(v, "gpus", "resources.gpus", 0, limits.max_gpus, gpus)) return e;
  r.gpus = static_cast<int>(gpus);
  return std::nullopt;
}

std::optional<FieldError> ParseRetry(const Value& o, const TaskLimits& limits, RetryPolicy& r) {
  auto it = o.FindMember("retry");
  if (it == o.MemberEnd() || it->value.IsNull()) return std::nullopt;
  const Value& v = it->value;
  if (!v.IsObject()) return Bad("retry", "must be an object");
  if (auto e = OnlyKnown(v, "retry.", {"max_attempts", "on"})) return e;
  std::int64_t n = r.max_attempts;
  if (auto e = GetInt(v, "max_attempts", "retry.max_attempts", 1, limits.max_attempts, n)) return e;
  r.max_attempts = static_cast<int>(n);
  auto on = v.FindMember("on");
  if (on != v.MemberEnd() && !on->value.IsNull()) {
    if (!on->value.IsArray()) return Bad("retry.on", "must be an array");
    r.on_lost = r.on_failed = r.on_timed_out = false;
    for (auto& x : on->value.GetArray()) {
      std::string s = x.IsString() ? x.GetString() : "";
      if (s == "lost") {
        r.on_lost = true;
      } else if (s == "failed") {
        r.on_failed = true;
      } else if (s == "timed_out") {
        r.on_timed_out = true;
      } else {
        return Bad("retry.on", "entries are \"lost\", \"failed\" or \"timed_out\"");
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> CheckRepoUrl(std::string_view url, bool allow_file_urls) {
  if (url.empty()) return std::string("is empty");
  if (url.size() > kMaxUrl) return std::string("is longer than 2048 characters");
  if (HasControl(url) || url.find(' ') != std::string_view::npos) {
    return std::string("contains spaces or control characters");
  }
  auto starts = [&](std::string_view p) { return url.substr(0, p.size()) == p; };
  auto rest_after = [&](std::string_view p) { return url.substr(p.size()); };
  if (starts("https://") || starts("ssh://")) {
    std::string_view rest = rest_after(starts("https://") ? "https://" : "ssh://");
    std::string_view authority = rest.substr(0, rest.find('/'));
    if (authority.empty()) return std::string("has no host");
    if (rest.find('/') == std::string_view::npos || rest.size() <= authority.size() + 1) {
      return std::string("has no repository path");
    }
    if (starts("https://") && authority.find('@') != std::string_view::npos) {
      return std::string("carries credentials; give the node access instead (a URL is logged)");
    }
    return std::nullopt;
  }
  if (starts("file://")) {
    if (!allow_file_urls) {
      return std::string("file:// repositories are not allowed on this server (--allow-file-urls)");
    }
    std::string_view path = rest_after("file://");
    if (path.empty() || path[0] != '/') return std::string("file:// needs an absolute path");
    return std::nullopt;
  }
  if (starts("http://")) return std::string("plain http:// is refused; use https:// or ssh://");
  // scp-style: [user@]host:path (no scheme, a colon before any slash).
  auto colon = url.find(':');
  auto slash = url.find('/');
  if (colon != std::string_view::npos && colon > 0 &&
      (slash == std::string_view::npos || colon < slash) &&
      url.find("://") == std::string_view::npos && colon + 1 < url.size()) {
    return std::nullopt;
  }
  return std::string("must be https://…, ssh://… or user@host:path");
}

std::optional<std::string> CheckCommitId(std::string_view id) {
  if (id.size() != 40) {
    return "must be a full commit id of 40 hex digits (got " + std::to_string(id.size()) +
           " characters); branch names and short ids are not pinned versions";
  }
  for (char c : id) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return std::string("must be 40 hex digits (0-9, a-f)");
    }
  }
  return std::nullopt;
}

Result<std::string, FieldError> NormaliseDockerfilePath(std::string_view path) {
  if (path.empty()) return Bad("dockerfile_path", "is empty");
  if (path.size() > kMaxPath) return Bad("dockerfile_path", "is too long");
  if (HasControl(path)) return Bad("dockerfile_path", "contains control characters");
  if (path[0] == '/') return Bad("dockerfile_path", "must be relative to the env repository");
  if (path.find('\\') != std::string_view::npos)
    return Bad("dockerfile_path", "must use / as separator");
  std::string out;
  std::size_t i = 0;
  while (i <= path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (part == "..") return Bad("dockerfile_path", "must not contain '..'");
    if (part == ".git") return Bad("dockerfile_path", "must not point into .git");
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out += part;
    }
    i = j + 1;
  }
  if (out.empty()) return Bad("dockerfile_path", "names no file");
  return out;
}

RetryPolicy RetryPolicyOf(std::string_view spec_json) {
  rapidjson::Document doc;
  doc.Parse(spec_json.data(), spec_json.size());
  RetryPolicy r;
  TaskLimits any;
  any.max_attempts = std::numeric_limits<int>::max();
  if (doc.HasParseError() || !doc.IsObject() || ParseRetry(doc, any, r)) return RetryPolicy();
  return r;
}

Result<TaskSpec, FieldError> ParseTaskSpec(std::string_view json, const TaskLimits& limits) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(json.data(), json.size());
  if (doc.HasParseError()) {
    return Bad("", std::string("invalid JSON at byte ") + std::to_string(doc.GetErrorOffset()) +
                       ": " + rapidjson::GetParseError_En(doc.GetParseError()));
  }
  if (!doc.IsObject()) return Bad("", "a task must be a JSON object");
  if (auto e = OnlyKnown(doc, "",
                         {"name", "code_repo_url", "code_commit_id", "env_repo_url",
                          "env_commit_id", "dockerfile_path", "command", "env", "resources",
                          "labels", "priority", "timeout_s", "retry"})) {
    return *e;
  }
  TaskSpec s;
  if (auto e = GetString(doc, "name", false, s.name)) return *e;
  if (s.name.size() > kMaxName || HasControl(s.name)) {
    return Bad("name", "must be at most 200 printable characters");
  }
  for (auto [key, url] :
       {std::pair{"code_repo_url", &s.code_repo_url}, std::pair{"env_repo_url", &s.env_repo_url}}) {
    if (auto e = GetString(doc, key, true, *url)) return *e;
    if (auto why = CheckRepoUrl(*url, limits.allow_file_urls)) return Bad(key, *why);
  }
  for (auto [key, id] : {std::pair{"code_commit_id", &s.code_commit_id},
                         std::pair{"env_commit_id", &s.env_commit_id}}) {
    if (auto e = GetString(doc, key, true, *id)) return *e;
    if (auto why = CheckCommitId(*id)) return Bad(key, *why);
    for (char& c : *id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  std::string dockerfile = "Dockerfile";
  if (auto e = GetString(doc, "dockerfile_path", false, dockerfile)) return *e;
  auto path = NormaliseDockerfilePath(dockerfile);
  if (!path.ok()) return path.error();
  s.dockerfile_path = path.value();

  auto cmd = doc.FindMember("command");
  if (cmd == doc.MemberEnd() || cmd->value.IsNull()) return Bad("command", "is required");
  if (!cmd->value.IsArray() || cmd->value.Empty()) {
    return Bad("command", "must be a non-empty array of strings (argv)");
  }
  if (cmd->value.Size() > kMaxArgs) return Bad("command", "has more than 1024 arguments");
  for (rapidjson::SizeType i = 0; i < cmd->value.Size(); ++i) {
    const Value& a = cmd->value[i];
    std::string field = "command[" + std::to_string(i) + "]";
    if (!a.IsString()) return Bad(field, "must be a string");
    std::string arg(a.GetString(), a.GetStringLength());
    if (arg.find('\0') != std::string::npos) return Bad(field, "contains a NUL byte");
    if (arg.size() > kMaxArg) return Bad(field, "is longer than 8192 bytes");
    if (i == 0 && arg.empty()) return Bad(field, "the program must not be empty");
    s.command.push_back(std::move(arg));
  }
  if (auto e = ParseStringMap(doc, "env", s.env, true)) return *e;
  if (auto e = ParseStringMap(doc, "labels", s.labels, false)) return *e;
  if (auto e = ParseResources(doc, limits, s.resources)) return *e;
  std::int64_t priority = 0;
  if (auto e = GetInt(doc, "priority", "priority", -1000, 1000, priority)) return *e;
  s.priority = static_cast<int>(priority);
  if (auto e = GetInt(doc, "timeout_s", "timeout_s", 1, limits.max_timeout_s, s.timeout_s)) {
    return *e;
  }
  if (auto e = ParseRetry(doc, limits, s.retry)) return *e;
  return s;
}

std::string ToJson(const TaskSpec& s) {
  auto strings = [](const std::vector<std::string>& v) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + JsonQuote(v[i]);
    return out + "]";
  };
  auto map = [](const std::map<std::string, std::string>& m) {
    JsonObject o;
    for (const auto& [k, v] : m) o.Str(k, v);
    return o.Done();
  };
  std::vector<std::string> on;
  if (s.retry.on_lost) on.push_back("lost");
  if (s.retry.on_failed) on.push_back("failed");
  if (s.retry.on_timed_out) on.push_back("timed_out");
  return JsonObject()
      .Str("name", s.name)
      .Str("code_repo_url", s.code_repo_url)
      .Str("code_commit_id", s.code_commit_id)
      .Str("env_repo_url", s.env_repo_url)
      .Str("env_commit_id", s.env_commit_id)
      .Str("dockerfile_path", s.dockerfile_path)
      .Raw("command", strings(s.command))
      .Raw("env", map(s.env))
      .Raw("resources", JsonObject()
                            .Num("cpu", static_cast<double>(s.resources.cpu_millis) / 1000.0)
                            .Int("memory_mb", s.resources.memory_bytes >> 20)
                            .Int("gpus", s.resources.gpus)
                            .Done())
      .Raw("labels", map(s.labels))
      .Int("priority", s.priority)
      .Int("timeout_s", s.timeout_s)
      .Raw("retry",
           JsonObject().Int("max_attempts", s.retry.max_attempts).Raw("on", strings(on)).Done())
      .Done();
}

}  // namespace unidesk::core
