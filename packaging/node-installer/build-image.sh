#!/usr/bin/env bash
# Builds the node installer's OCI image archive (for `ctr images import`,
# or a registry with skopeo): static busybox, the installer, the static
# shim, and kubectl (from Debian's kubernetes-client, for the node label)
# when one is given or can be had.
#
#   build-image.sh OUT.tar NAME SHIM_BINARY [KUBECTL_BINARY]
#
# The image runs `/installer.sh run`; see installer.sh and daemonset.yaml.
set -euo pipefail
out=$1 name=$2 shim=$3 kubectl=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
busybox=$(command -v busybox) || { echo "build-image.sh needs busybox (busybox-static)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/opt/rsv2" "$root/host" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$here/installer.sh" "$root/installer.sh"
install -m 0755 "$shim" "$root/opt/rsv2/containerd-shim-rust-v2"
[ -z "$kubectl" ] || install -m 0755 "$kubectl" "$root/bin/kubectl"

sha() { sha256sum "$1" | cut -d' ' -f1; }
blobs=$work/oci/blobs/sha256
mkdir -p "$blobs"
tar -C "$root" --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 -cf "$work/layer.tar" .
layer=$(sha "$work/layer.tar"); layer_size=$(stat -c %s "$work/layer.tar")
mv "$work/layer.tar" "$blobs/$layer"
printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/bin"],"Entrypoint":["/installer.sh"],"Cmd":["run"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer" > "$work/config.json"
config=$(sha "$work/config.json"); config_size=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$blobs/$config"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" > "$work/manifest.json"
manifest=$(sha "$work/manifest.json"); manifest_size=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$blobs/$manifest"
tag=${name##*:}
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$manifest_size" "$name" "$tag" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
tar -C "$work/oci" --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 -cf "$out" oci-layout index.json blobs
echo "$out"
