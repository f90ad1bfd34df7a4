#!/usr/bin/env bash
# Install a single-node SLURM test cluster's software from Debian 12's packages.
#
#   slurmctld slurmd slurm-client  the controller, the compute-node daemon, sbatch/squeue/sinfo
#   munge                          the authentication daemon SLURM requires
#   slurmdbd mariadb-server        the accounting daemon and its database, so that `sacct`
#                                  answers: snakemake-executor-plugin-slurm polls job states
#                                  with `sacct` and reads failure reasons (OUT_OF_MEMORY...)
#                                  from it, as on a production cluster
#
# Idempotent: exits at once when every program is already there. Needs root (CI runs as root).
# Services are NOT started here (no systemd on CI); .ci/slurm/start.sh starts them.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
programs=(slurmctld slurmd slurmdbd sbatch sinfo sacct sacctmgr munged mariadbd mariadb-install-db)

missing=()
for program in "${programs[@]}"; do
    if ! command -v "$program" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$program" ]]; then
        missing+=("$program")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm/install: all programs present (${programs[*]})"
    exit 0
fi
echo "slurm/install: missing ${missing[*]}; installing ${packages[*]}"

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm/install: must run as root to apt-get install" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the recommends pull in ~20 -dev plugin packages we do not use.
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

for program in "${programs[@]}"; do
    if ! command -v "$program" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$program" ]]; then
        echo "slurm/install: $program still missing after apt-get install" >&2
        exit 1
    fi
done
echo "slurm/install: done"
