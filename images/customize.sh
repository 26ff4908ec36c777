#!/bin/sh
# mmdebstrap --customize-hook: finish the guest root in "$1" (run on the host, as root).
set -eu
root="$1"

# Time zone set explicitly (the image records it): tests must not depend on the host's.
ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
echo "Etc/UTC" > "$root/etc/timezone"

# The unprivileged user that package code runs as; the agent (root) keeps the port.
chroot "$root" useradd --uid 1000 --user-group --create-home --shell /bin/sh pyti

# Mount points /init fills; /opt/pyti receives the agent and codec from the initramfs.
mkdir -p "$root/mnt/setup" "$root/opt/pyti"

echo pyti > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost pyti\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# Nothing in the guest needs apt's lists or caches, and they only add size.
rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/*.bin "$root/var/cache/debconf"/*-old
