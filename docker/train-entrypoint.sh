#!/usr/bin/env bash
# Entrypoint of the `train` image: fetch the project's data, then train with the given arguments.
#
# Run in the project folder (the image's /project: mounted, or copied in by the job). With a
# DVC remote configured there, `dvc pull` brings the prepared data first, so every node of a
# multi-node job trains on the same data (visionops checks the fingerprints before step 1).
# VISIONOPS_SKIP_DVC_PULL=1 skips it (data already in the image or on a mounted volume).
set -euo pipefail

if [[ -z "${VISIONOPS_SKIP_DVC_PULL:-}" && -d .dvc ]] && [[ -n "$(dvc remote list 2>/dev/null)" ]]; then
    dvc pull
fi
exec visionops train "$@"
