#pragma once
// What a task needs to really run here: a Docker engine of the test's own (ops/dockerd), and
// git repositories made by the test (file://) for the code and for an env image built from
// scratch with Debian's static busybox (there is no registry here).

#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

#include "provider/task_runner.h"
#include "test/e2e/e2e_support.h"

namespace unidesk::test::e2e {

/// A Docker engine of the test's own, stopped at the end.
struct Dockerd {
  std::string dir = TempPath("dockerd");
  std::string socket;
  Dockerd() {
    if (Shell(std::string(UNIDESK_SOURCE_DIR) + "/ops/dockerd start " + Quote(dir)) != 0) {
      throw std::runtime_error("ops/dockerd start failed");
    }
    socket = dir + "/docker.sock";
  }
  ~Dockerd() {
    Shell(std::string(UNIDESK_SOURCE_DIR) + "/ops/dockerd stop " + Quote(dir));
    Shell("rm -rf " + Quote(dir));
  }
  /// `docker` CLI against this engine, its stdout trimmed.
  std::string Docker(const std::string& args) const {
    std::string out;
    Shell("docker -H unix://" + socket + " " + args + " 2>/dev/null", &out);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
  }
};

inline std::string Sh(const std::string& cmd) {
  std::string out;
  if (Shell(cmd, &out) != 0) throw std::runtime_error("failed: " + cmd);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

/// Commits `files` (path -> content) to `repo` (after `extra_cmd`); returns the commit id.
inline std::string Commit(const std::string& repo, const std::map<std::string, std::string>& files,
                          const std::string& extra_cmd = "") {
  for (const auto& [path, content] : files) {
    Sh("mkdir -p $(dirname " + Quote(repo + "/" + path) + ")");
    std::ofstream(repo + "/" + path) << content;
  }
  if (!extra_cmd.empty()) Sh("cd " + Quote(repo) + " && " + extra_cmd);
  Sh("cd " + Quote(repo) + " && git add -A && git -c user.name=t -c user.email=t@t commit -qm c");
  return Sh("cd " + Quote(repo) + " && git rev-parse HEAD");
}

/// A code repository and an env repository whose docker/Dockerfile makes a busybox image.
struct TaskRepos {
  std::string code = TempPath("code");
  std::string env = TempPath("env");
  std::string code_commit, env_commit;
  TaskRepos() {
    Sh("git init -q " + Quote(code) + " && git init -q " + Quote(env));
    code_commit = Commit(code, {{"msg.txt", "pinned code\n"},
                                {"run.sh", "echo hello from $(cat msg.txt); echo oops >&2\n"}});
    env_commit = Commit(env,
                        {{"docker/Dockerfile",
                          "FROM scratch\nCOPY busybox /bin/busybox\n"
                          "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
                          "ENV PATH=/bin\n"}},
                        "cp /bin/busybox busybox");
  }
  /// An attempt of `command` pinned to both repositories, for the provider's runtime directly.
  provider::Assignment Assignment(const std::string& task_id,
                                  std::vector<std::string> command = {"true"}) const {
    provider::Assignment a;
    a.task_id = task_id;
    a.attempt = 1;
    a.spec.code_repo_url = "file://" + code;
    a.spec.code_commit_id = code_commit;
    a.spec.env_repo_url = "file://" + env;
    a.spec.env_commit_id = env_commit;
    a.spec.dockerfile_path = "docker/Dockerfile";
    a.spec.command = std::move(command);
    a.spec.timeout_s = 60;
    return a;
  }
  /// `tasks submit` flags pinning both repositories (the server needs --allow-file-urls).
  std::string Pins() const {
    return "--allow-file-urls --code-repo file://" + code + " --code-commit " + code_commit +
           " --env-repo file://" + env + " --env-commit " + env_commit +
           " --dockerfile docker/Dockerfile";
  }
};

}  // namespace unidesk::test::e2e
