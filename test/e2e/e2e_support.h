#pragma once
// Helpers of the end-to-end tests: run the real binaries, read their logs, fingerprint tables.

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test/support/harness.h"

namespace unidesk::test::e2e {

/// Path of the `unidesk` CLI and of `unidesk-server` in the build the test was built in.
inline std::string CliBinary() { return BuildDir() + "/ingress/unidesk"; }
inline std::string ServerBinary() { return BuildDir() + "/ingress/unidesk-server"; }

/// `s` quoted for /bin/sh.
inline std::string Quote(const std::string& s) { return ShellQuote(s); }

/// A fresh file name under /tmp for this process (not created). The name carries the pid, so
/// whatever already has it was left by a dead process that had the same pid (a failing or
/// killed run keeps its files): it is removed, or a test would build on a stranger's leftovers
/// (a repository whose commit already exists has nothing to commit).
inline std::string TempPath(const std::string& what) {
  static std::atomic<int> counter{0};
  std::string path =
      "/tmp/unidesk-e2e-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" + what;
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    // --one-file-system: never into a mount a stray process may still hold.
    if (Shell("rm -rf --one-file-system " + ShellQuote(path)) != 0 ||
        lstat(path.c_str(), &st) == 0) {
      throw std::runtime_error("cannot remove the stale " + path);
    }
  }
  return path;
}

/// The whole file, or "" when it does not exist.
inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// What a finished command printed and returned.
struct Outcome {
  int code = -1;
  std::string out;
  std::string err;
};

/// Runs `binary args` through the shell under a time limit (124 when it had to be stopped).
inline Outcome Run(const std::string& binary, const std::string& args, int timeout_s = 60) {
  std::string err_path = TempPath("stderr");
  Outcome o;
  o.code = Shell("timeout -s KILL " + std::to_string(timeout_s) + " " + binary + " " + args +
                     " 2>" + err_path + " </dev/null",
                 &o.out);
  o.err = ReadFile(err_path);
  std::remove(err_path.c_str());
  return o;
}

/// `unidesk --db <conninfo> <args>`.
inline Outcome Cli(const std::string& conninfo, const std::string& args) {
  return Run(CliBinary(), "--db " + Quote(conninfo) + " " + args);
}

/// The first column of the first row of `sql` as text ("" for NULL).
inline std::string Text(const std::string& conninfo, const std::string& sql) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  auto r = tx.exec(sql);
  return r[0][0].is_null() ? "" : r[0][0].c_str();
}

/// md5 of every audit_log row (as row text) up to `position`, in position order.
inline std::string AuditChecksum(const std::string& conninfo, long long upto) {
  return Text(conninfo,
              "SELECT md5(coalesce(string_agg(a::text, ',' ORDER BY position), '')) FROM "
              "audit_log a WHERE position <= " +
                  std::to_string(upto));
}

/// md5 of the audit columns as they are, and as the events say they must be (computed in SQL,
/// independent of the projector's code), up to `position`.
inline std::string AuditFingerprint(const std::string& conninfo, long long upto) {
  return Text(conninfo,
              "SELECT md5(coalesce(string_agg(concat_ws('|', position, recorded_at, actor, action, "
              "subject, correlation_id, causation_id, source, event_id), ',' ORDER BY position), "
              "'')) FROM audit_log WHERE position <= " +
                  std::to_string(upto));
}
inline std::string ExpectedAuditFingerprint(const std::string& conninfo, long long upto) {
  return Text(conninfo,
              "SELECT md5(coalesce(string_agg(concat_ws('|', position, recorded_at, "
              "coalesce(nullif(metadata->>'actor', ''), 'unknown'), type, stream_id, "
              "coalesce(metadata->>'correlation_id', ''), coalesce(metadata->>'causation_id', ''), "
              "coalesce(metadata->>'source', ''), event_id), ',' ORDER BY position), '')) FROM "
              "events WHERE position <= " +
                  std::to_string(upto));
}

/// Starts `unidesk-server --db <conninfo> --roles projector` with info logging into `log_path`.
inline std::unique_ptr<ChildProcess> StartServer(const std::string& conninfo,
                                                 const std::string& log_path) {
  return std::make_unique<ChildProcess>(
      std::vector<std::string>{ServerBinary(), "--db", conninfo, "--roles", "projector"},
      std::vector<std::string>{"UNIDESK_LOG=info"}, log_path);
}

/// Sends `sig` and waits (up to `timeout`) for the exit; returns the exit status, -1 if it stayed.
inline int StopChild(ChildProcess& child, int sig,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  child.Signal(sig);
  if (!WaitUntil([&] { return !child.Running(); }, timeout)) return -1;
  return child.Wait();
}

}  // namespace unidesk::test::e2e
