# shellcheck shell=bash
# Sourced by the slurm/*.sbatch scripts (not run on its own): find the project's venv.
#
#   source slurm/_venv.sh; VENV="$(find_venv "$SUBMITTED")" || exit 1
#
# sbatch runs a spooled copy of a batch script, so its $0 does not point into the repository;
# SLURM records the submitted script's path (Command= in `scontrol show job`; the scripts read
# it into SUBMITTED before sourcing this file, which lies beside them) and the submit
# directory. Order: $PIXPERFECT_VENV if set, else the .venv of the repository the submitted
# script is in, else a .venv in the submit directory or above it.

# find_venv [SUBMITTED_SCRIPT]: print the venv directory (one with bin/pixperfect), or fail.
find_venv() {
    if [[ -n "${PIXPERFECT_VENV:-}" ]]; then
        echo "$PIXPERFECT_VENV"
        return
    fi
    local script="${1:-$0}" dir
    for dir in "$(dirname "$script")/.." "${SLURM_SUBMIT_DIR:-$PWD}"; do
        dir="$(cd "$dir" 2>/dev/null && pwd)" || continue
        while [[ "$dir" != / ]]; do
            if [[ -x "$dir/.venv/bin/pixperfect" ]]; then
                echo "$dir/.venv"
                return
            fi
            dir="$(dirname "$dir")"
        done
    done
    return 1
}
