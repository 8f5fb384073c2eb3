// Task submissions: every field validated, the bad one named; canonical JSON round-trips.

#include "core/task_spec.h"

#include <doctest/doctest.h>

using namespace unidesk::core;

namespace {

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

/// A valid submission with `extra` members appended (or replacing, since later keys win
/// nowhere: each case below uses a field the base does not set, or builds its own).
std::string Task(const std::string& extra = "", const std::string& command = R"(["echo","hi"])") {
  std::string s = R"({"code_repo_url":"https://git.example.com/lab/code.git",)"
                  R"("code_commit_id":")" +
                  kCommit +
                  R"(","env_repo_url":"git@git.example.com:lab/env.git",)"
                  R"("env_commit_id":")" +
                  kCommit + R"(","command":)" + command;
  if (!extra.empty()) s += "," + extra;
  return s + "}";
}

std::string Without(std::string json, const std::string& member) {
  auto at = json.find("\"" + member + "\"");
  auto end = json.find("\",", at);
  json.erase(at, end + 2 - at);
  return json;
}

}  // namespace

TEST_CASE("a minimal task gets the documented defaults") {
  auto r = ParseTaskSpec(Task(), TaskLimits{});
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().field + ": " + r.error().message));
  const TaskSpec& s = r.value();
  CHECK(s.dockerfile_path == "Dockerfile");
  CHECK(s.resources.cpu_millis == 1000);
  CHECK(s.resources.memory_bytes == 512LL << 20);
  CHECK(s.resources.gpus == 0);
  CHECK(s.priority == 0);
  CHECK(s.timeout_s == 3600);
  CHECK(s.retry.max_attempts == 3);
  CHECK(s.retry.on_lost);
  CHECK_FALSE(s.retry.on_failed);
  CHECK(s.command == std::vector<std::string>{"echo", "hi"});
}

TEST_CASE("every field parsed, normalised, and the canonical JSON round-trips") {
  std::string upper = kCommit;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  std::string json =
      R"({"name":"train","code_repo_url":"ssh://git@host/x.git","code_commit_id":")" + upper +
      R"(","env_repo_url":"file:///srv/env","env_commit_id":")" + kCommit +
      R"(","dockerfile_path":"./docker//gpu/Dockerfile","command":["python","-c","pass"],)"
      R"("env":{"SEED":"1","_X":""},"resources":{"cpu":0.5,"memory_mb":2048,"gpus":2},)"
      R"("labels":{"gpu":"a100","zone":"lab-1"},"priority":7,"timeout_s":60,)"
      R"("retry":{"max_attempts":5,"on":["failed","lost"]}})";
  TaskLimits limits;
  limits.allow_file_urls = true;
  auto r = ParseTaskSpec(json, limits);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().field + ": " + r.error().message));
  const TaskSpec& s = r.value();
  CHECK(s.code_commit_id == kCommit);  // lower-cased
  CHECK(s.dockerfile_path == "docker/gpu/Dockerfile");
  CHECK(s.resources.cpu_millis == 500);
  CHECK(s.resources.memory_bytes == 2048LL << 20);
  CHECK(s.resources.gpus == 2);
  CHECK(s.env.at("SEED") == "1");
  CHECK(s.labels.at("gpu") == "a100");
  CHECK(s.priority == 7);
  CHECK(s.retry.max_attempts == 5);
  CHECK(s.retry.on_failed);
  CHECK(s.retry.on_lost);
  CHECK_FALSE(s.retry.on_timed_out);

  std::string canonical = ToJson(s);
  auto again = ParseTaskSpec(canonical, limits);
  REQUIRE(again.ok());
  CHECK(ToJson(again.value()) == canonical);
  CHECK(again.value().resources == s.resources);
}

