#include "provider/tar.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

namespace unidesk::provider {

namespace {

namespace fs = std::filesystem;

void Octal(char* field, std::size_t width, unsigned long long value) {
  // width includes the terminating NUL.
  std::snprintf(field, width, "%0*llo", static_cast<int>(width - 1), value);
}

/// Splits `path` into ustar's prefix (<= 155) and name (<= 100); false when impossible.
bool SplitName(const std::string& path, std::string& prefix, std::string& name) {
  if (path.size() <= 100) {
    prefix.clear();
    name = path;
    return true;
  }
  for (std::size_t slash = path.find('/'); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    if (slash <= 155 && path.size() - slash - 1 <= 100) {
      prefix = path.substr(0, slash);
      name = path.substr(slash + 1);
      return true;
    }
  }
  return false;
}

std::optional<TarError> Header(std::string& out, const std::string& path, char type, unsigned mode,
                               unsigned long long size, const std::string& link = "") {
  char h[512];
  std::memset(h, 0, sizeof h);
  std::string prefix, name;
  if (!SplitName(path, prefix, name)) return TarError{"path too long for a tar entry: " + path};
  if (link.size() > 100) return TarError{"symlink target too long: " + path};
  std::memcpy(h, name.data(), name.size());
  Octal(h + 100, 8, mode & 07777);
  Octal(h + 108, 8, 0);
  Octal(h + 116, 8, 0);
  Octal(h + 124, 12, size);
  Octal(h + 136, 12, 946684800);  // fixed time: the same tree gives the same bytes
  std::memset(h + 148, ' ', 8);
  h[156] = type;
  std::memcpy(h + 157, link.data(), link.size());
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memcpy(h + 345, prefix.data(), prefix.size());
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(h + 148, 8, "%06o", sum);
  h[155] = ' ';
  out.append(h, sizeof h);
  return std::nullopt;
}

}  // namespace

core::Result<std::string, TarError> TarDirectory(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> entries;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) return TarError{"cannot read " + dir + ": " + ec.message()};
  for (; it != end; it.increment(ec)) {
    if (ec) return TarError{"cannot read " + dir + ": " + ec.message()};
    fs::path rel = it->path().lexically_relative(dir);  // not relative(): it follows links
    if (rel == ".git") {
      it.disable_recursion_pending();
      continue;
    }
    entries.push_back(rel);
  }
  std::sort(entries.begin(), entries.end());
  std::string out;
  for (const fs::path& rel : entries) {
    std::string full = (fs::path(dir) / rel).string();
    struct stat st {};
    if (lstat(full.c_str(), &st) != 0) return TarError{"cannot stat " + full};
    std::string name = rel.generic_string();
    if (S_ISDIR(st.st_mode)) {
      if (auto e = Header(out, name + "/", '5', st.st_mode, 0)) return *e;
    } else if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t n = readlink(full.c_str(), target, sizeof target);
      if (n < 0) return TarError{"cannot read the link " + full};
      if (auto e = Header(out, name, '2', st.st_mode, 0, std::string(target, n))) return *e;
    } else if (S_ISREG(st.st_mode)) {
      std::ifstream f(full, std::ios::binary);
      if (!f) return TarError{"cannot read " + full};
      std::stringstream ss;
      ss << f.rdbuf();
      std::string data = ss.str();
      if (auto e = Header(out, name, '0', st.st_mode, data.size())) return *e;
      out += data;
      out.append((512 - data.size() % 512) % 512, '\0');
    } else {
      return TarError{"not a file, directory or symlink: " + full};
    }
  }
  out.append(1024, '\0');
  return out;
}

}  // namespace unidesk::provider
