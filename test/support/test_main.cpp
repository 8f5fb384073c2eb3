// doctest's main, and the clean-up after a passing run: the end-to-end helpers name their files
// and folders /tmp/unidesk-e2e-<pid>-N-what (e2e_support.h TempPath). A passing run removes its
// own; a failing one keeps them for whoever reads its logs. The removal runs at exit, after the
// tests' static fixtures are destroyed (a fixture's Docker engine is stopped through the pid
// file in its folder, so the folder must outlive it).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace {

bool passed = false;

void RemoveOwnTempFiles() {
  if (!passed) return;
  // --one-file-system: never into a mount a stray process may still hold.
  std::string cmd =
      "rm -rf --one-file-system /tmp/unidesk-e2e-" + std::to_string(getpid()) + "-* 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return;  // best effort: the run itself passed
}

}  // namespace

int main(int argc, char** argv) {
  // Registered before any static fixture is made, so it runs after they are all destroyed.
  std::atexit(RemoveOwnTempFiles);
  doctest::Context context(argc, argv);
  int failed = context.run();
  passed = failed == 0 && !context.shouldExit();
  return failed;
}
