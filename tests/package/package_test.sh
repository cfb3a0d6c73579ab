#!/usr/bin/env bash
# The Debian package end to end: `cpack -G DEB` in the build tree, the .deb's name and control
# fields, `dpkg -i`, --version of every installed binary, then a small real plan (a coordinator,
# one worker, loom-rank training on data prepared by the installed `loom data`) run with the
# installed binaries only, and `dpkg --purge` at the end whatever happens.
#
#   tests/package/package_test.sh BUILD_DIR VERSION
#
# Needs root and dpkg (exit 77, skipped, otherwise), and refuses to run (77) where Loom is
# installed already, so it never replaces or removes an installation it did not make. What the
# package's postinst creates (the `loom` user and group, /var/lib/loom, /var/lib/loom-worker) is
# removed afterwards when it was not there before.
set -euo pipefail

build=${1:?usage: package_test.sh BUILD_DIR VERSION}
version=${2:?usage: package_test.sh BUILD_DIR VERSION}
build=$(cd "$build" && pwd)
start=$SECONDS

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== [$((SECONDS - start))s] $*"; }

[[ $(id -u) -eq 0 ]] || skip "dpkg -i needs root"
for tool in dpkg dpkg-deb dpkg-query cpack; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done
command -v dpkg-shlibdeps >/dev/null || fail "dpkg-shlibdeps is missing (Debian package dpkg-dev; scripts/setup installs it)"

# One run at a time on a machine: a second waits here rather than fight over dpkg and /usr/bin.
exec 9>/tmp/loom-package-test.lock
flock -w 600 9 || fail "another package test held /tmp/loom-package-test.lock for 10 minutes"

status=$(dpkg-query -W -f='${Status}' loom 2>/dev/null || true)
if [[ -n "$status" && "$status" != *not-installed ]]; then
  skip "dpkg knows a loom package already ($status); not touching it"
fi
for path in /usr/bin/loom /usr/bin/loom-coordinator /usr/bin/loom-worker /usr/libexec/loom /usr/lib/loom /etc/loom; do
  [[ ! -e "$path" ]] || skip "$path exists (installed by other means); not overwriting it"
done

# What the postinst creates and the purge leaves: noted now, removed at the end if it was new.
had_user=0; getent passwd loom >/dev/null && had_user=1
had_group=0; getent group loom >/dev/null && had_group=1
had_dirs=()
for d in /var/lib/loom /var/lib/loom-worker; do [[ -e "$d" ]] && had_dirs+=("$d"); done

