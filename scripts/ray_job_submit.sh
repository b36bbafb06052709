#!/usr/bin/env bash
# Submit an rlvr training run to the Ray cluster at $RAY_ADDRESS (its dashboard, e.g. http://127.0.0.1:8265),
# follow its logs, and exit with the job's outcome (0 only for SUCCEEDED).
#
#   RAY_ADDRESS=http://head:8265 scripts/ray_job_submit.sh examples/tiny_arith_grpo.toml --output-dir /shared/runs/x
#
# - Working directory: this checkout is uploaded (without what .gitignore lists, e.g. .venv and runs/), and
#   the driver runs inside the upload, so a relative CONFIG works; give --output-dir (and data paths outside
#   the repo) as absolute paths on a filesystem the head node shares. The upload's code is what runs: rlvr,
#   and with it rlvr.rewards and rlvr.kernels from the upload's rewards/ and kernels/ (rlvr/__init__.py), not
#   the copy installed in the interpreter; only dependencies come from the interpreter.
# - Interpreter: named explicitly, since a job's PATH need not hold the project's bin/: $RLVR_PYTHON if set,
#   else this checkout's .venv/bin/python; the same path must exist on the cluster's nodes.
# - Runtime env: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE pass through; add more with RLVR_RUNTIME_ENV_JSON.
# - Auth: the `ray` client follows your RAY_AUTH_MODE / token (~/.ray/auth_token or RAY_AUTH_TOKEN), which
#   must match the cluster's. The job's driver inherits RAY_ADDRESS, so rlvr connects instead of starting a cluster.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"  # the header comment
    echo "usage: $0 CONFIG [rlvr train arguments and key=value overrides ...]" >&2
    exit 2
fi
if [[ -z ${RAY_ADDRESS:-} ]]; then
    echo "set RAY_ADDRESS to the dashboard address of the cluster, e.g. http://127.0.0.1:8265" >&2
    exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${RLVR_PYTHON:-$REPO/.venv/bin/python}"
RAY=("$PYTHON" -m ray.scripts.scripts)
SUBMISSION_ID="rlvr-$(date +%Y%m%d-%H%M%S)-$RANDOM"
OFFLINE="{\"env_vars\": {\"HF_HUB_OFFLINE\": \"${HF_HUB_OFFLINE:-1}\", \"TRANSFORMERS_OFFLINE\": \"${TRANSFORMERS_OFFLINE:-1}\"}}"
RUNTIME_ENV="${RLVR_RUNTIME_ENV_JSON:-$OFFLINE}"

echo "submitting $SUBMISSION_ID to $RAY_ADDRESS: $PYTHON -m rlvr.cli train $*" >&2
# A head that has just started answers "No available agent to submit job" until its job agent is up.
for attempt in $(seq 1 "${RLVR_SUBMIT_ATTEMPTS:-30}"); do
    if SUBMITTED="$("${RAY[@]}" job submit --address "$RAY_ADDRESS" --submission-id "$SUBMISSION_ID" \
            --working-dir "$REPO" --runtime-env-json "$RUNTIME_ENV" --no-wait -- \
            "$PYTHON" -m rlvr.cli train "$@" 2>&1)"; then
        break
    fi
    if ! grep -q "No available agent" <<<"$SUBMITTED" || [[ $attempt == "${RLVR_SUBMIT_ATTEMPTS:-30}" ]]; then
        echo "$SUBMITTED" >&2
        exit 1
    fi
    sleep 2
done
echo "$SUBMITTED" >&2
# Follow the logs until the job ends; an interrupted follow leaves the job running (stop it with
# `ray job stop $SUBMISSION_ID`).
"${RAY[@]}" job logs --address "$RAY_ADDRESS" --follow "$SUBMISSION_ID" || true
STATUS="$("$PYTHON" -c 'import sys; from ray.job_submission import JobSubmissionClient
print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)' "$RAY_ADDRESS" "$SUBMISSION_ID")"
echo "job $SUBMISSION_ID: $STATUS"
[[ $STATUS == SUCCEEDED ]]
