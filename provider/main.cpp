// unidesk-provider: the Provider Gateway agent's composition root.

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("unidesk-provider %s (%s)\n", UNIDESK_VERSION, UNIDESK_GIT_COMMIT);
      return 0;
    }
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: unidesk-provider [--help] [--version]\n\n"
          "The Provider Gateway agent. It dials out to the server's ingress and runs tasks in\n"
          "Docker; joining is not implemented yet in this version.\n");
      return 0;
    }
  }
  std::fprintf(stderr,
               "unidesk-provider: joining a server is not implemented in this version "
               "(see --help)\n");
  return 2;
}
