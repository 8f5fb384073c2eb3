#pragma once
// A server that accepts TCP connections and never answers: a git remote that hangs, as a
// firewalled or overloaded one can. libgit2 alone would wait on it for ever.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace unidesk::test::e2e {

struct SilentServer {
  int fd = -1;
  int port = 0;
  std::atomic<bool> stop{false};
  std::atomic<int> accepted{0};
  std::mutex mu;
  std::vector<int> conns;
  std::thread thread;

  SilentServer() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // children must not hold it open
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(fd, 512) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("silent server: cannot listen");
    }
    port = ntohs(a.sin_port);
    thread = std::thread([this] {
      while (!stop) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        std::lock_guard<std::mutex> lock(mu);
        conns.push_back(c);
        ++accepted;
      }
    });
  }
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;
  ~SilentServer() { Close(); }

  std::string Url(const std::string& repo, const std::string& scheme = "https") const {
    return scheme + "://127.0.0.1:" + std::to_string(port) + "/" + repo;
  }
  /// Every held connection breaks, and new ones are refused: the hung fetches fail.
  void Close() {
    if (!thread.joinable()) return;
    stop = true;
    thread.join();
    std::lock_guard<std::mutex> lock(mu);
    for (int c : conns) close(c);
    close(fd);
  }
};

}  // namespace unidesk::test::e2e
