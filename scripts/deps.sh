#!/usr/bin/env bash
# Installs what temper builds against on Debian 12, then builds sentencepiece once.
# Idempotent: packages already present and an existing .deps/sentencepiece are kept.
#
# Why sentencepiece is built here: Debian's libsentencepiece.so embeds its own protobuf 3.14 and
# crashes, before main, any process that also loads Debian's libtorch (protobuf 3.21). Building the
# same source package (0.1.97) as a static library against the system protobuf gives one protobuf
# per process. docs/architecture.md tells the whole story.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev libopenblas0-pthread
  libabsl-dev libfmt-dev catch2 nlohmann-json3-dev
  protobuf-compiler libprotobuf-dev dpkg-dev
  sentencepiece libutf8proc-dev libxxhash-dev libpcre2-dev python3 libgloo-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

spm_prefix="$root/.deps/sentencepiece"
if [ ! -f "$spm_prefix/lib/libsentencepiece.a" ]; then
  echo "deps: building sentencepiece (static, system protobuf) into $spm_prefix"
  # A fresh Debian 12 lists binary packages only; source packages need a deb-src entry.
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $sudo tee /etc/apt/sources.list.d/temper-deb-src.sources >/dev/null
    $sudo apt-get update -qq
  fi
  work="$root/.deps/sentencepiece-src"
  rm -rf "$work" && mkdir -p "$work"
  (cd "$work" && apt-get source -qq sentencepiece=0.1.97-3 >/dev/null 2>&1 || apt-get source -qq sentencepiece >/dev/null)
  src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'sentencepiece-*' | head -n1)
  # Debian's packaging removes the static library target; put it back.
  (cd "$src" && patch -R -s -p1 < debian/patches/disable-static-library.patch)
  # One of Debian's patches includes the bundled protobuf header unconditionally.
  sed -i 's|third_party/protobuf-lite/google/protobuf/message_lite.h|google/protobuf/message_lite.h|' "$src/src/init.h"
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSPM_USE_BUILTIN_PROTOBUF=OFF -DSPM_ENABLE_SHARED=OFF -DSPM_ENABLE_TCMALLOC=OFF \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_INSTALL_PREFIX="$spm_prefix" >/dev/null
  if ! cmake --build "$work/build" --target sentencepiece-static > "$work/build.log" 2>&1; then
    tail -40 "$work/build.log"
    exit 1
  fi
  mkdir -p "$spm_prefix/lib" "$spm_prefix/include"
  cp "$work/build/src/libsentencepiece.a" "$spm_prefix/lib/"
  cp "$src/src/sentencepiece_processor.h" "$spm_prefix/include/"
  rm -rf "$work"
fi
