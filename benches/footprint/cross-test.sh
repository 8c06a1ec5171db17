#!/usr/bin/env bash
# Runs the engine's window tests (tests/windows.rs: windows checked against DataFusion batch
# SQL over the same rows) built for other architectures, under qemu-user (Debian's
# qemu-user-static, with the cross toolchain's libraries; `rustup target add` the triple
# first). Not part of scripts/test: a debug build of the whole graph per architecture takes
# over an hour on a 2-core machine.
#   TARGETS="armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu" benches/footprint/cross-test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=${TARGETS:-armv7-unknown-linux-gnueabihf}
for t in $targets; do
  case "$t" in
    armv7-unknown-linux-gnueabihf) cc=arm-linux-gnueabihf-gcc; qemu="qemu-arm-static -L /usr/arm-linux-gnueabihf" ;;
    aarch64-unknown-linux-gnu) cc=aarch64-linux-gnu-gcc; qemu="qemu-aarch64-static -L /usr/aarch64-linux-gnu" ;;
    *) echo "no cross compiler known for $t" >&2; exit 2 ;;
  esac
  upper=$(echo "$t" | tr a-z- A-Z_)
  export "CC_${t//-/_}=$cc" "CARGO_TARGET_${upper}_LINKER=$cc" "CARGO_TARGET_${upper}_RUNNER=$qemu"
  echo "== tests/windows.rs for $t" >&2
  cargo test --locked --target "$t" --test windows -- --test-threads 1
done
