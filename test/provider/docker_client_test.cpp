// The agent's Docker Engine API client against a real dockerd (started by ops/dockerd for this
// test): build an env image from scratch (Debian's static busybox; there is no registry here),
// reuse it from the cache, run a container with the workspace mounted, stream its logs, read
// its exit code, stop it, find it by label; and the failures a task can meet: a failing build,
// a missing Dockerfile, a command that is not in the image, no engine at the socket.

#include "provider/docker_client.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <thread>

#include "core/json.h"
#include "provider/tar.h"
#include "test/e2e/e2e_support.h"
#include "test/support/harness.h"

using namespace unidesk;
using namespace unidesk::provider;

namespace {

std::string Temp(const std::string& what) {
  // TempPath: a dead process's leftover under the same name is removed first, and a passing
  // run removes its own (test_main.cpp).
  std::string p = test::e2e::TempPath(what);
  test::Shell("mkdir -p " + test::ShellQuote(p));
  return p;
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

/// One engine for the whole test process.
struct Engine {
  std::string dir = Temp("dockerd");
  std::string socket;
  Engine() {
    if (test::Shell(std::string(UNIDESK_SOURCE_DIR) + "/ops/dockerd start " +
                    test::ShellQuote(dir)) != 0) {
      throw std::runtime_error("ops/dockerd start failed");
    }
    socket = dir + "/docker.sock";
  }
  ~Engine() {
    test::Shell(std::string(UNIDESK_SOURCE_DIR) + "/ops/dockerd stop " + test::ShellQuote(dir));
    test::Shell("rm -rf " + test::ShellQuote(dir));
  }
};
Engine& TheEngine() {
  static Engine engine;
  return engine;
}

/// An env repository checkout: busybox on scratch, plus `extra` Dockerfile lines.
std::string EnvContext(const std::string& extra = "") {
  std::string dir = Temp("env");
  test::Shell("cp /bin/busybox " + test::ShellQuote(dir + "/busybox"));
  test::Shell("mkdir -p " + test::ShellQuote(dir + "/docker"));
  Write(dir + "/docker/Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n" +
            extra);
  return dir;
}

std::string Tar(const std::string& dir) {
  auto t = TarDirectory(dir);
  REQUIRE_MESSAGE(t.ok(), (t.ok() ? "" : t.error().message));
  return t.value();
}

/// Builds the busybox image once per process.
const std::string& BusyboxImage() {
  static std::string tag = [] {
    DockerClient d(TheEngine().socket);
    auto built =
        d.Build(Tar(EnvContext()), "docker/Dockerfile", "unidesk-test/busybox:1", {}, nullptr);
    REQUIRE_MESSAGE(built.ok(), (built.ok() ? "" : built.error().message));
    return std::string("unidesk-test/busybox:1");
  }();
  return tag;
}

struct Ran {
  int exit_code = -1;
  std::string out, err;
};

Ran RunToEnd(DockerClient& d, const ContainerSpec& spec) {
  auto id = d.Create(spec, "");
  REQUIRE_MESSAGE(id.ok(), (id.ok() ? "" : id.error().message));
  REQUIRE(d.Start(id.value()).ok());
  Ran r;
  auto logs = d.Logs(id.value(), "", [&](bool is_err, std::string_view, std::string_view s) {
    (is_err ? r.err : r.out).append(s);
  });
  CHECK(logs.ok());
  auto code = d.Wait(id.value());
  REQUIRE(code.ok());
  r.exit_code = code.value();
  CHECK(d.Remove(id.value()).ok());
  return r;
}

}  // namespace

TEST_CASE("the build context tar is deterministic and holds files, directories and links") {
  std::string dir = Temp("ctx");
  test::Shell("mkdir -p " + dir + "/a/b && echo hi > " + dir + "/a/b/f.txt && chmod 755 " + dir +
              "/a/b/f.txt && ln -s b/f.txt " + dir + "/a/link && mkdir -p " + dir +
              "/.git && echo x > " + dir + "/.git/HEAD");
  std::string one = Tar(dir);
  CHECK(one == Tar(dir));
  CHECK(one.size() % 512 == 0);
  std::string file = Temp("t") + "/ctx.tar";
  std::ofstream(file, std::ios::binary) << one;
  std::string listing;
  REQUIRE(test::Shell("tar -tvf " + file, &listing) == 0);
  CHECK(listing.find("a/b/f.txt") != std::string::npos);
  CHECK(listing.find("-rwxr-xr-x") != std::string::npos);
  CHECK(listing.find("a/link -> b/f.txt") != std::string::npos);
  CHECK(listing.find(".git") == std::string::npos);
  std::string content;
  test::Shell("tar -xOf " + file + " a/b/f.txt", &content);
  CHECK(content == "hi\n");
  // ustar's limit: a path that cannot be split into prefix (155) and name (100) is refused.
  std::string deep = dir + "/" + std::string(120, 'x');
  test::Shell("mkdir -p " + deep + " && touch " + deep + "/" + std::string(110, 'y'));
  auto refused = TarDirectory(dir);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().message.find("too long") != std::string::npos);
}

