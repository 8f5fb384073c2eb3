#pragma once
// Test harness: the run's throwaway Postgres cluster, a fresh database per test, private clusters
// for tests that restart or kill Postgres, and child processes of the project's binaries.

#include <chrono>
#include <functional>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "core/event_catalogue.h"
#include "provider/git_cache.h"

namespace unidesk::test {

/// Conninfo of the run's cluster: $UNIDESK_TEST_PG, else the file the CTest fixture wrote.
std::string ClusterConninfo();
/// The repository root and the build folder.
std::string RepoRoot();
std::string BuildDir();

/// How a test's git cache fetches: through the built agent binary (`git-fetch`), as the agent
/// does, with the default stall limit unless told.
provider::FetchSettings GitFetch(std::chrono::milliseconds stall_timeout = std::chrono::minutes(2));

/// `base` with dbname replaced.
std::string WithDatabase(const std::string& base, const std::string& dbname);

/// A fresh database in a cluster (migrated unless told not to), dropped at destruction.
class TestDatabase {
 public:
  enum class Schema { kMigrated, kEmpty };
  explicit TestDatabase(Schema schema = Schema::kMigrated, std::string cluster = ClusterConninfo());
  ~TestDatabase();
  const std::string& conninfo() const { return conninfo_; }
  const std::string& name() const { return name_; }
  std::unique_ptr<pqxx::connection> Connect() const;
  /// First column of the first row of `sql`, as a number.
  long long Scalar(const std::string& sql) const;

 private:
  std::string cluster_;
  std::string name_;
  std::string conninfo_;
};

/// A cluster of the test's own (ops/pgcluster), stopped and deleted at destruction.
class PrivateCluster {
 public:
  PrivateCluster();
  ~PrivateCluster();
  const std::string& conninfo() const { return conninfo_; }
  void Restart();
  void Stop();
  void Start();
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string conninfo_;
};

/// A child process (argv[0] is a path), stdout and stderr to `log_path`.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, std::vector<std::string> env, std::string log_path);
  ~ChildProcess();
  int pid() const { return pid_; }
  void Signal(int sig);
  /// Waits for exit; returns the exit status (or 128+signal).
  int Wait();
  bool Running();

 private:
  int pid_ = -1;
  int status_ = -1;
};

/// `s` quoted for a POSIX shell.
std::string ShellQuote(const std::string& s);

/// Runs a shell command; returns its exit code and (if `out`) its stdout.
int Shell(const std::string& command, std::string* out = nullptr);

/// Polls `done` until true or `timeout`; returns whether it became true.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds every = std::chrono::milliseconds(20));

/// The builtin catalogue plus test types: "test.happened" (v1) and "test.versioned" (v2, with an
/// upcaster from v1 that adds {"upcast": true}).
core::EventCatalogue TestCatalogue();

}  // namespace unidesk::test
