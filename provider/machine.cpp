#include "provider/machine.h"

#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace unidesk::provider {

namespace proto = core::protocol;

namespace {

/// Runs `command` through the shell; its stdout, and whether it exited 0.
std::pair<std::string, bool> Capture(const std::string& command) {
  FILE* p = ::popen((command + " 2>/dev/null").c_str(), "r");
  if (!p) return {"", false};
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int status = ::pclose(p);
  return {out, status == 0};
}

std::string Trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r\n");
  auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool HasNvidiaSmi(const std::string& nvidia_smi) {
  return Capture("command -v '" + nvidia_smi + "'").second;
}

}  // namespace

std::vector<proto::Gpu> ParseNvidiaSmi(const std::string& csv) {
  std::vector<proto::Gpu> out;
  std::istringstream in(csv);
  for (std::string line; std::getline(in, line);) {
    std::stringstream row(line);
    std::string index, name, mem;
    if (!std::getline(row, index, ',') || !std::getline(row, name, ',') ||
        !std::getline(row, mem)) {
      continue;
    }
    try {
      out.push_back(
          {std::stoi(Trim(index)), Trim(name), std::stoll(Trim(mem)) * 1024 * 1024});  // MiB
    } catch (const std::exception&) {
      // A line nvidia-smi could not fill ("[N/A]") is skipped, not guessed.
    }
  }
  return out;
}

proto::Resources DetectResources(const MachineProbe& probe) {
  if (probe.resources_file) {
    std::ifstream f(*probe.resources_file);
    std::stringstream ss;
    ss << f.rdbuf();
    auto r = proto::ParseResources(ss.str());
    if (!r.ok()) {
      throw std::runtime_error("resources file " + *probe.resources_file + ": " +
                               r.error().message);
    }
    return r.value();
  }
  proto::Resources r;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  r.cpu_cores = cpus > 0 ? static_cast<int>(cpus) : 0;
  r.memory_bytes = static_cast<std::int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE);
  struct statvfs vfs {};
  if (::statvfs(probe.data_dir.c_str(), &vfs) == 0) {
    r.disk_bytes = static_cast<std::int64_t>(vfs.f_blocks) * vfs.f_frsize;
    r.disk_free_bytes = static_cast<std::int64_t>(vfs.f_bavail) * vfs.f_frsize;
  }
  if (HasNvidiaSmi(probe.nvidia_smi)) {
    auto [csv, ok] = Capture("'" + probe.nvidia_smi +
                             "' --query-gpu=index,name,memory.total --format=csv,noheader,nounits");
    if (ok) r.gpus = ParseNvidiaSmi(csv);
  }
  return r;
}

proto::Health DetectHealth(const MachineProbe& probe) {
  proto::Health h;
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", probe.docker_socket.c_str());
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const char req[] = "GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    char buf[512] = {0};
    if (::write(fd, req, sizeof req - 1) > 0 && ::read(fd, buf, sizeof buf - 1) > 0 &&
        std::string(buf).find(" 200 ") != std::string::npos) {
      h.docker_ok = true;
    } else {
      h.docker_detail = "Docker at " + probe.docker_socket + " did not answer /_ping";
    }
  } else {
    h.docker_detail = "no Docker engine at " + probe.docker_socket;
  }
  if (fd >= 0) ::close(fd);
  GpuHealth gpus = CheckGpus(probe.nvidia_smi);
  h.gpus_ok = gpus.ok;
  h.gpus_detail = gpus.detail;
  return h;
}

GpuHealth CheckGpus(const std::string& nvidia_smi) {
  GpuHealth g;
  if (!HasNvidiaSmi(nvidia_smi)) return g;
  auto [out, ok] = Capture("'" + nvidia_smi + "' --query-gpu=index --format=csv,noheader");
  g.ok = ok;
  if (!ok) {
    std::string first = Trim(out.substr(0, out.find('\n')));
    g.detail = "nvidia-smi failed" + (first.empty() ? "" : ": " + first);
  }
  return g;
}

}  // namespace unidesk::provider
