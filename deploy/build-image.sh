#!/usr/bin/env bash
# Builds deploy/Dockerfile where there is no Docker engine and no registry to pull base
# images from (as on Weir's build machines): with buildah (Debian package), and the base
# images made locally instead of pulled:
#   - the build base: Debian bookworm (debootstrap from the Debian mirror) with gcc and
#     this machine's Rust toolchain with its installed targets, standing in for
#     docker.io/library/rust;
#   - a runtime base per architecture: glibc, libgcc, CA certificates and the user 65532
#     from Debian's packages, standing in for gcr.io/distroless/cc-debian12:nonroot.
# For another architecture than this machine's, the build stage cross-compiles (install the
# Rust target first: rustup target add aarch64-unknown-linux-gnu; then remove
# localhost/weir-build-base so that it is made again with it).
# Prints the image's size.
# The binary is the `edge` build unless FEATURES=full (or minimal) is set; OPT_LEVEL=z builds
# it smaller and slower than the release profile (README "Footprint").
#   deploy/build-image.sh [tag] [amd64|arm64|armhf]     (default: localhost/weir:dev, this machine's)
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(dpkg --print-architecture)
arch=${2:-$host}
tag=${1:-localhost/weir:dev}
work=${WEIR_IMAGE_WORK:-/tmp/weir-image}
mirror=http://deb.debian.org/debian
bah=(buildah --storage-driver vfs)
case "$arch" in
  amd64) multiarch=x86_64-linux-gnu; loader=ld-linux-x86-64.so.2; loader_dir=lib64; variant=""; oci=amd64 ;;
  arm64) multiarch=aarch64-linux-gnu; loader=ld-linux-aarch64.so.1; loader_dir=lib; variant=v8; oci=arm64 ;;
  armhf) multiarch=arm-linux-gnueabihf; loader=ld-linux-armhf.so.3; loader_dir=lib; variant=v7; oci=arm ;;
  *) echo "unsupported architecture $arch (amd64, arm64 or armhf)" >&2; exit 2 ;;
esac

need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

has_image() { "${bah[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# Debian bookworm for this machine ($work/rootfs, complete) and for a foreign architecture
# ($work/rootfs-ARCH, packages unpacked only: nothing of it runs here)
rootfs() {
  local a=$1 dir="$work/rootfs" extra=(--include=gcc,libc6-dev,ca-certificates)
  if [ "$a" != "$host" ]; then dir="$work/rootfs-$a"; extra=(--foreign --arch="$a"); fi
  if [ ! -e "$dir/.complete" ]; then
    rm -rf "$dir"
    mkdir -p "$work"
    /usr/sbin/debootstrap --variant=minbase "${extra[@]}" bookworm "$dir" "$mirror" >"$work/debootstrap-$a.log"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

if ! has_image localhost/weir-build-base; then
  root=$(rootfs "$host")
  c=$("${bah[@]}" from scratch)
  mnt=$("${bah[@]}" mount "$c")
  cp -a "$root/." "$mnt/"
  # this machine's CA bundle, so that cargo can reach crates.io behind a TLS-inspecting
  # proxy (the runtime bases keep Debian's own bundle)
  cp -L /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$mnt/usr/local/rust"
  tar -C "$(rustc --print sysroot)" --exclude=share/doc -cf - . | tar -C "$mnt/usr/local/rust" -xf -
  "${bah[@]}" umount "$c"
  "${bah[@]}" config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo "$c"
  "${bah[@]}" commit -q "$c" localhost/weir-build-base
  "${bah[@]}" rm "$c" >/dev/null
fi

runtime=localhost/weir-runtime-base-$arch
if ! has_image "$runtime"; then
  certs=$(rootfs "$host")/etc/ssl/certs/ca-certificates.crt
  root=$(rootfs "$arch")
  c=$("${bah[@]}" from scratch)
  mnt=$("${bah[@]}" mount "$c")
  mkdir -p "$mnt/lib/$multiarch" "$mnt/$loader_dir" "$mnt/etc/ssl/certs" "$mnt/tmp" "$mnt/home/nonroot"
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1 "$loader"; do
    cp -L "$root/lib/$multiarch/$lib" "$mnt/lib/$multiarch/"
  done
  ln -s "/lib/$multiarch/$loader" "$mnt/$loader_dir/$loader"
  cp -L "$certs" "$mnt/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$mnt/etc/group"
  chmod 1777 "$mnt/tmp"
  chown 65532:65532 "$mnt/home/nonroot"
  "${bah[@]}" umount "$c"
  "${bah[@]}" config --arch "$oci" --os linux ${variant:+--variant "$variant"} --user 65532:65532 "$c"
  "${bah[@]}" commit -q "$c" "$runtime"
  "${bah[@]}" rm "$c" >/dev/null
fi

"${bah[@]}" build --isolation chroot --pull=never \
  --arch "$oci" ${variant:+--variant "$variant"} \
  --build-arg RUST_IMAGE=localhost/weir-build-base \
  --build-arg RUNTIME_IMAGE="$runtime" \
  --build-arg BUILDPLATFORM="linux/$host" \
  --build-arg BUILDARCH="$host" \
  --build-arg TARGETARCH="$oci" \
  --build-arg TARGETVARIANT="$variant" \
  --build-arg TARGETPLATFORM="linux/$oci${variant:+/$variant}" \
  --build-arg FEATURES="${FEATURES:-edge}" \
  --build-arg OPT_LEVEL="${OPT_LEVEL:-}" \
  -f deploy/Dockerfile -t "$tag" .
"${bah[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$tag"
