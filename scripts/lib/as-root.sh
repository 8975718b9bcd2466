# Sourced by the scripts that need root: rerun the calling script through sudo when not root, so the same
# command works for root on a minimal system (no sudo there) and for a user with sudo.
# sudo resets the environment, so the settings these scripts read (PERCPU_*, CI, PIP_*, proxies) are
# passed on explicitly: `PERCPU_SKIP_VM=1 scripts/test` means the same for a user as for root.
if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$(basename "$0"): needs root (BPF programs, system packages), and sudo is not installed: run it as root" >&2
        exit 1
    fi
    keep=()
    while IFS= read -r name; do
        case "$name" in
            PERCPU_* | CI | PIP_* | http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY)
                keep+=("$name=${!name}") ;;
        esac
    done < <(compgen -e)
    exec sudo -- env "${keep[@]}" "$0" "$@"
fi
