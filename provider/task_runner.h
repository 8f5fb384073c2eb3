#pragma once
// One attempt of a task on this node, from the assignment to the exit code: the code at its
// commit from the git cache, the env image reused by tag or built from the env repository at
// its commit, the container with the workspace at /workspace, logs, exit code, clean-up.
// Blocking: run it on a worker thread. Every failure ends in an outcome with a class and a
// reason a person can act on; nothing is retried here (the server's retry policy decides).

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/task_spec.h"
#include "provider/git_cache.h"
#include "provider/log_cursor.h"

namespace unidesk::provider {

struct Assignment {
  std::string task_id;
  int attempt = 1;
  core::TaskSpec spec;
  std::vector<int> gpu_indices;
};

/// Why an attempt did not succeed (the task projection's failure class).
enum class FailureClass {
  kNone,
  kGit,        // repository unreachable, commit missing
  kBuild,      // the env image did not build (or the Dockerfile is missing)
  kStart,      // the container did not start (e.g. the command is not in the image)
  kExit,       // the command exited non-zero
  kTimeout,    // ran past timeout_s
  kCancelled,  // cancelled by a person
  kRuntime,    // the Docker engine is unreachable or answered an error
  kLost,       // the container went away while no agent followed it
};
const char* FailureClassName(FailureClass c);

struct RunOutcome {
  // succeeded | failed | timed_out | cancelled | lost, or detached: the container runs on for
  // the next agent process to follow (RunnerHooks::detach), and nothing has ended.
  std::string state;
  int exit_code = -1;
  std::string container;  // an ended container left to the caller (remove_ended_container)
  FailureClass failure = FailureClass::kNone;
  std::string reason;
  std::string image;
  bool code_fetched = false;  // the git cache went to the network for the code
  bool env_fetched = false;   // ... for the env repository (only when the image was missing)
  bool image_built = false;   // false: the tagged image existed and was reused
  std::int64_t git_ms = 0, build_ms = 0, run_ms = 0;
  std::int64_t prepare_ms = 0;  // assignment -> container started (git + image + create)
};

struct RunnerHooks {
  /// "git", "build", "running"; `so_far` holds what is known then (image, flags, timings).
  std::function<void(const std::string& phase, const RunOutcome& so_far)> on_phase;
  std::function<void(bool is_stderr, std::string_view)> on_log;
  /// The container's output, each entry with the log position just past it (what a later
  /// agent process resumes from); when unset, the output goes to on_log.
  std::function<void(bool is_stderr, const LogCursor& after, std::string_view text)> on_output;
  /// The container started: what a later agent process needs to follow it (Resume).
  std::function<void(const std::string& container, std::int64_t started_unix_ms)> on_started;
  std::function<bool()> cancelled;
  /// While the container runs: stop following it and leave it running (the agent restarts).
  /// Before it runs, the attempt stops as for a cancel.
  std::function<bool()> detach;
};

/// A container an earlier agent process started, to follow on from where that one left.
struct Reattach {
  std::string container;
  std::int64_t started_unix_ms = 0;  // the timeout counts from here
  LogCursor cursor;                  // output before it was reported
};

struct RunnerSettings {
  std::string node;  // labels the containers (unidesk.node): an agent reaps only its own
  std::string data_dir;
  std::string docker_socket = "/var/run/docker.sock";
  int stop_grace_s = 10;   // SIGTERM, then SIGKILL after this
  std::string nvidia_smi;  // checked before a GPU attempt; empty: no check
  FetchSettings git;       // how the git cache fetches (its helper binary, the stall limit)
  std::chrono::milliseconds build_stall_timeout{30 * 60 * 1000};  // silent build: fails; 0 off
  // false: an ended container is left for the caller to remove once the ending is stored, so
  // an agent killed in between still finds it (the task manager).
  bool remove_ended_container = true;
};

/// The env image's tag: the same (env repo, env commit, Dockerfile path) always gives the same
/// tag, so an unchanged environment is never rebuilt. Pure.
std::string EnvImageTag(const std::string& env_repo_url, const std::string& env_commit_id,
                        const std::string& dockerfile_path);

class TaskRunner {
 public:
  explicit TaskRunner(RunnerSettings settings) : s_(std::move(settings)) {}
  RunOutcome Run(const Assignment& a, const RunnerHooks& hooks);
  /// Follows the container of an attempt an earlier agent process ran, to its ending. One that
  /// ended meanwhile is read to its end; one killed by a signal then is `lost` (the engine or
  /// the machine stopping it is not the task's doing), and so is one that is gone.
  RunOutcome Resume(const Assignment& a, const Reattach& r, const RunnerHooks& hooks);

 private:
  /// From a started container to the attempt's outcome: output, timeout, cancel, detach, exit.
  RunOutcome Follow(const Assignment& a, const std::string& container, std::int64_t started_unix_ms,
                    const LogCursor& from, bool watch, const RunnerHooks& hooks, RunOutcome o);
  RunnerSettings s_;
};

}  // namespace unidesk::provider
