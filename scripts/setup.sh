#!/usr/bin/env bash
# Set up percpu on a Debian/Ubuntu machine: system packages, a virtualenv in .venv, the package itself.
# Safe to rerun: it installs only what is missing.
#
#   scripts/setup.sh          what running percpu needs (libbpf1 and Python)
#   scripts/setup.sh --dev    plus what the test suite, benchmarks and the VM matrix need
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "setup: installing system packages needs root: rerun with sudo" >&2
        exit 1
    fi
}

# Runtime: libbpf.so.1 (no compiler, headers or LLVM), Python 3.10+ with venv.
pkgs=(libbpf1 python3 python3-venv python3-pip)
if [ "$dev" = 1 ]; then
    # Tests compare with bpftool, drive `percpu top` in tmux, scrape with a real Prometheus, rebuild the
    # BPF objects to prove the shipped ones match (clang, llvm, libbpf-dev; the arm64 set needs arm64's
    # asm headers) and boot VMs (qemu; the kernels come from Debian's archive into a cache, unpacked with
    # dpkg-deb and indexed by depmod; scripts/arm64-check builds an arm64 root with mmdebstrap, packed
    # with cpio). virtme-ng's guest init runs udevd to make /dev/virtio-ports/, the ports that carry the
    # guest's output back: without udev it falls back to the console, which the VM runner does not read.
    # scripts/container-check builds percpu's image (mmdebstrap) and runs it with podman and runc
    # (crun, podman's other runtime, refuses a machine with cgroup v1 and v2 mounted at once); the pods'
    # pause image is made from busybox-static, since bookworm has no catatonit.
    pkgs+=(bpftool tmux prometheus clang llvm libbpf-dev linux-libc-dev-arm64-cross gcc libc6-dev
           qemu-system-x86 qemu-system-arm mmdebstrap cpio busybox-static
           bpftrace procps bpfcc-tools python3-bpfcc kmod file debian-archive-keyring util-linux
           systemd openssl udev podman runc)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    need_root
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup: percpu needs Python 3.10 or newer; $("$py" --version) found" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.percpu-installed-$dev
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    if [ "$dev" = 1 ]; then
        .venv/bin/python -m pip install -q -e '.[dev,exporter]'
    else
        .venv/bin/python -m pip install -q -e '.[exporter]'
    fi
    touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/percpu --version 2>/dev/null || echo percpu))"
