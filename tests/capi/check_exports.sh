#!/usr/bin/env bash
# The exported-symbol check: libtemper_c.so exports exactly the functions listed in
# capi/temper_c.symbols, each under the version node TEMPER_C_0, and temper.h declares exactly
# those functions. Nothing else (Abseil, fmt, libstdc++, the C++ API) may appear in its dynamic
# symbol table. A function added to the ABI is added to all three in the same commit.
# Usage: check_exports.sh <libtemper_c.so> <temper.h> <temper_c.symbols>
set -euo pipefail
lib=$1 header=$2 list=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nm -D --defined-only "$lib" | awk '{print $NF}' > "$tmp/dynamic"
if grep -v -e '^TEMPER_C_0$' -e '^temper_[a-z0-9_]*@@TEMPER_C_0$' "$tmp/dynamic"; then
  echo "FAIL: $lib exports the symbols above (only temper_*@@TEMPER_C_0 may be exported)" >&2
  exit 1
fi
grep -v '^TEMPER_C_0$' "$tmp/dynamic" | sed 's/@@TEMPER_C_0$//' | LC_ALL=C sort > "$tmp/exported"
grep -oE '^TEMPER_C_API [^(]*[^a-z0-9_]temper_[a-z0-9_]+\(' "$header" | grep -oE 'temper_[a-z0-9_]+\($' | tr -d '(' |
  LC_ALL=C sort > "$tmp/declared"
grep -v '^#' "$list" | LC_ALL=C sort > "$tmp/committed"

status=0
if ! diff -u "$tmp/committed" "$tmp/exported"; then
  echo "FAIL: the exported functions (+) differ from $list (-)" >&2
  status=1
fi
if ! diff -u "$tmp/committed" "$tmp/declared"; then
  echo "FAIL: the functions declared in $header (+) differ from $list (-)" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "OK: $(wc -l < "$tmp/committed") functions exported, declared and listed"
exit "$status"
