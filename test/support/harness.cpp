#include "test/support/harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "core/migrator.h"
#include "ingress/schema_sources.h"

namespace unidesk::test {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string UniqueName(const char* prefix) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  return std::string(prefix) + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
         std::to_string(rd() % 100000);
}

}  // namespace

std::string RepoRoot() { return UNIDESK_SOURCE_DIR; }
std::string BuildDir() { return UNIDESK_BINARY_DIR; }

provider::FetchSettings GitFetch(std::chrono::milliseconds stall_timeout) {
  return {BuildDir() + "/provider/unidesk-provider", stall_timeout};
}

std::string ClusterConninfo() {
  if (const char* env = std::getenv("UNIDESK_TEST_PG"); env && *env) return env;
  std::ifstream f(BuildDir() + "/test-pg/conninfo");
  std::string line;
  if (!f || !std::getline(f, line)) {
    throw std::runtime_error(
        "no test cluster: run the tests through ctest (its fixture starts one) or set "
        "UNIDESK_TEST_PG");
  }
  return Trim(line);
}

std::string WithDatabase(const std::string& base, const std::string& dbname) {
  std::string out;
  std::string token;
  std::istringstream in(base);
  while (in >> token) {
    if (token.rfind("dbname=", 0) == 0) continue;
    out += token + " ";
  }
  return out + "dbname=" + dbname;
}

TestDatabase::TestDatabase(Schema schema, std::string cluster)
    : cluster_(std::move(cluster)), name_(UniqueName("t_")) {
  {
    pqxx::connection admin(cluster_);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + name_);
  }
  conninfo_ = WithDatabase(cluster_, name_);
  if (schema == Schema::kMigrated) {
    pqxx::connection c(conninfo_);
    auto r = core::Migrate(c, ingress::SchemaSources());
    if (!r.ok()) throw std::runtime_error("migrate failed: " + r.error().message);
  }
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection admin(cluster_);
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: could not drop %s: %s\n", name_.c_str(), e.what());
  }
}

std::unique_ptr<pqxx::connection> TestDatabase::Connect() const {
  return std::make_unique<pqxx::connection>(conninfo_);
}

long long TestDatabase::Scalar(const std::string& sql) const {
  pqxx::connection c(conninfo_);
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<long long>();
}

PrivateCluster::PrivateCluster() : dir_("/tmp/" + UniqueName("unidesk-pg-")) { Start(); }

void PrivateCluster::Start() {
  std::string out;
  std::string port = conninfo_.empty() ? "" : " $(cat " + dir_ + "/port)";
  if (Shell(RepoRoot() + "/ops/pgcluster start " + dir_ + port, &out) != 0) {
    throw std::runtime_error("could not start a private cluster in " + dir_);
  }
  conninfo_ = Trim(out);
}

PrivateCluster::~PrivateCluster() {
  Stop();
  Shell("rm -rf " + dir_);
}

void PrivateCluster::Restart() {
  if (Shell(RepoRoot() + "/ops/pgcluster restart " + dir_) != 0) {
    throw std::runtime_error("could not restart the cluster in " + dir_);
  }
}

void PrivateCluster::Stop() { Shell(RepoRoot() + "/ops/pgcluster stop " + dir_ + " 2>/dev/null"); }

ChildProcess::ChildProcess(std::vector<std::string> argv, std::vector<std::string> env,
                           std::string log_path) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    FILE* log = std::fopen(log_path.c_str(), "a");
    if (log) {
      dup2(fileno(log), 1);
      dup2(fileno(log), 2);
    }
    for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::perror("execv");
    _exit(127);
  }
}

ChildProcess::~ChildProcess() {
  if (Running()) {
    kill(pid_, SIGKILL);
    Wait();
  }
}

void ChildProcess::Signal(int sig) { kill(pid_, sig); }

int ChildProcess::Wait() {
  if (status_ >= 0) return status_;
  int st = 0;
  waitpid(pid_, &st, 0);
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return status_;
}

bool ChildProcess::Running() {
  if (status_ >= 0) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == 0) return true;
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return false;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

int Shell(const std::string& command, std::string* out) {
  FILE* p = popen(command.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::string text;
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  int st = pclose(p);
  if (out) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds every) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(every);
  }
  return done();
}

core::EventCatalogue TestCatalogue() {
  core::EventCatalogue c = core::BuiltinCatalogue();
  c.Declare({"test.happened", 1, "test-{n}", "an event of the tests", {}});
  c.Declare({"test.versioned",
             2,
             "test-{n}",
             "a test type at schema version 2",
             {{1, [](const std::string& data) {
                 // v1 -> v2: adds "upcast": true to the object.
                 std::string out = data.substr(0, data.rfind('}'));
                 bool empty = out.find_first_not_of(" {") == std::string::npos;
                 return out + (empty ? "" : ",") + "\"upcast\": true}";
               }}}});
  return c;
}

}  // namespace unidesk::test
