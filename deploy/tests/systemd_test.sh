#!/usr/bin/env bash
# Checks deploy/systemd/: both units pass `systemd-analyze verify` (run against the build tree's
# binaries), keep their hardening, write only where the programs keep data, and start their
# programs with flags the programs accept.
#
#   systemd_test.sh DEPLOY_DIR LOOM_COORDINATOR LOOM_WORKER LOOM_RANK
#
# The flag check runs each unit's ExecStart, expanded with the example env files the way systemd
# expands it, with --help appended. Loom's command-line parser reads flags in order and stops at
# --help, so every flag before it is checked (an unknown flag or a bad value exits 2) and nothing
# starts; the output must be the usage text.
set -euo pipefail

if (($# != 4)); then
  echo "usage: $0 DEPLOY_DIR LOOM_COORDINATOR LOOM_WORKER LOOM_RANK" >&2
  exit 2
fi
deploy=$1
declare -A binary=([/usr/bin/loom-coordinator]=$2 [/usr/bin/loom-worker]=$3 [/usr/libexec/loom/loom-rank]=$4)
for tool in systemd-analyze systemd-sysusers; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (package systemd; run scripts/setup)"; exit 1; }
done
for b in "${binary[@]}"; do
  [[ -x "$b" ]] || { echo "FAIL: $b is not built (build the loom-coordinator, loom-worker and loom-rank targets)"; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# The unit's value(s) of KEY, one per line ([Service] and [Unit] keys are unique across sections).
values() { sed -n "s/^$2=//p" "$1"; }

# KEY=value lines of a systemd EnvironmentFile, printed as NAME<TAB>VALUE. Only the forms the
# examples use are accepted (value bare or in double quotes, on one line), so that this parser and
# systemd's agree on every example.
read_env() {
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "${line//[[:space:]]/}" || "$line" =~ ^[[:space:]]*[#\;] ]] && continue
    if [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=\"([^\"\\\$\`]*)\"$ ]] ||
       [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([^\"\'\\\$\`[:space:]]*)$ ]]; then
      printf '%s\t%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    else
      echo "unsupported line in $1: $line" >&2
      return 1
    fi
  done <"$1"
}

# ExecStart expanded as systemd does: ${NAME} is one word, $NAME splits at whitespace into zero or
# more words. One word per line on stdout.
expand_exec() {
  local unit=$1 env=$2 word name
  declare -A vars=()
  while IFS=$'\t' read -r name word; do vars[$name]=$word; done < <(read_env "$env")
  for word in $(values "$unit" ExecStart); do
    if [[ "$word" =~ ^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$ ]]; then
      name=${BASH_REMATCH[1]}
      [[ -v vars[$name] ]] || { echo "$unit: ExecStart uses \${$name}, which $env does not set" >&2; return 1; }
      printf '%s\n' "${vars[$name]}"
    elif [[ "$word" =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
      name=${BASH_REMATCH[1]}
      [[ -v vars[$name] ]] || { echo "$unit: ExecStart uses \$$name, which $env does not set" >&2; return 1; }
      local part
      for part in ${vars[$name]}; do printf '%s\n' "$part"; done
    elif [[ "$word" == *[\$\"\'\\]* ]]; then
      echo "$unit: ExecStart word '$word' uses quoting or expansion this test does not model" >&2
      return 1
    else
      printf '%s\n' "$word"
    fi
  done
}

# The value that follows FLAG in a list of words (one per line on stdin).
flag_value() { awk -v f="$1" 'prev == f { print; exit } { prev = $0 }'; }

# 1. systemd-analyze verify, with the installed paths pointed at the build tree.
mkdir -p "$tmp/units"
for unit in loom-coordinator loom-worker; do
  cp "$deploy/systemd/$unit.service" "$tmp/units/"
  for installed in "${!binary[@]}"; do
    sed -i "s#$installed\\b#${binary[$installed]}#g" "$tmp/units/$unit.service"
  done
done
if ! out=$(cd "$tmp/units" && systemd-analyze verify ./loom-coordinator.service ./loom-worker.service 2>&1); then
  fail "systemd-analyze verify failed:"$'\n'"$out"
elif [[ -n "$out" ]]; then
  # verify exits 0 on an unknown or misspelt key; it only warns.
  fail "systemd-analyze verify warned:"$'\n'"$out"
fi

# 2. The hardening and the service behaviour the documentation promises.
required_common=(
  User=loom Group=loom Restart=on-failure KillSignal=SIGTERM
  NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes
  ProtectKernelTunables=yes ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes
  ProtectClock=yes ProtectHostname=yes PrivateMounts=yes RestrictNamespaces=yes RestrictRealtime=yes
  RestrictSUIDSGID=yes LockPersonality=yes SystemCallArchitectures=native
  SystemCallFilter=@system-service CapabilityBoundingSet= AmbientCapabilities=
  "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"
)
declare -A required=(
  [loom-coordinator]="EnvironmentFile=/etc/loom/coordinator.env StateDirectory=loom PrivateDevices=yes MemoryDenyWriteExecute=yes"
  [loom-worker]="EnvironmentFile=/etc/loom/worker.env StateDirectory=loom-worker KillMode=mixed"
)
for unit in loom-coordinator loom-worker; do
  file="$deploy/systemd/$unit.service"
  # shellcheck disable=SC2206
  keys=("${required_common[@]}" ${required[$unit]})
  for kv in "${keys[@]}"; do
    grep -qxF -- "$kv" "$file" || fail "$unit.service lacks the line '$kv'"
  done
  for forbidden in DynamicUser=yes RemoveIPC=yes PrivateIPC=yes; do
    ! grep -qxF "$forbidden" "$file" || fail "$unit.service sets $forbidden (see the comments in the unit)"
  done
  if grep -E '^(InaccessiblePaths|TemporaryFileSystem|ReadOnlyPaths)=.*/dev/shm' "$file"; then
    fail "$unit.service hides /dev/shm, which the ranks' shared-memory all-reduce needs"
  fi
  [[ "$(values "$file" TimeoutStopSec)" =~ ^[0-9]+(s|min)$ ]] || fail "$unit.service has no TimeoutStopSec= in s or min"
  [[ "$(values "$file" ExecStart)" == /usr/bin/$unit\ * ]] || fail "$unit.service does not start /usr/bin/$unit"
done

# systemd's own exposure score (0 = locked down, 10 = unprotected; --threshold counts tenths):
# 1.5 and 1.8 today. What is left open is what the programs need: the network, /dev/shm and, for
# the worker, devices and writable-executable memory (GPUs).
for unit in loom-coordinator loom-worker; do
  if ! out=$(systemd-analyze security --offline=yes --threshold=25 "$tmp/units/$unit.service" 2>&1); then
    fail "$unit.service: systemd-analyze security exposure over 2.5:"$'\n'"$(tail -n 3 <<<"$out")"
  fi
done

# 3. Each ExecStart, expanded with the example env file, is accepted by its program.
for unit in loom-coordinator loom-worker; do
  env="$deploy/systemd/${unit#loom-}.env"
  if ! words=$(expand_exec "$deploy/systemd/$unit.service" "$env"); then
    fail "$unit.service: cannot expand ExecStart with $env"
    continue
  fi
  mapfile -t argv <<<"$words"
  program=${binary[${argv[0]}]:-}
  [[ -n "$program" ]] || { fail "$unit.service starts ${argv[0]}, not a Loom binary"; continue; }
  # Paths a started program would write are moved into the temp dir, in case it does start.
  args=()
  for a in "${argv[@]:1}"; do
    a=${a//\/var\/lib\//$tmp/var/lib/}
    a=${a//\/srv\/loom/$tmp/srv/loom}
    a=${a//\/usr\/libexec\/loom\/loom-rank/${binary[/usr/libexec/loom/loom-rank]}}
    args+=("$a")
  done
  # A flag that takes a value must get one: a last flag without its value would take --help as
  # its value and start the program.
  help=$("$program" --help)
  mapfile -t value_flags < <(sed -nE 's/^  (--[a-z0-9-]+) [A-Z]+ .*/\1/p' <<<"$help")
  missing=""
  for ((i = 0; i < ${#args[@]}; i++)); do
    if printf '%s\n' "${value_flags[@]}" | grep -qxF -- "${args[i]}" && [[ "${args[i + 1]:---}" == --* ]]; then
      missing="${args[i]}"
    fi
  done
  if [[ -n "$missing" ]]; then
    fail "$unit.service: $missing has no value in '${argv[*]}'"
    continue
  fi
  rc=0
  out=$(cd "$tmp" && timeout 20 "$program" "${args[@]}" --help 2>&1) || rc=$?
  if ((rc != 0)) || [[ "$out" != usage:* ]]; then
    fail "$unit.service: '${argv[*]} --help' exited $rc (want 0 and the usage text):"$'\n'"$(head -n 3 <<<"$out")"
  fi
  # The flags the env file lists in its comments (lines '#   --flag ...') must exist too.
  for flag in $(sed -nE 's/^#[[:space:]]+(--[a-z0-9-]+).*/\1/p' "$env"); do
    grep -qE -- "^ +$flag " <<<"$help" || fail "$env mentions $flag, which $(basename "${argv[0]}") --help does not list"
  done
done

# Seconds in a duration such as 30s, 2min or 1m30s (systemd's and Loom's forms).
seconds() {
  local d=$1 total=0 n unit
  while [[ "$d" =~ ^([0-9]+)(ms|s|sec|m|min|h)(.*)$ ]]; do
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
    case "$unit" in ms) ;; s | sec) total=$((total + n)) ;; m | min) total=$((total + 60 * n)) ;; h) total=$((total + 3600 * n)) ;; esac
  done
  [[ -z "$d" ]] && echo "$total"
}

# 4. The directories the programs write are the ones the units let them write; systemd waits
# for a stopping worker longer than the worker waits for its ranks.
mapfile -t coordinator_argv < <(expand_exec "$deploy/systemd/loom-coordinator.service" "$deploy/systemd/coordinator.env")
mapfile -t worker_argv < <(expand_exec "$deploy/systemd/loom-worker.service" "$deploy/systemd/worker.env")
data_dir=$(printf '%s\n' "${coordinator_argv[@]}" | flag_value --data-dir)
work_dir=$(printf '%s\n' "${worker_argv[@]}" | flag_value --work-dir)
checkpoint_root=$(printf '%s\n' "${coordinator_argv[@]}" | flag_value --checkpoint-root)
[[ "$data_dir" == /var/lib/loom ]] || fail "loom-coordinator --data-dir is '$data_dir', not its StateDirectory /var/lib/loom"
[[ "$work_dir" == /var/lib/loom-worker ]] || fail "loom-worker --work-dir is '$work_dir', not its StateDirectory /var/lib/loom-worker"
stop_grace=$(printf '%s\n' "${worker_argv[@]}" | flag_value --stop-grace)
if [[ -z "$stop_grace" ]]; then
  stop_grace=$("${binary[/usr/bin/loom-worker]}" --help | sed -nE 's/^  --stop-grace .*\(default ([0-9a-z]+)\)$/\1/p')
fi
timeout_stop=$(values "$deploy/systemd/loom-worker.service" TimeoutStopSec)
if [[ -z "$(seconds "$stop_grace")" || -z "$(seconds "$timeout_stop")" ]]; then
  fail "cannot read loom-worker's --stop-grace ('$stop_grace') or the unit's TimeoutStopSec= ('$timeout_stop')"
elif (($(seconds "$timeout_stop") < $(seconds "$stop_grace") + 10)); then
  fail "loom-worker.service: TimeoutStopSec=$timeout_stop is not 10 s more than --stop-grace $stop_grace, so systemd would kill ranks still stopping at a step boundary"
fi
for unit in loom-coordinator loom-worker; do
  writable=false
  for path in $(values "$deploy/systemd/$unit.service" ReadWritePaths); do
    [[ "$checkpoint_root/" == "${path%/}/"* ]] && writable=true
  done
  $writable || fail "$unit.service: the checkpoint root $checkpoint_root is under none of its ReadWritePaths="
  [[ "$(values "$deploy/systemd/$unit.service" RequiresMountsFor)" == "$(values "$deploy/systemd/$unit.service" ReadWritePaths)" ]] ||
    fail "$unit.service: RequiresMountsFor= and ReadWritePaths= name different directories"
done

# 5. The sysusers.d entry creates `loom`.
mkdir -p "$tmp/root/etc"
if ! out=$(systemd-sysusers --root="$tmp/root" "$(realpath "$deploy/systemd/loom.sysusers")" 2>&1); then
  fail "systemd-sysusers rejected loom.sysusers:"$'\n'"$out"
elif ! grep -q '^loom:' "$tmp/root/etc/passwd"; then
  fail "loom.sysusers did not create the user loom"
fi

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "PASS: both units verify, keep their hardening and start with flags their programs accept"