tmp=$(mktemp -d /tmp/loom-package-test.XXXXXX)
chmod 755 "$tmp"
pids=()
installed=0
cleanup() {
  local rc=$?
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  if ((installed)); then
    dpkg --purge loom >"$tmp/purge.log" 2>&1 || { echo "dpkg --purge loom failed:"; cat "$tmp/purge.log"; rc=1; }
    for path in /usr/bin/loom /usr/libexec/loom /usr/lib/loom /etc/loom; do
      [[ ! -e "$path" ]] || { echo "FAIL: $path is still there after dpkg --purge loom"; rc=1; }
    done
  fi
  if ((!had_user)) && getent passwd loom >/dev/null; then userdel loom; fi
  if ((!had_group)) && getent group loom >/dev/null; then groupdel loom; fi
  for d in /var/lib/loom /var/lib/loom-worker; do
    [[ " ${had_dirs[*]-} " == *" $d "* ]] || rm -rf "$d"
  done
  if ((rc != 0)); then
    for log in "$tmp"/*.log; do [[ -f "$log" ]] && { echo "---- $log"; tail -n 40 "$log"; }; done
  fi
  rm -rf "$tmp"
  echo "package test: $((SECONDS - start)) s, exit $rc"
  exit $rc
}
trap cleanup EXIT

# ---- the package ---------------------------------------------------------------------------
step "cpack -G DEB"
(cd "$build" && cpack -G DEB -B "$tmp/pkg" --config "$build/CPackConfig.cmake") >"$tmp/cpack.log" 2>&1 ||
  fail "cpack -G DEB failed"
deb="$tmp/pkg/loom_${version}_amd64.deb"
[[ -f "$deb" ]] || fail "expected $deb; cpack wrote: $(ls "$tmp/pkg")"
echo "$(basename "$deb"): $(stat -c %s "$deb") bytes"

field() { dpkg-deb -f "$deb" "$1"; }
[[ "$(field Package)" == loom ]] || fail "Package is '$(field Package)', not loom"
[[ "$(field Version)" == "$version" ]] || fail "Version is '$(field Version)', not $version"
[[ "$(field Architecture)" == amd64 ]] || fail "Architecture is '$(field Architecture)', not amd64"
depends=$(field Depends)
echo "Depends: $depends"
for lib in 'libgrpc++1' librocksdb libprotobuf adduser; do
  [[ "$depends" == *"$lib"* ]] || fail "Depends lacks $lib (CPACK_DEBIAN_PACKAGE_SHLIBDEPS, dpkg-shlibdeps): $depends"
done

step "dpkg -i"
installed=1
dpkg -i "$deb" >"$tmp/dpkg-install.log" 2>&1 || fail "dpkg -i $(basename "$deb") failed"
for f in /usr/bin/loom /usr/bin/loom-coordinator /usr/bin/loom-worker /usr/libexec/loom/loom-rank; do
  [[ -x "$f" ]] || fail "$f is not installed"
done
for f in /usr/lib/loom/libloom_sentencepiece.so /usr/libexec/loom/libloom_sentencepiece.so \
         /usr/share/doc/loom/README.md /usr/share/doc/loom/plan-reference.md \
         /usr/share/loom/examples/plans/demo.yaml; do
  [[ -e "$f" ]] || fail "$f is not installed"
done
# deploy/systemd/ (when the tree has it): units in /lib/systemd/system, *.env as /etc/loom conffiles.
for unit in /usr/share/loom/deploy/systemd/*.service; do
  [[ -e "$unit" ]] || continue
  [[ -f "/lib/systemd/system/$(basename "$unit")" ]] || fail "$(basename "$unit") is not in /lib/systemd/system"
done
for env in /usr/share/loom/deploy/systemd/*.env; do
  [[ -e "$env" ]] || continue
  conf="/etc/loom/$(basename "$env")"
  [[ -f "$conf" ]] || fail "$conf is not installed"
  dpkg-query -W -f='${Conffiles}' loom | grep -q " $conf " || fail "$conf is not a conffile of the package"
done
getent passwd loom >/dev/null || fail "postinst did not create the loom user"
[[ "$(stat -c %U /var/lib/loom)" == loom && "$(stat -c %U /var/lib/loom-worker)" == loom ]] ||
  fail "/var/lib/loom and /var/lib/loom-worker are not the loom user's"
# postinst is idempotent: running it again on what it made does not fail.
/var/lib/dpkg/info/loom.postinst configure "$version" >"$tmp/postinst.log" 2>&1 || fail "a second postinst configure failed"

step "--version"
for bin in /usr/bin/loom /usr/bin/loom-coordinator /usr/bin/loom-worker /usr/libexec/loom/loom-rank; do
  out=$("$bin" --version) || fail "$bin --version exited $?"
  [[ "$out" == "$(basename "$bin") $version" ]] || fail "$bin --version printed '$out', not '$(basename "$bin") $version'"
done
/usr/bin/loom validate /usr/share/loom/examples/plans/demo.yaml >"$tmp/validate.log" 2>&1 ||
  fail "the installed example plan does not validate"

# ---- a small plan on the installed binaries ----------------------------------------------------
# Loom's processes below log which shared objects they load (LD_DEBUG=files, one file per
# process), so the test can tell the installed SentencePiece module from the build tree's.
mkdir -p "$tmp/ld"
step "loom data corpus/prepare"
LD_DEBUG=files LD_DEBUG_OUTPUT="$tmp/ld/data" /usr/bin/loom data corpus --out "$tmp/corpus" --sources math --math-docs 600 \
  >"$tmp/data.log" 2>&1 || fail "loom data corpus failed"
LD_DEBUG=files LD_DEBUG_OUTPUT="$tmp/ld/data" /usr/bin/loom data prepare --corpus "$tmp/corpus" --out "$tmp/prepared" \
  --vocab 512 --threads 2 >>"$tmp/data.log" 2>&1 || fail "loom data prepare failed"
[[ -f "$tmp/prepared/tokenizer.model" ]] || fail "loom data prepare wrote no tokenizer.model"

step "loom-coordinator + loom-worker"
LD_DEBUG=files LD_DEBUG_OUTPUT="$tmp/ld/coordinator" /usr/bin/loom-coordinator --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --data-dir "$tmp/coordinator" --prepared-data "$tmp/prepared" >"$tmp/coordinator.log" 2>&1 &
pids+=($!)
address=""
for _ in $(seq 200); do
  address=$(sed -n 's/^loom-coordinator listening on \([0-9.]*:[0-9]*\).*/\1/p' "$tmp/coordinator.log")
  [[ -n "$address" ]] && break
  kill -0 "${pids[0]}" 2>/dev/null || fail "loom-coordinator exited"
  sleep 0.1
done
[[ -n "$address" ]] || fail "loom-coordinator did not say where it listens within 20 s"

LD_DEBUG=files LD_DEBUG_OUTPUT="$tmp/ld/worker" /usr/bin/loom-worker --coordinator "$address" --metrics-listen 127.0.0.1:0 \
  --devices cpu:1 --threads-per-rank 2 --work-dir "$tmp/worker" --worker-id package-test >"$tmp/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "ranks run" "$tmp/worker.log" && break; sleep 0.1; done
grep -q "ranks run /usr/libexec/loom/loom-rank\b" "$tmp/worker.log" ||
  fail "loom-worker does not run the installed rank program: $(grep -m1 'ranks run' "$tmp/worker.log" || echo '(no start line)')"

cat >"$tmp/plan.yaml" <<'EOF'
name: package-test
seed: 1
model: {layers: 2, d_model: 64, heads: 2, kv_heads: 1, ffn_size: 128, vocab_size: 512}
defaults:
  parallel: {dp: 1, micro_batch_size: 4}
  optimizer: {lr: 3e-3}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 256}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  checkpoint: {every_steps: 10, keep_last: 2}
