// unidesk-provider: the Provider Gateway agent's composition root.

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core/log.h"
#include "core/version.h"
#include "provider/agent.h"
#include "provider/agent_config.h"
#include "provider/git_fetch_command.h"

int main(int argc, char** argv) {
  using namespace unidesk::provider;
  // The git cache runs its fetches as this binary's child (git_fetch_command.h).
  if (argc > 1 && std::strcmp(argv[1], kGitFetchCommand) == 0) {
    return RunGitFetchCommand(argc - 2, argv + 2);
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("unidesk-provider %s (%s)\n", UNIDESK_VERSION, unidesk::core::GitCommit());
      return 0;
    }
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kAgentUsage, stdout);
      return 0;
    }
  }
  auto config = LoadAgentConfig(argc - 1, argv + 1);
  if (!config.ok()) {
    std::fprintf(stderr, "unidesk-provider: %s\n(see --help)\n", config.error().c_str());
    return 2;
  }
  // SIGTERM and SIGINT are taken by one thread; the agent says goodbye and Run returns.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto log = unidesk::core::MakeLogger("provider");
  try {
    Agent agent(config.value(), log);
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&signals, &sig);
      if (sig == 0) return;
      log->info("signal {} received; closing the session", sig);
      agent.Stop();
    });
    AgentExit exit = agent.Run();
    if (exit == AgentExit::kStopped) {
      waiter.join();
    } else {
      waiter.detach();  // no signal will come; the process ends here
    }
    log->info("stopped");
    return static_cast<int>(exit);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unidesk-provider: %s\n", e.what());
    return 1;
  }
}