TEST_CASE("GPUs become one nvidia device request with the assigned indices") {
  ContainerSpec s;
  s.image = "img";
  s.cmd = {"python", "train.py"};
  s.gpu_indices = {0, 2};
  s.nano_cpus = 1'500'000'000;
  s.memory_bytes = 1LL << 30;
  s.labels = {{"unidesk.task", "t"}, {"unidesk.attempt", "1"}};
  core::JsonReader body(CreateContainerBody(s));
  core::JsonReader host(body.Raw("HostConfig").value_or("{}"));
  CHECK(host.Raw("DeviceRequests").value_or("") ==
        R"([{"Driver":"nvidia","DeviceIDs":["0","2"],"Capabilities":[["gpu"]]}])");
  CHECK(host.Int("NanoCpus") == 1'500'000'000);
  CHECK(host.Int("Memory") == 1LL << 30);
  CHECK(host.Int("MemorySwap") == 1LL << 30);  // no swap beyond the limit
  CHECK(body.Raw("Labels").value_or("") == R"({"unidesk.attempt":"1","unidesk.task":"t"})");
  s.gpu_indices.clear();
  CHECK_FALSE(
      core::JsonReader(core::JsonReader(CreateContainerBody(s)).Raw("HostConfig").value_or("{}"))
          .Raw("DeviceRequests"));
}

TEST_CASE("no engine at the socket is a clear error, not a hang") {
  DockerClient d("/nonexistent/docker.sock");
  auto p = d.Ping();
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().code == DockerError::kUnreachable);
  CHECK(p.error().message.find("/nonexistent/docker.sock") != std::string::npos);
}

TEST_CASE("env images: built with streamed output, then reused from the cache") {
  DockerClient d(TheEngine().socket);
  REQUIRE(d.Ping().ok());
  CHECK(d.ImageExists("unidesk-test/none:1").value() == false);
  std::vector<std::string> lines;
  auto built =
      d.Build(Tar(EnvContext("LABEL stage=1\n")), "docker/Dockerfile", "unidesk-test/env:1",
              {{"unidesk.env", "x"}}, [&](const std::string& l) { lines.push_back(l); });
  REQUIRE_MESSAGE(built.ok(), (built.ok() ? "" : built.error().message));
  CHECK(built.value().rfind("sha256:", 0) == 0);
  CHECK(d.ImageExists("unidesk-test/env:1").value());
  bool stepped = false;
  for (const auto& l : lines) stepped = stepped || l.find("Step 1/") != std::string::npos;
  CHECK(stepped);
  // The same context again: every layer from Docker's cache, the same image.
  std::string all;
  auto again =
      d.Build(Tar(EnvContext("LABEL stage=1\n")), "docker/Dockerfile", "unidesk-test/env:1",
              {{"unidesk.env", "x"}}, [&](const std::string& l) { all += l + "\n"; });
  REQUIRE(again.ok());
  CHECK(again.value() == built.value());
  CHECK(all.find("Using cache") != std::string::npos);

  auto failing = d.Build(Tar(EnvContext("RUN [\"/bin/busybox\", \"false\"]\n")),
                         "docker/Dockerfile", "unidesk-test/bad:1", {}, nullptr);
  REQUIRE_FALSE(failing.ok());
  CHECK(failing.error().code == DockerError::kBuildFailed);
  CHECK(failing.error().message.find("returned a non-zero code") != std::string::npos);

  auto missing =
      d.Build(Tar(EnvContext()), "nope/Dockerfile", "unidesk-test/missing:1", {}, nullptr);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == DockerError::kBuildFailed);
  CHECK(missing.error().message.find("Dockerfile") != std::string::npos);
}

