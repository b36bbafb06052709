#!/usr/bin/env bash
# Helpers for starting Ray by hand over several nodes (scripts/slurm_rlvr.sbatch sources this file). Each is
# also a command: `bash scripts/ray_nodes.sh FUNCTION ARGS...`. They run $RLVR_PYTHON (default: this checkout's
# .venv/bin/python), which must have ray and psutil.
#
#   node_address [IFACE]      this node's IPv4 address on IFACE; without one, on the default route's interface
#   ray_start_here ARGS...    `ray start --block ARGS` with --node-ip-address on $RLVR_IFACE (or the default)
#   wait_for_nodes ADDRESS NODES GPUS TIMEOUT_S
#                             poll `ray status` until the cluster at ADDRESS (GCS, HOST:PORT) has at least
#                             NODES nodes and GPUS GPUs; after TIMEOUT_S seconds fail, printing the last status

_RLVR_PY="${RLVR_PYTHON:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python}"

node_address() {
    "$_RLVR_PY" - "${1:-}" <<'EOF'
import socket, sys
import psutil

iface = sys.argv[1]
ipv4 = {name: [a.address for a in addrs if a.family == socket.AF_INET] for name, addrs in psutil.net_if_addrs().items()}
listing = ", ".join(f"{name} {' '.join(found)}" for name, found in ipv4.items() if found)
if iface:
    if not ipv4.get(iface):
        host = socket.gethostname()
        sys.exit(f"rlvr: {host} has no IPv4 address on interface {iface!r} (RLVR_IFACE); it has: {listing}")
    print(ipv4[iface][0])
else:
    # The source address of the default route: connecting a UDP socket sends nothing.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("8.8.8.8", 80))
            print(s.getsockname()[0])
    except OSError as e:
        sys.exit(f"rlvr: {socket.gethostname()} has no default route ({e}): set RLVR_IFACE to one of: {listing}")
EOF
}

ray_start_here() {
    local ip
    ip="$(node_address "${RLVR_IFACE:-}")" || return 1
    exec "$_RLVR_PY" -m ray.scripts.scripts start --node-ip-address="$ip" "$@" --block
}

wait_for_nodes() {
    local address=$1 want_nodes=$2 want_gpus=$3 timeout_s=$4
    local start=$SECONDS status="" text nodes=0 gpus=0 left
    while :; do
        left=$((start + timeout_s - SECONDS))
        if ((left > 0)); then
            # `timeout`: a `ray status` that hangs on a head that is not up must not outlive the deadline. Its
            # text is read whatever its exit status: under load it may print and then be killed while it exits.
            text="$(timeout "$left" "$_RLVR_PY" -m ray.scripts.scripts status --address "$address" 2>&1)" || true
            [[ -z $text ]] || status=$text  # the last answer, for the error message
            # Nodes: the counts listed under "Active:" and "Idle:" (" 2 node_ab12..."); GPUs: the total of
            # the first "used/total GPU" line, the cluster's.
            read -r nodes gpus < <(awk '
                /^Active:|^Idle:/ { counting = 1; next }
                /^[A-Z]/ { counting = 0 }
                counting && $1 ~ /^[0-9]+$/ { nodes += $1 }
                !gpus && $2 == "GPU" && $1 ~ /\// { split($1, used_total, "/"); gpus = used_total[2] }
                END { printf "%d %d\n", nodes, gpus }' <<<"$status")
            if ((nodes >= want_nodes && gpus >= want_gpus)); then
                echo "rlvr: Ray at $address has $nodes nodes and $gpus GPUs (after $((SECONDS - start)) s)"
                return 0
            fi
        fi
        left=$((start + timeout_s - SECONDS))
        if ((left <= 0)); then
            echo "rlvr: after $timeout_s s the Ray cluster at $address has $nodes of $want_nodes nodes and" \
                "$gpus of $want_gpus GPUs; last \`ray status\`:" >&2
            echo "${status:-(none answered)}" >&2
            return 1
        fi
        sleep "$((left < 5 ? left : 5))"
    done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    "$@"
fi
