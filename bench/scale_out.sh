#!/usr/bin/env bash
# bench/scale_out.sh — upload throughput into one bucket of a single-node Ceph RGW
# (scripts/rgw.sh), all on this machine over 127.0.0.1, case by case in each round:
#
#   s3 x1      boto3 `upload_file` straight to the RGW (multipart, boto3's default 10 threads)
#   ferry x1   `ferry send` through HAProxy to one ferry-server on the bucket
#   s3 x2      two boto3 uploads at once
#   ferry x2   two `ferry send` at once through HAProxy to two ferry-servers (round robin:
#              one client each)
#
# Every case uploads the same file (new names each time, deleted after the case). The order
# of the cases rotates from round to round. MB/s = bytes uploaded / wall time of the case
# (for boto3 the upload call alone, not Python's start-up).
#
#   bench/scale_out.sh > report.md      (progress on stderr, a markdown table on stdout)
#
# Needs: the Ceph packages (scripts/rgw.sh --check), haproxy, python3 with boto3 (installed
# from PyPI with pip when missing), a Rust toolchain (release build of the two binaries).
set -euo pipefail

ROUNDS=${ROUNDS:-3}                   # rounds (median reported)
SIZE_MB=${SIZE_MB:-256}               # size of the uploaded file, MiB
RUN_TIMEOUT=${RUN_TIMEOUT:-600}       # seconds any one ferry upload may take (boto3 has its own)
LIFETIME=${LIFETIME:-3600}            # seconds the servers and HAProxy may live
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-scale-bench}
SKIP_BUILD=${SKIP_BUILD:-0}           # 1: use target/release as it is

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec 3>&1 1>&2
log() { printf '[scale-out] %s\n' "$*"; }

for tool in haproxy python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
"$ROOT/scripts/rgw.sh" --check >/dev/null || { "$ROOT/scripts/rgw.sh" --check >&2; exit 1; }
python3 -c 'import boto3' 2>/dev/null || python3 -m pip install --quiet boto3
if [[ $SKIP_BUILD != 1 ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --quiet -p ferry-server -p ferry-client)
fi
FERRY=$ROOT/target/release/ferry
FERRY_SERVER=$ROOT/target/release/ferry-server

rm -rf "$BENCH_DIR/run"
mkdir -p "$BENCH_DIR/data" "$BENCH_DIR/run"
file=$BENCH_DIR/data/scale-$SIZE_MB.bin
if [[ ! -f $file ]]; then
  log "making a $SIZE_MB MiB file"
  head -c "$((SIZE_MB << 20))" /dev/urandom >"$file.tmp" && mv "$file.tmp" "$file"
fi
bytes=$(stat -c %s "$file")

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Closing the script's stdin stops the cluster; wait for it to clean up.
  if [[ -n ${rgw_pid:-} ]]; then
    exec {rgw_in}>&-
    wait "$rgw_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

log "starting Ceph RGW"
coproc RGW { "$ROOT/scripts/rgw.sh"; }
rgw_pid=$RGW_PID rgw_in=${RGW[1]} rgw_out=${RGW[0]}
while IFS= read -r line <&"$rgw_out"; do
  [[ $line == READY ]] && break
  [[ $line == *=* ]] && export "${line?}"
done
[[ $line == READY ]] || { echo "scripts/rgw.sh did not start" >&2; exit 1; }
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
bucket=bench

# s3 COMMAND ARGS...: mkbucket | put KEY... (at once; prints the seconds) | rm PREFIX
s3() {
  python3 - "$@" <<'EOF'
import os, sys, threading, time
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["ENDPOINT"])
cmd, args, bucket = sys.argv[1], sys.argv[2:], "bench"
if cmd == "mkbucket":
    s3.create_bucket(Bucket=bucket)
elif cmd == "put":
    path, keys = args[0], args[1:]
    runs = [threading.Thread(target=s3.upload_file, args=(path, bucket, k)) for k in keys]
    t0 = time.perf_counter()
    for r in runs: r.start()
    for r in runs: r.join()
    print(f"{time.perf_counter() - t0:.4f}")
    for k in keys:
        assert s3.head_object(Bucket=bucket, Key=k)["ContentLength"] == os.path.getsize(path)
elif cmd == "rm":
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=args[0])
    for page in pages:
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
EOF
}
s3 mkbucket

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Two servers on the bucket behind HAProxy: front1 reaches the first only, front2 both.
ports=()
for i in 1 2; do
  port=$(free_port)
  RUST_LOG=info timeout "$LIFETIME" "$FERRY_SERVER" --listen "127.0.0.1:$port" \
    --store "s3://$bucket" --s3-endpoint "$ENDPOINT" --proxy-protocol --trusted-proxy 127.0.0.1 \
    2>>"$BENCH_DIR/run/server$i.log" &
  pids+=($!)
  ports+=("$port")
done
front1=$(free_port)
front2=$(free_port)
cat >"$BENCH_DIR/run/haproxy.cfg" <<EOF
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend one
  bind 127.0.0.1:$front1
  default_backend one
frontend two
  bind 127.0.0.1:$front2
  default_backend two
backend one
  server s1 127.0.0.1:${ports[0]} send-proxy-v2