TEST_CASE("containers: workspace mounted, logs streamed by stream, exit code, labels") {
  DockerClient d(TheEngine().socket);
  std::string workspace = Temp("ws");
  Write(workspace + "/data.txt", "from the workspace\n");
  ContainerSpec s;
  s.image = BusyboxImage();
  s.cmd = {"sh", "-c", "cat data.txt; echo to-stderr >&2; echo made > out.txt; exit 3"};
  s.working_dir = "/workspace";
  s.binds = {workspace + ":/workspace"};
  s.nano_cpus = 500'000'000;
  s.memory_bytes = 64LL << 20;
  s.labels = {{"unidesk.task", "t-logs"}, {"unidesk.attempt", "1"}};
  Ran r = RunToEnd(d, s);
  CHECK(r.exit_code == 3);
  CHECK(r.out == "from the workspace\n");
  CHECK(r.err == "to-stderr\n");
  std::ifstream made(workspace + "/out.txt");
  std::string word;
  made >> word;
  CHECK(word == "made");

  // Found by label (a restarted agent reconciles its containers this way); gone when removed.
  s.cmd = {"true"};
  auto id = d.Create(s, "unidesk-test-labelled");
  REQUIRE(id.ok());
  auto found = d.ListByLabel("unidesk.task=t-logs");
  REQUIRE(found.ok());
  CHECK(found.value() == std::vector<std::string>{id.value()});
  CHECK(d.Remove(id.value()).ok());
  CHECK(d.ListByLabel("unidesk.task=t-logs").value().empty());
}

TEST_CASE("a command missing from the image fails to start, saying which") {
  DockerClient d(TheEngine().socket);
  ContainerSpec s;
  s.image = BusyboxImage();
  s.cmd = {"no-such-program", "--flag"};
  auto id = d.Create(s, "");
  REQUIRE(id.ok());
  auto started = d.Start(id.value());
  REQUIRE_FALSE(started.ok());
  CHECK(started.error().code == DockerError::kStartFailed);
  CHECK(started.error().message.find("no-such-program") != std::string::npos);
  CHECK(d.Remove(id.value()).ok());
  s.image = "unidesk-test/absent:1";
  auto absent = d.Create(s, "");
  REQUIRE_FALSE(absent.ok());
  CHECK(absent.error().code == DockerError::kNotFound);
}

TEST_CASE("stop: SIGTERM, then SIGKILL after the grace; logs and wait return") {
  DockerClient d(TheEngine().socket);
  ContainerSpec s;
  s.image = BusyboxImage();
  s.cmd = {"sh", "-c", "trap '' TERM; echo started; sleep 60"};  // ignores SIGTERM
  auto id = d.Create(s, "");
  REQUIRE(id.ok());
  REQUIRE(d.Start(id.value()).ok());
  auto t0 = std::chrono::steady_clock::now();
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(d.Stop(id.value(), 1).ok());
  });
  std::string out;
  CHECK(d.Logs(id.value(), "", [&](bool, std::string_view, std::string_view v) {
           out.append(v);
         }).ok());
  stopper.join();
  auto code = d.Wait(id.value());
  REQUIRE(code.ok());
  CHECK(code.value() == 137);  // killed after the grace
  CHECK(out == "started\n");
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
  CHECK(d.Remove(id.value()).ok());
}
