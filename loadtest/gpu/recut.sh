#!/usr/bin/env bash
# Re-cut the wheel chunks (.whl/p1..p3 from build_wheels.sh, .whl/p4/ragx.tar.xz, the extra wheels of .whl/p5 and
# peft) into .whl/c1..cN of PART_MIB (32) each, so that a device call carrying one part stays under 64 MiB even when
# the checkout itself travels with ~30 MiB. On the GPU host: copy each part into /tmp/w, then `rag.sh unpack`.
# Usage (repo root, CPU machine): bash loadtest/gpu/recut.sh [PEFT_WHEEL]
set -euo pipefail
part_mib="${PART_MIB:-32}" peft="${1:-}"
pkg="$(mktemp -d)" && trap 'rm -rf "$pkg"' EXIT
mkdir -p "$pkg/extra"
cp .whl/p1/* .whl/p2/* .whl/p3/* .whl/p4/ragx.tar.xz "$pkg"/
cp .whl/p5/*.whl "$pkg/extra/"
if [ -n "$peft" ]; then cp "$peft" "$pkg/extra/"; fi
(cd "$pkg" && sha256sum wheels.tar.xz.* ragx.tar.xz extra/* > SUMS)
rm -rf .whl/c .whl/c[0-9]*
mkdir -p .whl/c
tar cf - -C "$pkg" . | split -b "${part_mib}M" -d - .whl/c/part.
for f in .whl/c/part.*; do n=$((10#${f##*.} + 1)); mkdir -p ".whl/c$n" && mv "$f" ".whl/c$n/"; done
rmdir .whl/c
du -sh .whl/c[0-9]*