stages:
  - name: core
    kind: pretrain
    tokens: 5Ki
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
EOF
step "loom submit"
plan=$(/usr/bin/loom submit "$tmp/plan.yaml" --coordinator "$address" --quiet 2>"$tmp/submit.log") ||
  fail "loom submit failed: $(cat "$tmp/submit.log")"
state=""
for _ in $(seq 240); do
  /usr/bin/loom status "$plan" --json --coordinator "$address" >"$tmp/status.json" 2>"$tmp/status.log" || true
  state=$(grep -o '"PLAN_STATE_[A-Z_]*"' "$tmp/status.json" | head -n1 | tr -d '"')
  [[ -n "$state" && "$state" != PLAN_STATE_ACTIVE ]] && break
  sleep 0.5
done
step "plan $plan: ${state:-no state}"
[[ "$state" == PLAN_STATE_SUCCEEDED ]] ||
  fail "plan $plan ended as '${state:-nothing within 120 s}': $(cat "$tmp/status.json")"

# The rank trained (its log has step lines) and committed a checkpoint.
rank_log=$(find "$tmp/worker" -name rank.log | head -n1)
[[ -n "$rank_log" ]] && grep -q '^step 20 ' "$rank_log" || fail "no rank log with step 20 under $tmp/worker"
/usr/bin/loom checkpoints "$plan" --coordinator "$address" >"$tmp/checkpoints.log" 2>&1 ||
  fail "loom checkpoints failed"
grep -q step "$tmp/checkpoints.log" || fail "plan $plan committed no checkpoint: $(cat "$tmp/checkpoints.log")"

# Which binaries and modules ran: the installed ones, nothing from the build tree.
grep -lq 'needed by /usr/libexec/loom/loom-rank' "$tmp"/ld/worker.* || fail "no process ran /usr/libexec/loom/loom-rank"
grep -hq 'file=/usr/libexec/loom/libloom_sentencepiece\.so .*dynamically loaded by /usr/libexec/loom/loom-rank' \
  "$tmp"/ld/worker.* || fail "loom-rank did not load the installed SentencePiece module"
grep -hq 'file=/usr/bin/\.\./lib/loom/libloom_sentencepiece\.so .*dynamically loaded by /usr/bin/loom' "$tmp"/ld/data.* ||
  fail "loom data prepare did not load the installed SentencePiece module"
if grep -hF "$build" "$tmp"/ld/* | head -n3 | grep .; then fail "a process loaded files from the build tree $build"; fi

step "stop"
kill -TERM "${pids[1]}" "${pids[0]}"
for pid in "${pids[@]}"; do wait "$pid" || true; done
pids=()

# `loom up` starts the daemons installed beside it, over mutual TLS with a CA it makes in its data
# directory (the client presents its admin certificate from there). It needs a fixed port: the
# coordinator's, free again now.
step "loom up"
export LOOM_TLS_DIR="$tmp/up/tls"
/usr/bin/loom up --workers 1 --data-dir "$tmp/up" --listen "$address" --metrics-listen 127.0.0.1:0 \
  >"$tmp/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  /usr/bin/loom workers --coordinator "$address" 2>/dev/null | grep -q local-0 && break
  kill -0 "${pids[0]}" 2>/dev/null || fail "loom up exited"
  sleep 0.2
done
children=$(for c in $(pgrep -P "${pids[0]}"); do readlink "/proc/$c/exe"; done | sort | tr '\n' ' ')
[[ "$children" == "/usr/bin/loom-coordinator /usr/bin/loom-worker " ]] ||
  fail "loom up runs '$children', not /usr/bin/loom-coordinator and /usr/bin/loom-worker"
/usr/bin/loom workers --coordinator "$address" 2>&1 | grep -q local-0 || fail "loom up's worker did not register"
kill -TERM "${pids[0]}"
wait "${pids[0]}" || fail "loom up exited $? on SIGTERM"
pids=()
unset LOOM_TLS_DIR
echo "PASS"
