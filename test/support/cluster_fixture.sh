#!/usr/bin/env bash
# CTest fixture: `start DIR` makes a fresh throwaway cluster for this test run, `stop DIR` ends it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
case "$1" in
  start)
    "$root/ops/pgcluster" stop "$2" 2>/dev/null || true
    rm -rf "$2"
    "$root/ops/pgcluster" start "$2"
    ;;
  stop)
    "$root/ops/pgcluster" stop "$2"
    rm -rf "$2"
    ;;
esac
