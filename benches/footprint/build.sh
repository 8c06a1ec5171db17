#!/usr/bin/env bash
# Builds the release binary of each feature set for this machine and, with TARGETS, for
# other architectures (Debian's cross gcc: gcc-arm-linux-gnueabihf, gcc-aarch64-linux-gnu;
# `rustup target add` the triple first), and copies them to
# target/footprint/<triple>/weir-<set>, which `cargo bench -p weir-footprint` then measures.
#   benches/footprint/build.sh
#   SETS=edge TARGETS="armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu" benches/footprint/build.sh
# OPT_LEVEL=z (or 3) builds with another opt-level than the release profile's "s", into
# weir-<set>-<level>: z is 14% smaller and 0.72x as fast, 3 is 66% larger and as fast (README
# "Footprint").
set -euo pipefail
cd "$(dirname "$0")/../.."
host=$(rustc -vV | sed -n 's/^host: //p')
sets=${SETS:-full edge minimal}
targets=${TARGETS:-$host}
# The binaries are position-dependent executables (not PIE), as Go links its binaries by
# default: on amd64 3.2 MB smaller, and 2.8 MB less private memory per process (a PIE's
# relocations are applied at start into private pages). ASLR still places the libraries,
# stack and heap, not the executable itself. PIE=1 builds a PIE. See the README's "Footprint".
# (Per target: a plain RUSTFLAGS would also reach the proc-macros, which must stay PIC.)
suffix=""
if [ -n "${OPT_LEVEL:-}" ]; then
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=$OPT_LEVEL
  suffix="-$OPT_LEVEL"
fi
for t in $targets; do
  if [ "${PIE:-0}" != 1 ]; then
    export "CARGO_TARGET_$(echo "$t" | tr a-z- A-Z_)_RUSTFLAGS=-C relocation-model=static"
  fi
  case "$t" in
    "$host") cc="" ;;
    armv7-unknown-linux-gnueabihf) cc=arm-linux-gnueabihf-gcc ;;
    aarch64-unknown-linux-gnu) cc=aarch64-linux-gnu-gcc ;;
    *) echo "no cross compiler known for $t" >&2; exit 2 ;;
  esac
  if [ -n "$cc" ]; then
    export "CC_${t//-/_}=$cc"
    export "CARGO_TARGET_$(echo "$t" | tr a-z- A-Z_)_LINKER=$cc"
  fi
  for s in $sets; do
    echo "== $s for $t" >&2
    cargo build --release --locked --bin weir --target "$t" --no-default-features --features "$s"
    install -D "target/$t/release/weir" "target/footprint/$t/weir-$s$suffix"
  done
done
ls -l target/footprint/*/weir-*
