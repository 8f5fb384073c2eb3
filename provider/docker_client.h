#pragma once
// The Docker Engine API over the local unix socket (Beast HTTP, API version 1.41): what the
// agent needs to build env images and run tasks. One connection per call; streaming calls
// (build output, container logs) hand each piece to a callback as it arrives.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace unidesk::provider {

enum class DockerError {
  kUnreachable,  // no engine at the socket (missing, refused, not answering)
  kNotFound,     // no such image or container
  kBuildFailed,  // the Dockerfile failed; the message is Docker's error
  kStartFailed,  // the container could not start (e.g. the command is not in the image)
  kCancelled,    // the caller's hook said stop (the connection is dropped: Docker aborts)
  kApi,          // any other answer the engine gave
};
struct DockerFailure {
  DockerError code;
  std::string message;
};
template <class T>
using DockerResult = core::Result<T, DockerFailure>;

/// A container to create for a task attempt.
struct ContainerSpec {
  std::string image;
  std::vector<std::string> cmd;
  std::vector<std::string> env;    // "KEY=VALUE"
  std::string working_dir;         // e.g. /workspace
  std::vector<std::string> binds;  // "host-path:container-path[:ro]"
  std::int64_t nano_cpus = 0;      // 0: no limit
  std::int64_t memory_bytes = 0;   // 0: no limit
  std::vector<int> gpu_indices;    // the GPUs the scheduler assigned (nvidia device request)
  std::map<std::string, std::string> labels;
};

/// The JSON body of POST /containers/create for `spec` (pure; GPUs become one "nvidia" device
/// request naming the assigned indices).
std::string CreateContainerBody(const ContainerSpec& spec);

struct ContainerState {
  bool running = false;
  int exit_code = 0;  // when not running
  bool oom_killed = false;
};

struct LabelledContainer {
  std::string id;
  std::map<std::string, std::string> labels;
};

struct LocalImage {
  std::string id;
  std::vector<std::string> tags;
  std::int64_t size_bytes = 0;
  std::int64_t created_s = 0;  // epoch seconds
};

class DockerClient {
 public:
  explicit DockerClient(std::string socket_path) : socket_(std::move(socket_path)) {}

  DockerResult<core::Unit> Ping();
  /// True when the image (name:tag or id) exists locally.
  DockerResult<bool> ImageExists(const std::string& ref);
  /// Builds `context_tar` with `dockerfile` (a path inside the context) as `tag`; every output
  /// line goes to `on_line`, and every piece of the answer (pull progress included) calls
  /// `on_activity`. Returns the image id.
  DockerResult<std::string> Build(const std::string& context_tar, const std::string& dockerfile,
                                  const std::string& tag,
                                  const std::map<std::string, std::string>& labels,
                                  const std::function<void(const std::string&)>& on_line,
                                  const std::function<bool()>& cancelled = {},
                                  const std::function<void()>& on_activity = {});
  DockerResult<std::string> Create(const ContainerSpec& spec, const std::string& name);
  DockerResult<core::Unit> Start(const std::string& id);
  /// Follows stdout and stderr until the container exits (or is stopped), from `since` (the
  /// Engine API's seconds.nanoseconds, inclusive; "" for the whole log). Each entry comes with
  /// the time Docker stamped it. `cancelled` ends the stream early (kCancelled).
  using LogSink = std::function<void(bool is_stderr, std::string_view at, std::string_view text)>;
  DockerResult<core::Unit> Logs(const std::string& id, const std::string& since, const LogSink& out,
                                const std::function<bool()>& cancelled = {});
  /// The container's state; kNotFound when there is no such container.
  DockerResult<ContainerState> Inspect(const std::string& id);
  /// Waits for the exit; returns the exit code. `cancelled` ends the wait early (kCancelled).
  DockerResult<int> Wait(const std::string& id, const std::function<bool()>& cancelled = {});
  /// SIGTERM, then SIGKILL after `grace_s`.
  DockerResult<core::Unit> Stop(const std::string& id, int grace_s);
  DockerResult<core::Unit> Remove(const std::string& id);
  /// Ids of the containers (running or not) that carry `label` (key or key=value).
  DockerResult<std::vector<std::string>> ListByLabel(const std::string& label);
  /// The same containers with their labels.
  DockerResult<std::vector<LabelledContainer>> ListLabelled(const std::string& label);
  /// Local images whose reference matches `pattern` ("unidesk-env/*").
  DockerResult<std::vector<LocalImage>> ListImages(const std::string& pattern);
  /// Untags `ref`, and removes the image when no tag is left. The engine refuses while a
  /// container uses it.
  DockerResult<core::Unit> RemoveImage(const std::string& ref);

  struct Response {
    unsigned status = 0;
    std::string body;
  };

 private:
  /// One HTTP exchange; `on_chunk` (when set) gets the body as it arrives instead of `body`.
  DockerResult<Response> Call(const std::string& method, const std::string& target,
                              const std::string& body = "",
                              const std::string& content_type = "application/json",
                              const std::function<void(std::string_view)>& on_chunk = {},
                              const std::function<bool()>& cancelled = {});
  std::string socket_;
};

}  // namespace unidesk::provider
