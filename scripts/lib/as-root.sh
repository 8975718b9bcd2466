# Sourced by the scripts that need root: rerun the calling script through sudo when not root, so the same
# command works for root on a minimal system (no sudo there) and for a user with sudo.
if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$(basename "$0"): needs root (BPF programs, system packages), and sudo is not installed: run it as root" >&2
        exit 1
    fi
    exec sudo -- "$0" "$@"
fi
