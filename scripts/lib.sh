# Shared helpers for the project's shell scripts. Sourced, never run.
# shellcheck shell=bash

UNDERSTUDY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Machine-wide state that outlives a `git clean` (dockerd's log and pid).
UNDERSTUDY_MACHINE_DIR=${UNDERSTUDY_MACHINE_DIR:-/var/lib/understudy}
# Per-checkout state (which images the harness uses); removed by `git clean -xfd`.
UNDERSTUDY_STATE_DIR=${UNDERSTUDY_STATE_DIR:-$UNDERSTUDY_ROOT/.understudy}

say() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# sudo only when we are not root (CI and the dev machines run as root).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