TEST_CASE("each bad submission names its field") {
  struct Case {
    std::string json;
    std::string field;
    std::string says;
  };
  std::vector<Case> cases = {
      {"not json", "", "invalid JSON"},
      {"[1,2]", "", "JSON object"},
      {Task(R"("colour":"blue")"), "colour", "unknown field"},
      {Without(Task(), "code_repo_url"), "code_repo_url", "required"},
      {Without(Task(), "env_commit_id"), "env_commit_id", "required"},
      {Task("", "[]"), "command", "non-empty"},
      {Task("", R"("echo hi")"), "command", "array"},
      {Task("", R"(["echo",3])"), "command[1]", "string"},
      {Task("", R"([""])"), "command[0]", "empty"},
      {Task(R"("resources":{"cpu":0})"), "resources.cpu", "positive"},
      {Task(R"("resources":{"cpu":-1})"), "resources.cpu", "positive"},
      {Task(R"("resources":{"cpu":"2"})"), "resources.cpu", "number"},
      {Task(R"("resources":{"cpu":100000})"), "resources.cpu", "at most"},
      {Task(R"("resources":{"memory_mb":0})"), "resources.memory_mb", "between"},
      {Task(R"("resources":{"memory_mb":1.5})"), "resources.memory_mb", "integer"},
      {Task(R"("resources":{"gpus":-1})"), "resources.gpus", "between"},
      {Task(R"("resources":{"gpus":99})"), "resources.gpus", "between"},
      {Task(R"("resources":{"disk":1})"), "resources.disk", "unknown field"},
      {Task(R"("priority":5000)"), "priority", "between"},
      {Task(R"("timeout_s":0)"), "timeout_s", "between"},
      {Task(R"("timeout_s":99999999)"), "timeout_s", "between"},
      {Task(R"("retry":{"max_attempts":0})"), "retry.max_attempts", "between"},
      {Task(R"("retry":{"on":["sometimes"]})"), "retry.on", "lost"},
      {Task(R"("env":{"1X":"a"})"), "env.1X", "variable name"},
      {Task(R"("env":{"UNIDESK_TOKEN":"a"})"), "env.UNIDESK_TOKEN", "reserved"},
      {Task(R"("env":{"A":1})"), "env.A", "string"},
      {Task(R"("labels":{"bad key":"a"})"), "labels.bad key", "label key"},
      {Task(R"("dockerfile_path":"/etc/Dockerfile")"), "dockerfile_path", "relative"},
      {Task(R"("dockerfile_path":"../Dockerfile")"), "dockerfile_path", ".."},
      {Task(R"("dockerfile_path":"a/../../Dockerfile")"), "dockerfile_path", ".."},
      {Task(R"("dockerfile_path":".git/hooks/x")"), "dockerfile_path", ".git"},
      {Task(R"("dockerfile_path":"a\\Dockerfile")"), "dockerfile_path", "separator"},
      {Task(R"("dockerfile_path":"./")"), "dockerfile_path", "names no file"},
      {Task(R"("dockerfile_path":"a\u0001")"), "dockerfile_path", "control"},
      {Task(R"("name":"x\n")"), "name", "printable"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.json);
    auto r = ParseTaskSpec(c.json, TaskLimits{});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().field == c.field);
    CHECK_MESSAGE(r.error().message.find(c.says) != std::string::npos, r.error().message);
  }
}

TEST_CASE("commit ids are full 40-hex ids") {
  CHECK_FALSE(CheckCommitId(kCommit));
  CHECK(CheckCommitId("main"));
  CHECK(CheckCommitId("0123456"));                                   // short id
  CHECK(CheckCommitId("0123456789abcdef0123456789abcdef0123456g"));  // not hex
  CHECK(CheckCommitId(kCommit + "0"));                               // 41
  auto r =
      ParseTaskSpec(Task(R"("name":"x")").replace(Task().find(kCommit), 40, "HEAD"), TaskLimits{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().field == "code_commit_id");
  CHECK(r.error().message.find("40 hex") != std::string::npos);
}

TEST_CASE("repository URLs: https, ssh, scp-style; file:// only when allowed") {
  struct Case {
    std::string url;
    bool ok;
    bool allow_file = false;
  };
  std::vector<Case> cases = {
      {"https://github.com/a/b.git", true},
      {"ssh://git@host:2222/a/b.git", true},
      {"git@github.com:a/b.git", true},
      {"host:repo", true},
      {"file:///srv/git/a", false},
      {"file:///srv/git/a", true, true},
      {"file://relative/a", false, true},
      {"http://github.com/a/b.git", false},
      {"https://user:secret@github.com/a/b.git", false},
      {"https://github.com", false},
      {"https:///a/b", false},
      {"ftp://x/y", false},
      {"/srv/git/a", false},
      {"", false},
      {"https://github.com/a b", false},
      {"https://github.com/a\nb", false},
      {std::string("https://github.com/") + std::string(3000, 'a'), false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.url);
    CHECK(!CheckRepoUrl(c.url, c.allow_file) == c.ok);
  }
  auto r = ParseTaskSpec(Task().replace(Task().find("https://"), 8, "http://"), TaskLimits{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().field == "code_repo_url");
}

TEST_CASE("the retry policy of a stored spec, or of its `retry` field alone") {
  auto full = ParseTaskSpec(Task(R"("retry":{"max_attempts":5,"on":["failed","timed_out"]})"),
                            TaskLimits{});
  REQUIRE(full.ok());
  for (const std::string& json :
       {ToJson(full.value()),
        std::string(R"({"retry":{"max_attempts":5,"on":["failed","timed_out"]}})")}) {
    RetryPolicy r = RetryPolicyOf(json);
    CHECK(r.max_attempts == 5);
    CHECK(r.on_failed);
    CHECK(r.on_timed_out);
    CHECK_FALSE(r.on_lost);
  }
  // None, null or unreadable: the default (3 attempts, on lost).
  for (const char* json : {"{}", R"({"retry":null})", "not json", R"({"retry":{"on":["x"]}})"}) {
    RetryPolicy r = RetryPolicyOf(json);
    CHECK(r.max_attempts == 3);
    CHECK(r.on_lost);
    CHECK_FALSE(r.on_failed);
  }
}
