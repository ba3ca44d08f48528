#!/usr/bin/env bash
# bench/run's setup, idempotent: the project's Debian packages (scripts/deps.sh), gnuplot for the
# plot, and with --peer Node.js, npm and the pinned node-red (bench/nodered/package.json, exact
# versions from package-lock.json) in bench/nodered/node_modules. Only Debian's and npm's
# registries are used. A warm machine pays a few dpkg queries and one version check.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/../scripts/deps.sh"

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "bench setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install gnuplot-nox
[ "${1:-}" = --peer ] || exit 0

# Node.js 18 or later (node-red 4.1 needs >= 18.5): Debian 12's nodejs and npm unless a node and an
# npm are already there (another Node.js install brings its own npm; Debian's npm would conflict).
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' ||
  { echo "bench setup: node-red 4.1 needs Node.js 18 or later, found $(node --version)" >&2; exit 1; }
want=$(node -e 'console.log(require(process.argv[1]).dependencies["node-red"])' "$here/nodered/package.json")
have=$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) { console.log("none") }' \
  "$here/nodered/node_modules/node-red/package.json")
if [ "$have" != "$want" ]; then
  echo "bench setup: npm ci node-red@$want into bench/nodered/node_modules" >&2
  (cd "$here/nodered" && npm ci --no-audit --no-fund --omit=optional --loglevel=error >/dev/null)
fi
node "$here/nodered/make_flow.js" --check
