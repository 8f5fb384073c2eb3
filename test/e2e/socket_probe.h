#pragma once
// Looks at another process's TCP socket from a test: which fd of process `pid` is the end of a
// loopback connection, and whether that socket has TCP_NODELAY. The socket is found through
// /proc/net/tcp (its inode) and /proc/PID/fd, and copied into this process with pidfd_getfd
// (Linux 5.6+; the test runs as the same user as the process, so it may).

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>

namespace unidesk::test::e2e {

/// The inodes of the established IPv4 TCP sockets with local port `local` and remote port
/// `remote` (-1: any).
inline std::set<std::string> TcpSocketInodes(int local, int remote) {
  std::set<std::string> out;
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string slot, local_addr, remote_addr, state, queues, timer, retr, uid, timeout, inode;
    in >> slot >> local_addr >> remote_addr >> state >> queues >> timer >> retr >> uid >> timeout >>
        inode;
    auto port = [](const std::string& addr) {
      return std::stoi(addr.substr(addr.find(':') + 1), nullptr, 16);
    };
    if (state == "01" && (local < 0 || port(local_addr) == local) &&
        (remote < 0 || port(remote_addr) == remote)) {
      out.insert("socket:[" + inode + "]");
    }
  }
  return out;
}

/// Whether process `pid`'s end of an established connection from local port `local` to remote
/// port `remote` (-1: any) has TCP_NODELAY; nullopt when the process holds no such socket.
inline std::optional<bool> TcpNoDelayOf(int pid, int local, int remote) {
  std::set<std::string> inodes = TcpSocketInodes(local, remote);
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code link_ec;
    if (!inodes.count(std::filesystem::read_symlink(e.path(), link_ec).string())) continue;
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return std::nullopt;
    int fd = static_cast<int>(
        syscall(SYS_pidfd_getfd, pidfd, std::stoi(e.path().filename().string()), 0));
    close(pidfd);
    if (fd < 0) return std::nullopt;
    int on = 0;
    socklen_t len = sizeof on;
    int rc = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len);
    close(fd);
    if (rc != 0) return std::nullopt;
    return on != 0;
  }
  return std::nullopt;
}

/// The local port of a connected socket.
inline int LocalPort(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

}  // namespace unidesk::test::e2e
