#!/usr/bin/env bash
# Loom under a real one-node Slurm cluster. Starts munged, slurmctld and slurmd with every file
# under a temporary directory (their own key, socket, ports, state, spool, logs), a real
# loom-coordinator on loopback, and submits deploy/slurm/loom-workers.sbatch. Then:
#   1. the job's worker registers under the node's name with the node's CPUs as slots;
#   2. a small plan trains on it and succeeds;
#   3. a longer plan is interrupted by `scancel` after a committed checkpoint: the worker leaves
#      on the SIGTERM (the coordinator lists it lost within seconds, and the Slurm job ends long
#      before Slurm's SIGKILL would come), and the plan stays active;
#   4. a second sbatch brings the worker back and the plan resumes from its last committed
#      checkpoint (a later attempt, resumed_from past step 0) and succeeds;
#   5. `scancel --signal=TERM` ends that job: the worker leaves and the job completes with exit 0.
# Everything it started is stopped at exit, also on failure. Exits 77 (skipped) without root or
# without Slurm, MUNGE and jq (scripts/setup installs them).
#
#   slurm_workers_test.sh SBATCH_SCRIPT LOOM_COORDINATOR LOOM_WORKER LOOM_RANK LOOM_CLI
#   LOOM_TEST_KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail

if [[ $# -ne 5 ]]; then
  echo "usage: $0 SBATCH_SCRIPT LOOM_COORDINATOR LOOM_WORKER LOOM_RANK LOOM_CLI" >&2
  exit 2
fi
sbatch_script=$(realpath "$1") coordinator_bin=$(realpath "$2") worker_bin=$(realpath "$3")
rank_bin=$(realpath "$4") loom=$(realpath "$5")
export PATH="$PATH:/usr/sbin:/sbin"

skip() { echo "SKIPPED: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root (it runs slurmctld, slurmd and munged, as a cluster's admin would)"
for c in munged munge slurmctld slurmd sbatch squeue scancel scontrol sinfo jq; do
  command -v "$c" >/dev/null || skip "'$c' is not installed: run scripts/setup (slurm-wlm, munge, jq)"
done
for f in "$sbatch_script" "$coordinator_bin" "$worker_bin" "$rank_bin" "$loom"; do
  [[ -e "$f" ]] || { echo "FAIL: $f does not exist (build loom-coordinator, loom-worker, loom-rank, loom)" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/loom-slurm-test.XXXXXX")
chmod 755 "$T"  # munged insists that everyone may traverse to its socket
node=$(hostname -s)
t0=$SECONDS
say() { printf '[%3ds] %s\n' $((SECONDS - t0)) "$*"; }

munged_pid="" slurmctld_pid="" slurmd_pid="" coordinator_pid=""

dump_logs() {
  local f
  echo "======== logs (temporary directory $T) ========"
  for f in "$T"/coordinator.log "$T"/log/* "$T"/jobs/*; do
    [[ -f "$f" ]] || continue
    echo "---- $f (last 60 lines)"
    tail -n 60 "$f"
  done
  while IFS= read -r f; do
    echo "---- $f (last 20 lines)"
    tail -n 20 "$f"
  done < <(find "$T/work" -name rank.log 2>/dev/null)
}

fail() {
  echo "FAIL: $*" >&2
  dump_logs >&2
  exit 1
}

# The pids of every process that carries this cluster's SLURM_CONF: slurmstepd, srun, the
# workers and their ranks (slurmd hands its environment to slurmstepd, jobs get SLURM_CONF).
cluster_processes() {
  local e pid
  for e in /proc/[0-9]*/environ; do
    pid=${e#/proc/}
    pid=${pid%/environ}
    [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]] || continue
    if grep -qaF "SLURM_CONF=$T/slurm.conf" "$e" 2>/dev/null; then echo "$pid"; fi
  done
}

stop_pid() {  # stop_pid PID: TERM, up to 5 s, then KILL
  local pid=$1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  set +e
  if [[ -n "$slurmctld_pid" ]] && kill -0 "$slurmctld_pid" 2>/dev/null; then
    for jid in $(squeue -h -o %i 2>/dev/null); do scancel "$jid"; done
    for _ in $(seq 100); do [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break; sleep 0.2; done
  fi
  stop_pid "$coordinator_pid"
  stop_pid "$slurmd_pid"
  stop_pid "$slurmctld_pid"
  for pid in $(cluster_processes); do kill -KILL "$pid" 2>/dev/null; done
  stop_pid "$munged_pid"
  if [[ "${LOOM_TEST_KEEP_TMP:-}" == 1 ]]; then echo "kept $T"; else rm -rf "$T"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}

# Two free loopback TCP ports (none in /proc/net/tcp{,6}, not even in TIME_WAIT).
free_ports() {
  local used p n=0 out=()
  used=" $(awk 'FNR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    while read -r hex; do echo $((16#$hex)); done | tr '\n' ' ') "
  while ((n < 2)); do
    p=$((20000 + RANDOM % 30000))
    [[ "$used" == *" $p "* || " ${out[*]} " == *" $p "* ]] && continue
    out+=("$p")
    n=$((n + 1))
  done
  echo "${out[@]}"
}

# ---- MUNGE: its own key, socket, pid, seed and log -------------------------------------------
mkdir -p "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/run" "$T/jobs" "$T/work"
chmod 755 "$T/munge"
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge/munge.key"
munge_socket="$T/munge/munge.socket"
munged --foreground --key-file="$T/munge/munge.key" --socket="$munge_socket" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/log/munged.log" --seed-file="$T/munge/munged.seed" \
  > "$T/log/munged.out" 2>&1 &
munged_pid=$!
wait_until 10 "munged's socket" test -S "$munge_socket"
munge -S "$munge_socket" -n | unmunge -S "$munge_socket" > /dev/null || fail "munged does not answer"

# ---- Slurm: one node, this host, on loopback ----------------------------------------------------
read -r ctld_port slurmd_port < <(free_ports)
cpus=$(nproc)
cat > "$T/slurm.conf" <<EOF
ClusterName=loomtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
ReturnToService=2
KillWait=30
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=loom Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
: > "$T/cgroup.conf"
export SLURM_CONF="$T/slurm.conf"
slurmctld -D -f "$SLURM_CONF" > "$T/log/slurmctld.out" 2>&1 &
slurmctld_pid=$!
slurmd -D -f "$SLURM_CONF" -N "$node" > "$T/log/slurmd.out" 2>&1 &
slurmd_pid=$!
node_idle() { [[ "$(sinfo -h -n "$node" -o %t 2>/dev/null)" == idle ]]; }
wait_until 30 "slurmd's node $node to be idle in sinfo (ports $ctld_port, $slurmd_port)" node_idle
say "Slurm up: node $node ($cpus CPUs), slurmctld on 127.0.0.1:$ctld_port"

# ---- a tiny prepared dataset and the coordinator ------------------------------------------------
"$loom" data corpus --out "$T/corpus" --sources math --math-docs 400 > "$T/data.log" 2>&1 ||
  fail "loom data corpus: $(cat "$T/data.log")"
"$loom" data prepare --corpus "$T/corpus" --out "$T/prepared" --vocab 512 --threads 2 >> "$T/data.log" 2>&1 ||
  fail "loom data prepare: $(cat "$T/data.log")"

"$coordinator_bin" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$T/coordinator" \
  --prepared-data "$T/prepared" --heartbeat 1s --heartbeat-timeout 3s > "$T/coordinator.log" 2>&1 &
coordinator_pid=$!
coordinator_port() { grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$T/coordinator.log" | head -n 1 | cut -d: -f2; }
coordinator_listens() { [[ -n "$(coordinator_port)" ]]; }
wait_until 20 "the coordinator to listen" coordinator_listens
coordinator="127.0.0.1:$(coordinator_port)"
export LOOM_COORDINATOR="$coordinator"
say "coordinator on $coordinator"

# ---- helpers over the CLI's JSON ------------------------------------------------------------------
worker_state() {  # the state of worker $node, "absent", or "unreachable" when the CLI fails
  local out
  out=$("$loom" workers --coordinator "$coordinator" --json 2>/dev/null) || { echo unreachable; return; }
  jq -r --arg id "$node" '[.workers[]? | select(.worker_id == $id) | .state] | first // "absent"' <<< "$out"
}
worker_is() { [[ "$(worker_state)" == "$1" ]]; }
worker_up() { [[ "$(worker_state)" =~ ^WORKER_STATE_(IDLE|BUSY)$ ]]; }
# Left: listed as lost (or any state but idle/busy, or no longer listed) by a reachable coordinator.
worker_left() { local s; s=$(worker_state); [[ "$s" != unreachable ]] && ! [[ "$s" =~ ^WORKER_STATE_(IDLE|BUSY)$ ]]; }
worker_slots() {
  "$loom" workers --coordinator "$coordinator" --json | jq -r --arg id "$node" '.workers[] | select(.worker_id == $id) | .slots'
}
plan_json() { "$loom" status "$1" --coordinator "$coordinator" --json; }
plan_state() { plan_json "$1" 2>/dev/null | jq -r '.state'; }
plan_is() { [[ "$(plan_state "$1")" == "$2" ]]; }
plan_ended() { [[ "$(plan_state "$1")" =~ ^PLAN_STATE_(SUCCEEDED|FAILED|CANCELLED)$ ]]; }
job_field() { plan_json "$1" | jq -r ".jobs[0].$2"; }
# The step of a checkpoint path .../step-000123 (0 for none).
checkpoint_step() { [[ "$1" =~ step-0*([0-9]+)$ ]] && echo "${BASH_REMATCH[1]}" || echo 0; }
running_with_checkpoint() {
  local s
  s=$(plan_json "$1" 2>/dev/null) || return 1
  [[ "$(jq -r '.jobs[0].state' <<< "$s")" == JOB_STATE_RUNNING ]] &&
    (($(jq -r '(.jobs[0].last_checkpoint.step // "0") | tonumber' <<< "$s") >= $2))
}
job_gone() { [[ -z "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]]; }

submit_workers() {  # sbatch the workers; prints the job id
  (cd "$T/jobs" &&
    LOOM_BIN_DIR="$(dirname "$worker_bin")" LOOM_RANK_BINARY="$rank_bin" LOOM_WORK_DIR="$T/work" \
      LOOM_METRICS_LISTEN=127.0.0.1:0 sbatch --parsable --nodes 1 "$sbatch_script" 2> "$T/log/sbatch.err") ||
    fail "sbatch $sbatch_script was refused: $(cat "$T/log/sbatch.err")"
}

write_plan() {  # write_plan NAME TOKENS CHECKPOINT_EVERY
  cat > "$T/$1.yaml" <<EOF
name: $1
seed: 3
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
defaults:
  parallel: {dp: 1, micro_batch_size: 2}
  optimizer: {lr: 3e-3}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 256}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  checkpoint: {every_steps: $3}
stages:
  - name: core
    kind: pretrain
    tokens: $2
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
EOF
  echo "$T/$1.yaml"
}

# ---- 1. the batch job's worker joins under the node's name ---------------------------------------
job1=$(submit_workers)
say "sbatch: job $job1"
wait_until 30 "worker $node (Slurm job $job1) to register" worker_is WORKER_STATE_IDLE
slots=$(worker_slots)
[[ "$slots" == "$cpus" ]] || fail "worker $node offers $slots slots; the node has $cpus CPUs (--exclusive)"
say "worker $node registered with $slots slots"

# ---- 2. a small plan trains on it -------------------------------------------------------------------
small=$("$loom" submit --quiet --coordinator "$coordinator" "$(write_plan slurm-small 10Ki 10)") ||
  fail "loom submit slurm-small"
wait_until 60 "plan $small to end" plan_ended "$small"
plan_is "$small" PLAN_STATE_SUCCEEDED || fail "plan $small: $(plan_json "$small")"
[[ "$(job_field "$small" 'rank_workers[0]')" == "$node" ]] || fail "plan $small did not run on $node"
say "plan $small succeeded on $node"

# ---- 3. scancel during a longer plan ---------------------------------------------------------------
total_steps=1024  # 256Ki tokens, 256 per step: 10 to 40 s on 2 busy cores
long=$("$loom" submit --quiet --coordinator "$coordinator" "$(write_plan slurm-long 256Ki 50)") ||
  fail "loom submit slurm-long"
wait_until 60 "plan $long to commit a checkpoint at step 100 or later" running_with_checkpoint "$long" 100
before=$(job_field "$long" 'last_checkpoint.step' | sed 's/null/0/')
((before < total_steps)) || fail "plan $long ran too fast to be interrupted"
cancelled_at=$SECONDS
scancel "$job1"
say "scancel $job1 with plan $long at checkpoint step $before"
wait_until 10 "worker $node to be listed lost after scancel" worker_left
say "worker $node $(worker_state) $((SECONDS - cancelled_at))s after scancel"
# Slurm sends SIGKILL KillWait (30 s) after the SIGTERM: a worker that leaves on SIGTERM ends the
# job long before that.
wait_until 20 "Slurm job $job1 to end (its worker should exit on SIGTERM, not wait for SIGKILL)" \
  job_gone "$job1"
say "Slurm job $job1 ended $((SECONDS - cancelled_at))s after scancel"
plan_is "$long" PLAN_STATE_ACTIVE || fail "plan $long is no longer active after the worker left"
state=$(job_field "$long" state)
[[ "$state" =~ ^JOB_STATE_(PENDING|RECOVERING)$ ]] ||
  fail "plan $long's stage is $state with no worker; expected PENDING or RECOVERING"
say "plan $long waits ($state) with no worker"

# ---- 4. a new allocation resumes it ------------------------------------------------------------------
job2=$(submit_workers)
say "sbatch: job $job2"
wait_until 30 "worker $node (Slurm job $job2) to register again" worker_up
wait_until 150 "plan $long to end" plan_ended "$long"
status=$(plan_json "$long")
[[ "$(jq -r .state <<< "$status")" == PLAN_STATE_SUCCEEDED ]] || fail "plan $long: $status"
attempt=$(jq -r '.jobs[0].attempt' <<< "$status")
resumed=$(checkpoint_step "$(jq -r '.jobs[0].resumed_from // ""' <<< "$status")")
final=$(jq -r '.jobs[0].final_checkpoint.step | tonumber' <<< "$status")
((attempt >= 2)) || fail "plan $long finished in attempt $attempt; expected a later attempt after scancel"
((resumed >= before && resumed > 0)) ||
  fail "plan $long resumed from step $resumed; its last checkpoint before scancel was step $before"
((final == total_steps)) || fail "plan $long's final checkpoint is step $final, not $total_steps"
rank_log="$T/work/$long/core#$attempt/rank0/rank.log"
first_step=$(grep -m1 -oE '^step [0-9]+' "$rank_log" | cut -d' ' -f2) || fail "no step line in $rank_log"
((first_step == resumed + 1)) ||
  fail "attempt $attempt's first step is $first_step; resuming from step $resumed it should be $((resumed + 1))"
say "plan $long succeeded: attempt $attempt resumed from step $resumed (first step $first_step) to step $final"

# The gentle way to give the nodes back: SIGTERM only. The job completes once the worker has
# left, with the worker's exit status (srun's).
scancel --signal=TERM "$job2"
wait_until 10 "worker $node to leave after scancel --signal=TERM" worker_left
job_state() { scontrol show job "$1" 2>/dev/null | grep -oE "$2=[^ ]+" | cut -d= -f2; }
job_ended() { [[ "$(job_state "$1" JobState)" =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT)$ ]]; }
wait_until 20 "Slurm job $job2 to end after scancel --signal=TERM" job_ended "$job2"
[[ "$(job_state "$job2" JobState) $(job_state "$job2" ExitCode)" == "COMPLETED 0:0" ]] ||
  fail "Slurm job $job2 ended $(job_state "$job2" JobState) with exit code $(job_state "$job2" ExitCode); the worker should exit 0 on SIGTERM"
say "Slurm job $job2 completed with exit code 0 after scancel --signal=TERM"
say "passed in $((SECONDS - t0))s"