backend two
  balance roundrobin
  server s1 127.0.0.1:${ports[0]} send-proxy-v2
  server s2 127.0.0.1:${ports[1]} send-proxy-v2
EOF
timeout "$LIFETIME" haproxy -f "$BENCH_DIR/run/haproxy.cfg" -db >/dev/null 2>&1 &
pids+=($!)
for port in "${ports[@]}" "$front1" "$front2"; do
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
  done
done

# ferry_case FRONT N TAG: N `ferry send` at once; prints the seconds.
ferry_case() {
  local front=$1 n=$2 tag=$3 t0 t1 i run=()
  t0=$EPOCHREALTIME
  for ((i = 0; i < n; i++)); do
    timeout "$RUN_TIMEOUT" "$FERRY" send "127.0.0.1:$front" "$file" --to "$tag/$i" >/dev/null &
    run+=($!)
  done
  for i in "${run[@]}"; do wait "$i" || { echo "ferry send failed" >&2; exit 1; }; done
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
}

# run_case NAME: one case of one round; prints MB/s.
run_case() {
  local case=$1 tag secs n
  tag="r$round-${case/ /}"
  case $case in
    "s3 x1") n=1; secs=$(s3 put "$file" "$tag/0") ;;
    "s3 x2") n=2; secs=$(s3 put "$file" "$tag/0" "$tag/1") ;;
    "ferry x1") n=1; secs=$(ferry_case "$front1" 1 "$tag") ;;
    "ferry x2") n=2; secs=$(ferry_case "$front2" 2 "$tag") ;;
  esac
  s3 rm "$tag/"
  awk -v b="$bytes" -v n="$n" -v s="$secs" 'BEGIN { printf "%.1f\n", n * b / 1e6 / s }'
}

# A fresh cluster's first writes are slow (its pools fill their first objects): one untimed
# upload each way first.
log "warming up"
s3 put "$file" warm/s3 >/dev/null
ferry_case "$front1" 1 warm >/dev/null
s3 rm warm/

cases=("s3 x1" "ferry x1" "s3 x2" "ferry x2")
declare -A results=()
for ((round = 1; round <= ROUNDS; round++)); do
  for ((k = 0; k < ${#cases[@]}; k++)); do
    c=${cases[$(((k + round - 1) % ${#cases[@]}))]}
    mbs=$(run_case "$c")
    log "round $round: $c $mbs MB/s"
    results[$c]+="$mbs "
  done
done

# CPU seconds (user + system) process $1 has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# The PID of the process `timeout` (PID $1) runs.
child_of() { pgrep -P "$1" 2>/dev/null || awk '{ print $1 }' "/proc/$1/task/$1/children"; }
# Where the time goes: CPU seconds of each process over one upload (x1 cases, alternating).
server1=$(child_of "${pids[0]}")
haproxy_pid=$(child_of "${pids[2]}")
osd=$(<"$DIR/run/osd.pid")
radosgw=$(<"$DIR/run/rgw.pid")
procs=("$server1" "$haproxy_pid" "$osd" "$radosgw")
cpu_rows=()
for ((round = 1; round <= 2; round++)); do
  for c in "ferry x1" "s3 x1"; do
    mapfile -t before < <(for p in "${procs[@]}"; do cpu_of "$p"; echo; done)
    t0=$EPOCHREALTIME
    # `times` in the subshell itself (not in a pipe): its children's user and system time,
    # the client's.
    client=$(
      if [[ $c == ferry* ]]; then
        "$FERRY" send "127.0.0.1:$front1" "$file" --to "cpu$round" >/dev/null
      else
        s3 put "$file" "cpu$round/s3" >/dev/null
      fi
      times > >(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
    )
    t1=$EPOCHREALTIME
    row="| $c | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') | $client |"
    i=0
    for p in "${procs[@]}"; do
      row+=" $(awk -v a="${before[$i]}" -v b="$(cpu_of "$p")" 'BEGIN { printf "%.2f", b - a }') |"
      i=$((i + 1))
    done
    cpu_rows+=("$row")
    s3 rm "cpu$round/"
  done
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
{
  echo "Uploads of a $SIZE_MB MiB file into Ceph RGW $(ceph --version | awk '{print $3}') (single node, BlueStore on a sparse file), $ROUNDS rounds, cases alternating; $(nproc) cores, $(uname -r)."
  echo
  echo "| case | median MB/s | rounds |"
  echo "|---|---:|---|"
  for c in "${cases[@]}"; do
    # shellcheck disable=SC2086
    echo "| $c | $(median ${results[$c]}) | ${results[$c]}|"
  done
  echo
  # The ferry x1 case goes to the first server only, x2 to one of each.
  for i in 1 2; do
    echo "ferry-server $i stored $(grep -c ': 1 stored' "$BENCH_DIR/run/server$i.log") uploads (warm-up included)."
  done
  echo
  echo "CPU seconds of each process over one upload (ferry-server, HAProxy: for the ferry case only; boto3's wall time and CPU include Python's start-up):"
  echo
  echo "| case | wall s | client | ferry-server | haproxy | ceph-osd | radosgw |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${cpu_rows[@]}"
} >&3
