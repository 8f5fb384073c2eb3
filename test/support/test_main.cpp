// doctest's main, and the clean-up after a passing run: the end-to-end helpers name their files
// and folders /tmp/unidesk-e2e-<pid>-N-what (e2e_support.h TempPath). A passing run removes its
// own; a failing one keeps them for whoever reads its logs. By then every test's local
// fixtures (servers, Docker engines) have stopped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  int failed = context.run();
  if (failed == 0 && !context.shouldExit()) {
    // --one-file-system: never into a mount a stray process may still hold.
    std::string cmd =
        "rm -rf --one-file-system /tmp/unidesk-e2e-" + std::to_string(getpid()) + "-* 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) return 0;  // best effort: the run itself passed
  }
  return failed;
}
