# Installs what UniDesk needs from Debian 12's packages; quick when everything is present.
# Sourced by ops/up, ops/test and ops/bench.

UNIDESK_PACKAGES=(
  g++ cmake make pkg-config git ca-certificates
  libpqxx-dev libboost-dev libboost-system-dev rapidjson-dev libgit2-dev libspdlog-dev
  doctest-dev libssl-dev
  postgresql-15 postgresql-client-15 clang-format procps iproute2 curl docker.io busybox-static
)

unidesk_install_deps() {
  local missing=()
  for p in "${UNIDESK_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "ops: missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    return 1
  fi
  echo "ops: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Builds into $1 (default build/) with two jobs.
unidesk_build() {
  local dir=${1:-build}
  cmake -S "$UNIDESK_ROOT" -B "$UNIDESK_ROOT/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$UNIDESK_ROOT/$dir" -j2
}
