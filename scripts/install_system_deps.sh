#!/usr/bin/env bash
# System packages the test suite runs against: a real SLURM (slurm-wlm) and its authentication (munge), and
# rsync (a moved run must stay complete after `rsync -a`, tests/test_provenance.py).
# Idempotent and quick when they are already there; `make test` (and so .ci/run) calls it. Installs only as
# root with apt-get; elsewhere it prints what to install and the SLURM tests skip (CI=true: they fail).
set -euo pipefail
need=()
for exe in slurmctld slurmd sbatch munged; do
    command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || need=(slurm-wlm munge)
done
command -v rsync >/dev/null 2>&1 || need+=(rsync)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: some tests need these Debian/Ubuntu packages (without them they skip): ${need[*]}" >&2
    exit 0
fi
echo "installing ${need[*]} (system packages for the cluster and relocation tests)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
