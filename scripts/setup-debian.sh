#!/bin/sh
# Installs from Debian what the benchmarks and the browser test need: rsync (the comparison in bench:sync and
# bench:rescan), openssh-server and openssh-client (bench:wire starts its own sshd on 127.0.0.1 for rsync over
# ssh; the package's own service and configuration are not used), chromium (the dashboard test drives it with
# playwright-core; npm's own browser download does not work on a closed network) and aria2 (the metalink test
# downloads through aria2c, a real metalink client). `setup-debian.sh chromium` installs only the named packages;
# `npm run bench` calls it with BENCH_PACKAGES below (the incumbents it compares with, xorriso for the ISO
# corpus, dpkg-dev for the repository index, GNU time for peak RSS of the incumbents).
# Idempotent: exits 0 at once when everything is installed; runs `apt-get update` only when a package is not
# installable from the current package lists. Needs root (or sudo). The unit tests never need it.
set -eu

BENCH_PACKAGES="rsync casync zsync xorriso dpkg-dev time openssh-server openssh-client"
if [ "${1:-}" = "--bench" ]; then set -- $BENCH_PACKAGES; fi
PACKAGES="${*:-rsync chromium aria2}"

missing=""
for pkg in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $pkg"
  fi
done
if [ -z "$missing" ]; then
  echo "setup-debian: already installed:$(printf ' %s' $PACKAGES)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-debian: apt-get not found (not Debian?); install$missing yourself" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "setup-debian: need root or sudo to install$missing" >&2
  exit 1
fi

# A package the lists do not know yet (fresh container, no lists): update once, then install.
need_update=0
for pkg in $missing; do
  candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then need_update=1; fi
done
if [ "$need_update" -eq 1 ]; then
  echo "setup-debian: apt-get update"
  $SUDO apt-get update
fi

echo "setup-debian: installing$missing"
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
