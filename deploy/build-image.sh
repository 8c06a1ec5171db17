#!/usr/bin/env bash
# Builds deploy/Dockerfile where there is no Docker engine and no registry to pull base
# images from (as on Weir's build machines): with buildah (Debian package), and the two
# base images made locally instead of pulled:
#   - the build base: Debian bookworm (debootstrap from the Debian mirror) with gcc and
#     this machine's Rust toolchain, standing in for docker.io/library/rust;
#   - the runtime base: glibc, libgcc, CA certificates and the user 65532 taken from that
#     Debian, standing in for gcr.io/distroless/cc-debian12:nonroot.
# Prints the image's size. Usage: deploy/build-image.sh [tag]   (default localhost/weir:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/weir:dev}
work=${WEIR_IMAGE_WORK:-/tmp/weir-image}
bah=(buildah --storage-driver vfs)

need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

has_image() { "${bah[@]}" inspect --type image "$1" >/dev/null 2>&1; }

if ! has_image localhost/weir-build-base; then
  rm -rf "$work/rootfs"
  mkdir -p "$work"
  /usr/sbin/debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates \
    bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  # this machine's CA bundle, so that cargo can reach crates.io behind a TLS-inspecting
  # proxy (the runtime base keeps Debian's own bundle)
  cp -L /etc/ssl/certs/ca-certificates.crt "$work/build-ca.crt"
  toolchain=$(rustc --print sysroot)
  mkdir -p "$work/rootfs/usr/local/rust"
  tar -C "$toolchain" --exclude=share/doc -cf - . | tar -C "$work/rootfs/usr/local/rust" -xf -
  c=$("${bah[@]}" from scratch)
  mnt=$("${bah[@]}" mount "$c")
  cp -a "$work/rootfs/." "$mnt/"
  cp "$work/build-ca.crt" "$mnt/etc/ssl/certs/ca-certificates.crt"
  "${bah[@]}" umount "$c"
  "${bah[@]}" config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo "$c"
  "${bah[@]}" commit -q "$c" localhost/weir-build-base
  "${bah[@]}" rm "$c" >/dev/null
fi

if ! has_image localhost/weir-runtime-base; then
  [ -d "$work/rootfs" ] || { echo "the build base exists but $work/rootfs is gone: remove localhost/weir-build-base and rerun" >&2; exit 1; }
  c=$("${bah[@]}" from scratch)
  mnt=$("${bah[@]}" mount "$c")
  arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  mkdir -p "$mnt/lib/$arch" "$mnt/lib64" "$mnt/etc/ssl/certs" "$mnt/tmp" "$mnt/home/nonroot"
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1; do
    [ -e "$work/rootfs/lib/$arch/$lib" ] && cp -L "$work/rootfs/lib/$arch/$lib" "$mnt/lib/$arch/"
  done
  [ -e "$mnt/lib/$arch/ld-linux-x86-64.so.2" ] && ln -s "../lib/$arch/ld-linux-x86-64.so.2" "$mnt/lib64/ld-linux-x86-64.so.2"
  cp -L "$work/rootfs/etc/ssl/certs/ca-certificates.crt" "$mnt/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$mnt/etc/group"
  chmod 1777 "$mnt/tmp"
  chown 65532:65532 "$mnt/home/nonroot"
  "${bah[@]}" umount "$c"
  "${bah[@]}" config --user 65532:65532 "$c"
  "${bah[@]}" commit -q "$c" localhost/weir-runtime-base
  "${bah[@]}" rm "$c" >/dev/null
fi

"${bah[@]}" build --isolation chroot \
  --build-arg RUST_IMAGE=localhost/weir-build-base \
  --build-arg RUNTIME_IMAGE=localhost/weir-runtime-base \
  --build-arg BUILDARCH="$(dpkg --print-architecture)" \
  -f deploy/Dockerfile -t "$tag" .
"${bah[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$tag"
