#!/usr/bin/env bash
# bench/run.sh — time ferry against socat, OpenBSD nc, an rsync daemon, the
# seed Python code and (encrypted) scp, all over 127.0.0.1 on this machine.
#
#   bench/run.sh [big|tree|many|latency|durable|wan|tls|all]  (default: all)
#
# Progress goes to stderr; a markdown report goes to stdout, so
#   bench/run.sh > report.md
# gives a table to paste into docs/BENCHMARKS.md. See bench/README.md.
set -euo pipefail

CASE_FILTER=${1:-all}
ROUNDS=${ROUNDS:-5}                  # rounds per case (median is reported)
BIG_MB=${BIG_MB:-1024}               # size of the "big" file, MiB
TREE_FILES=${TREE_FILES:-5000}       # files in the tree case ...
TREE_DIRS=${TREE_DIRS:-50}           # ... spread over this many folders
TREE_KB=${TREE_KB:-4}                # ... of this many KiB each
MANY_CLIENTS=${MANY_CLIENTS:-32}     # concurrent ferry clients
MANY_MB=${MANY_MB:-32}               # MiB each of them sends
LAT_RUNS=${LAT_RUNS:-200}            # runs of the 1 KiB latency case
RUN_TIMEOUT=${RUN_TIMEOUT:-300}      # seconds any one transfer may take
SERVER_TIMEOUT=${SERVER_TIMEOUT:-1800} # seconds a long-lived ferry-server may live
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}
SKIP_BUILD=${SKIP_BUILD:-0}          # 1: use target/release as it is
# None of the peers syncs to disk, so by default neither does ferry-server; set
# FERRY_SERVER_FLAGS= (empty) to measure with its default fsync before publishing.
read -r -a SERVER_FLAGS <<< "${FERRY_SERVER_FLAGS---no-fsync}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=$BENCH_DIR/data                 # source files, kept between runs
SOCAT_BUF=1048576
NC=nc.openbsd                        # the OpenBSD flavour, whatever nc points at

case $CASE_FILTER in
  big|tree|many|latency|all) ;;
  durable|wan) ;;   # issue 14: durable peers and CPU per process; a 20 ms link
  tls) ;;           # issue 18: ferry TLS against ferry plain and scp
  *) echo "usage: $0 [big|tree|many|latency|durable|wan|tls|all]" >&2; exit 2 ;;
esac

# fd 3 is the report (stdout); everything else goes to stderr.
exec 3>&1 1>&2

# ---------------------------------------------------------------- helpers

log() { printf '[bench] %s\n' "$*"; }

# md LINE...: append lines to the markdown report.
md() { printf '%s\n' "$@" >>"$REPORT"; }

want() { [[ $CASE_FILTER == all || $CASE_FILTER == "$1" ]]; }

size_of() { stat -c %s "$1"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# elapsed T0 T1: seconds between two $EPOCHREALTIME stamps.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }

# percentile P VALUES...: nearest-rank percentile (P=50 is the median).
percentile() {
  local p=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v p="$p" '
    { v[NR] = $1 }
    END { if (p == 50 && NR % 2 == 0) { printf "%.4f", (v[NR/2] + v[NR/2+1]) / 2; exit }
          r = int(p / 100 * NR + 0.9999); if (r < 1) r = 1; printf "%.4f", v[r] }'
}

# calc EXPR: floating-point arithmetic, e.g. calc "2 * 3.5".
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }

declare -A LIVE=()  # receivers started and not yet reaped: wait pid -> signal pid
RX_PID=''           # the pid to signal to stop the current receiver
RX_WAIT=''          # the pid to wait for (differs from RX_PID under /usr/bin/time)

cleanup() {
  local pid
  for pid in "${!LIVE[@]}"; do
    kill -TERM "${LIVE[$pid]}" 2>/dev/null || true
  done
  for pid in "${!LIVE[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n ${RUN:-} ]]; then rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn OUT ERR CMD...: start CMD in the background under timeout(1), which
# forwards the TERM that stop_rx sends it. Sets RX_PID and RX_WAIT.
spawn() {
  local out=$1 err=$2; shift 2
  timeout -k 5 "${SPAWN_LIMIT:-$RUN_TIMEOUT}" "$@" >"$out" 2>"$err" </dev/null &
  RX_PID=$! RX_WAIT=$!
  LIVE[$!]=$!
}

# spawn_rss RSSFILE OUT ERR CMD...: like spawn, with /usr/bin/time -v around
# it. time(1) ignores SIGINT and would die of SIGTERM without printing, so
# RX_PID is the timeout process inside it (read back through a pid file).
spawn_rss() {
  local rss=$1 out=$2 err=$3 pidf="$RUN/inner.pid"; shift 3
  rm -f "$pidf"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
  /usr/bin/time -v -o "$rss" sh -c 'echo $$ >"$0"; exec "$@"' "$pidf" \
    timeout -k 5 "${SPAWN_LIMIT:-$RUN_TIMEOUT}" "$@" >"$out" 2>"$err" </dev/null &
  RX_WAIT=$!
  LIVE[$!]=$!
  local i
  for ((i = 0; i < 500; i++)); do
    [[ -s $pidf ]] && break
    sleep 0.01
  done
  RX_PID=$(<"$pidf")
  LIVE[$RX_WAIT]=$RX_PID
}

# reap_rx: wait for the current receiver to exit by itself; its status.
reap_rx() {
  local rc=0
  wait "$RX_WAIT" || rc=$?
  unset "LIVE[$RX_WAIT]"
  return "$rc"
}

# stop_rx: stop the current receiver if it is still running, and reap it.
stop_rx() {
  if [[ -n ${LIVE[$RX_WAIT]:-} ]]; then
    kill -TERM "$RX_PID" 2>/dev/null || true
    reap_rx 2>/dev/null || true
  fi
}

# rss_kb FILE: "Maximum resident set size" from a /usr/bin/time -v report.
rss_kb() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }

# wait_listen PORT: wait until something listens on 127.0.0.1:PORT, as long
# as the receiver is alive. Reads /proc so that no probe connection is made
# (socat, nc and the seed server accept exactly one connection).
wait_listen() {
  local hex i
  hex=$(printf '%04X' "$1")
  for ((i = 0; i < 1000; i++)); do
    grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp && return 0
    kill -0 "$RX_WAIT" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}

# ------------------------------------------------------------ environment

ensure_peers() {
  local missing=()
  command -v socat >/dev/null || missing+=(socat)
  command -v "$NC" >/dev/null || missing+=(netcat-openbsd)
  command -v rsync >/dev/null || missing+=(rsync)
  command -v hyperfine >/dev/null || missing+=(hyperfine)
  command -v b3sum >/dev/null || missing+=(b3sum)
  [[ -x /usr/bin/time ]] || missing+=(time)
  if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      socat netcat-openbsd rsync hyperfine b3sum time >/dev/null
  fi
}

FERRY_OK=0
FERRY_WHY=''

# setup_ferry: build the workspace and smoke-test one transfer; on any
# failure ferry is reported "not available" and the peers still run.
setup_ferry() {
  local bin=${CARGO_TARGET_DIR:-$ROOT/target}/release
  FERRY_SERVER=$bin/ferry-server
  FERRY=$bin/ferry
  if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release --workspace (log: $BENCH_DIR/build.log)"
    if ! (cd "$ROOT" && timeout 1800 cargo build --release --workspace) >"$BENCH_DIR/build.log" 2>&1; then
      tail -n 15 "$BENCH_DIR/build.log"
      FERRY_WHY='build failed'
      return
    fi
  fi
  if [[ ! -x $FERRY_SERVER || ! -x $FERRY ]]; then
    FERRY_WHY="no ferry-server/ferry binary in $bin"
    return
  fi
  local smoke=$RUN/smoke
  mkdir -p "$smoke"
  printf 'ferry smoke test\n' >"$smoke/hello.txt"
  if RUN_TIMEOUT=30 transfer_once ferry "$smoke/hello.txt" "$smoke/out" && cmp -s "$smoke/hello.txt" "$smoke/out/hello.txt"; then
    FERRY_OK=1
  else
    FERRY_WHY='smoke test failed'
    log "ferry smoke test failed; last lines of its logs:"
    tail -n 5 "$RUN"/ferry-*.log 2>/dev/null || true
  fi
}

# ------------------------------------------------------------ source data

# make_file NAME MIB: a random file under $DATA, reused while its size fits.
make_file() {
  local f=$DATA/$1.bin bytes=$(($2 * 1048576))
  if [[ ! -f $f || $(size_of "$f") -ne $bytes ]]; then
    log "creating $f ($2 MiB)"
    head -c "$bytes" /dev/urandom >"$f.tmp"
    mv "$f.tmp" "$f"
  fi
  cat "$f" >/dev/null   # warm the page cache
  SRC=$f
}

# make_tree NAME COUNT FOLDERS KIB: COUNT random files spread over FOLDERS
# sub-folders (flat when FOLDERS is 0), reused while the parameters match.
make_tree() {
  local d=$DATA/$1 stamp="$2 $3 $4"
  if [[ ! -f $d.ok || $(<"$d.ok") != "$stamp" ]]; then
    log "creating $d ($2 files of $4 KiB)"
    rm -rf "$d" "$d.ok"
    python3 - "$d" "$2" "$3" "$4" <<'EOF'
import os, sys
root, count, folders, kib = sys.argv[1], *map(int, sys.argv[2:])
os.makedirs(root)
for i in range(count):
    sub = os.path.join(root, f"d{i % folders:03d}") if folders else root
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(kib * 1024))
EOF
    echo "$stamp" >"$d.ok"
  fi
  tar -cf - -C "$d" . >/dev/null   # warm the page cache
  SRC=$d
}

# ------------------------------------------------------- the tools compared
# Every tool has a receiver (rx_start) and a sender (tx). The receiver writes
# what it gets to DEST/<basename of the source>.

rsync_conf() {
  local dest=$1 conf=$RUN/rsyncd.conf
  cat >"$conf" <<EOF
uid = $(id -u)
gid = $(id -g)
use chroot = no
log file = $RUN/rsyncd.log
pid file = $RUN/rsyncd.pid
[mod]
  path = $dest
  read only = no
EOF
  echo "$conf"
}

# rx_start TOOL DEST PORT NAME
rx_start() {
  local tool=$1 dest=$2 port=$3 name=$4 logf=$RUN/$1-rx.log
  case $tool in
    ferry) spawn /dev/null "$logf" "$FERRY_SERVER" --listen "127.0.0.1:$port" --dir "$dest" "${SERVER_FLAGS[@]}" ;;
    socat) spawn /dev/null "$logf" socat -u -b "$SOCAT_BUF" \
             "TCP-LISTEN:$port,reuseaddr,bind=127.0.0.1" "OPEN:$dest/$name,creat,trunc" ;;
    nc)    spawn "$dest/$name" "$logf" "$NC" -d -l 127.0.0.1 "$port" ;;
    seed)  SEED_HOST=127.0.0.1 SEED_PORT=$port SEED_DIR=$dest SEED_MAX_CONNECTIONS=1 \
             spawn /dev/null "$logf" python3 "$ROOT/seed/server.py" ;;
    rsync) rm -f "$RUN/rsyncd.pid"
           spawn /dev/null "$logf" rsync --daemon --no-detach --address 127.0.0.1 \
             --port "$port" --config "$(rsync_conf "$dest")" ;;
  esac
}

# tx TOOL SRC PORT: the sender, in the foreground, bounded by timeout(1).
tx() {
  local tool=$1 src=$2 port=$3 logf=$RUN/$1-tx.log
  local -a t=(timeout -k 5 "$RUN_TIMEOUT")
  case $tool in
    ferry) "${t[@]}" "$FERRY" send "127.0.0.1:$port" "$src" --quiet </dev/null ;;
    socat) "${t[@]}" socat -u -b "$SOCAT_BUF" "OPEN:$src" "TCP:127.0.0.1:$port" </dev/null ;;
    nc)    "${t[@]}" "$NC" -N 127.0.0.1 "$port" <"$src" ;;
    seed)  printf '127.0.0.1\n%s\n' "$src" | SEED_PORT=$port "${t[@]}" python3 "$ROOT/seed/client.py" ;;
    rsync) local -a r=(-W); [[ -d $src ]] && r+=(-r)
           "${t[@]}" rsync "${r[@]}" "$src" "rsync://127.0.0.1:$port/mod/" </dev/null ;;
  esac >"$logf" 2>&1
}

# Receivers that exit by themselves after one connection; the transfer is
# complete when they have exited. The others (ferry, rsync) are complete
# when the sender exits, which the untimed check right after verifies.
oneshot() { [[ $1 == socat || $1 == nc || $1 == seed ]]; }

# cpu_ticks: CPU time the whole machine has spent busy (user, nice, system,
# irq, softirq over all cores), in clock ticks, from /proc/stat.
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }

# send_timed TOOL SRC PORT: run the sender against a listening receiver;
# sets ELAPSED to the seconds until the sender (and a one-shot receiver)
# exited, and CPU_USED to the CPU seconds the machine spent meanwhile (both
# ends, on an otherwise idle machine). Returns non-zero if either failed.
send_timed() {
  local tool=$1 src=$2 port=$3 ok=1 t0 t1 c0 c1
  c0=$(cpu_ticks)
  t0=$EPOCHREALTIME
  tx "$tool" "$src" "$port" || ok=0
  if ((ok)) && oneshot "$tool"; then
    reap_rx || ok=0
  fi
  t1=$EPOCHREALTIME
  c1=$(cpu_ticks)
  ELAPSED=$(elapsed "$t0" "$t1")
  CPU_USED=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
  ((ok))
}

# transfer_once TOOL SRC DEST: fresh empty DEST, receiver on a free port
# (untimed), timed send, receiver stopped. Sets ELAPSED.
transfer_once() {
  local tool=$1 src=$2 dest=$3 port ok=0
  rm -rf "$dest"
  mkdir -p "$dest"
  port=$(free_port)
  rx_start "$tool" "$dest" "$port" "$(basename "$src")"
  if ! wait_listen "$port"; then
    log "$tool: receiver did not start listening (see $tool-rx log)"
    tail -n 5 "$RUN/$tool-rx.log" || true
  elif send_timed "$tool" "$src" "$port"; then
    ok=1
  else
    log "$tool: transfer failed"
    tail -n 5 "$RUN/$tool-tx.log" "$RUN/$tool-rx.log" || true
  fi
  stop_rx
  ((ok))
}

# ------------------------------------------------------------ verification

# count_bytes DIR: "<number of files> files, <total> bytes".
count_bytes() { find "$1" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%d files, %d bytes", n, b }'; }

# verify SRC DEST [cmp]: DEST/<name> matches SRC (a file: same size, and the
# same bytes when "cmp" is given; a folder: same file count, bytes, diff -r).
verify() {
  local src=$1 out
  out=$2/$(basename "$1")
  if [[ -f $src ]]; then
    [[ -f $out && $(size_of "$out") -eq $(size_of "$src") ]] || { log "wrong size: $out"; return 1; }
    [[ ${3:-} != cmp ]] || cmp -s "$src" "$out" || { log "content differs: $out"; return 1; }
  else
    [[ -d $out ]] || { log "missing folder: $out"; return 1; }
    local a b
    a=$(count_bytes "$src") b=$(count_bytes "$out")
    [[ $a == "$b" ]] || { log "files/bytes differ: $a (source) vs $b ($out)"; return 1; }
    diff -r "$src" "$out" >/dev/null || { log "diff -r differs: $out"; return 1; }
  fi
}

# ------------------------------------------------------------ result tables

declare -A TIMES=() FAILED=()

# record KEY: add $ELAPSED to the samples of KEY (and $CPU_USED to KEY/cpu).
record() {
  TIMES[$1]="${TIMES[$1]:-} $ELAPSED"
  [[ -z ${CPU_USED:-} ]] || TIMES[$1/cpu]="${TIMES[$1/cpu]:-} $CPU_USED"
  CPU_USED=''
}

# stat_of P KEY: the P-th percentile of KEY's samples.
stat_of() {
  local -a v
  read -ra v <<<"${TIMES[$2]}"
  percentile "$1" "${v[@]}"
}

# result KEY: the median of KEY's samples, "FAILED" or "not available".
result() {
  if [[ ${1#*/} == ferry* && $FERRY_OK != 1 ]]; then echo 'not available'
  elif [[ -n ${FAILED[$1]:-} ]]; then echo FAILED
  elif [[ -z ${TIMES[$1]:-} ]]; then echo '—'
  else stat_of 50 "$1"
  fi
}

is_number() { [[ $1 =~ ^[0-9.]+$ ]]; }

# ratio_vs_ferry CASE TOOL: TOOL's median over ferry's ("2.00×" = half speed).
ratio_vs_ferry() {
  local mine ferry
  mine=$(result "$1/$2") ferry=$(result "$1/ferry")
  if is_number "$mine" && is_number "$ferry"; then
    calc "$mine / $ferry" | sed 's/$/×/'
  else
    echo '—'
  fi
}

# rounds_table CASE MIB TOOLS...: markdown table of medians, MiB/s, ratios,
# and the median CPU seconds the machine spent per run (sender + receiver).
rounds_table() {
  local case=$1 mib=$2 tool med; shift 2
  md '' '| tool | median s | MiB/s | time vs ferry | CPU s (both ends) |' '| --- | ---: | ---: | ---: | ---: |'
  for tool in "$@"; do
    med=$(result "$case/$tool")
    local rate='—' cpu='—'
    is_number "$med" && rate=$(calc "$mib / $med")
    [[ -n ${TIMES[$case/$tool/cpu]:-} ]] && is_number "$med" && cpu=$(stat_of 50 "$case/$tool/cpu")
    md "| $tool | $med | $rate | $(ratio_vs_ferry "$case" "$tool") | $cpu |"
    if is_number "$med"; then
      log "$case: $tool: median $med s, $rate MiB/s, time vs ferry $(ratio_vs_ferry "$case" "$tool")"
    else
      log "$case: $tool: $med"
    fi
  done
}

# run_rounds CASE SRC TOOLS...: ROUNDS rounds; in each, every tool once, the
# order rotated by one per round. First ferry round is also cmp-checked.
# With KEEP_OUTPUTS=1 each round writes into a folder of its own, all removed
# after the last round: ext4 without a journal skips inodes freed in the last
# 60-360 s when it allocates (recently_deleted), so removing 5,000 files
# between rounds makes every later create scan past them and times the file
# system, not the tools. TRANSFER names the function that moves one copy
# (transfer_once by default; wan_once through the delay proxy); scp runs only
# its first SCP_ROUNDS rounds (all by default).
run_rounds() {
  local case=$1 src=$2 r i tool; shift 2
  local -a tools=("$@")
  local n=${#tools[@]}
  for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
      tool=${tools[(i + r) % n]}
      [[ $tool == ferry && $FERRY_OK != 1 ]] && continue
      [[ $tool == scp && $r -ge ${SCP_ROUNDS:-$ROUNDS} ]] && continue
      [[ -n ${FAILED[$case/$tool]:-} ]] && continue
      local dest=$RUN/out-$tool check=''
      [[ ${KEEP_OUTPUTS:-0} == 1 ]] && dest=$RUN/out-$case-$tool-$r
      [[ $tool == ferry && $r == 0 ]] && check='cmp'
      if "${TRANSFER:-transfer_once}" "$tool" "$src" "$dest" && verify "$src" "$dest" $check; then
        record "$case/$tool"
        log "$case round $((r + 1))/$ROUNDS $tool: $ELAPSED s"
      else
        FAILED[$case/$tool]=1
        log "$case round $((r + 1))/$ROUNDS $tool: FAILED"
      fi
      [[ ${KEEP_OUTPUTS:-0} == 1 ]] || rm -rf "$dest"
      sync
    done
  done
  rm -rf "$RUN/out-$case-"*
}

# --------------------------------------------------------------- the cases

case_big() {
  make_file "big-$BIG_MB" "$BIG_MB"
  log "case big: one $BIG_MB MiB file, $ROUNDS rounds"
  local tools=(ferry socat nc seed rsync)
  run_rounds big "$SRC" "${tools[@]}"
  md '' "## One ${BIG_MB} MiB file, disk to disk over 127.0.0.1 (warm cache)"
  md '' "Wall clock from starting the sender until the sender exited and the" \
        "receiver had the whole file; median over $ROUNDS round(s)."
  rounds_table big "$BIG_MB" "${tools[@]}"
}

case_tree() {
  make_tree "tree-$TREE_FILES" "$TREE_FILES" "$TREE_DIRS" "$TREE_KB"
  log "case tree: $TREE_FILES files of $TREE_KB KiB in $TREE_DIRS folders, $ROUNDS rounds"
  local tools=(ferry rsync)
  KEEP_OUTPUTS=1 run_rounds tree "$SRC" "${tools[@]}"
  md '' "## A tree of $TREE_FILES files of $TREE_KB KiB in $TREE_DIRS folders"
  md '' "\`ferry send DIR\` vs \`rsync -r -W DIR\` to an rsync daemon, fresh empty" \
        "destination each round, checked with \`diff -r\`; median over $ROUNDS round(s)."
  rounds_table tree "$(calc "$TREE_FILES * $TREE_KB / 1024")" "${tools[@]}"
}

# ferry_session DEST RSSFILE SRC...: one ferry-server under /usr/bin/time,
# every SRC sent by its own concurrent client; sets ELAPSED (all clients
# done) and returns non-zero if any client failed or an output is wrong.
ferry_session() {
  local dest=$1 rss=$2 port pid ok=1 t0 t1 src; shift 2
  local -a pids=()
  rm -rf "$dest"
  mkdir -p "$dest"
  port=$(free_port)
  spawn_rss "$rss" /dev/null "$RUN/ferry-rx.log" \
    "$FERRY_SERVER" --listen "127.0.0.1:$port" --dir "$dest" "${SERVER_FLAGS[@]}"
  wait_listen "$port" || { stop_rx; log "ferry-server did not start"; return 1; }
  t0=$EPOCHREALTIME
  for src; do
    timeout -k 5 "$RUN_TIMEOUT" "$FERRY" send "127.0.0.1:$port" "$src" --quiet \
      >>"$RUN/ferry-tx.log" 2>&1 </dev/null &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || ok=0; done
  t1=$EPOCHREALTIME
  ELAPSED=$(elapsed "$t0" "$t1")
  stop_rx
  for src; do verify "$src" "$dest" || ok=0; done
  ((ok)) && verify "$1" "$dest" cmp || ok=0
  rm -rf "$dest"
  sync
  ((ok))
}

case_many() {
  md '' "## $MANY_CLIENTS concurrent ferry clients, $MANY_MB MiB each"
  if [[ $FERRY_OK != 1 ]]; then
    log "ferry: not available ($FERRY_WHY); skipping case many"
    md '' 'ferry: not available'
    return
  fi
  make_file "many-$MANY_MB" "$MANY_MB"
  local links=$DATA/many-links i r
  local -a files=()
  mkdir -p "$links"
  for ((i = 0; i < MANY_CLIENTS; i++)); do
    ln -f "$SRC" "$links/c$i.bin"   # same bytes, distinct names, no extra disk
    files+=("$links/c$i.bin")
  done
  local rss_many=0 rss_one=0 kb
  for ((r = 0; r < ROUNDS; r++)); do
    for mode in many one; do
      [[ -n ${FAILED[many/$mode]:-} ]] && continue
      local -a set=("${files[@]}")
      [[ $mode == one ]] && set=("${files[0]}")
      if ferry_session "$RUN/out-many" "$RUN/rss.txt" "${set[@]}"; then
        record "many/$mode"
        kb=$(rss_kb "$RUN/rss.txt")
        if [[ $mode == many ]]; then ((kb > rss_many)) && rss_many=$kb
        else ((kb > rss_one)) && rss_one=$kb; fi
        log "many round $((r + 1))/$ROUNDS $mode: $ELAPSED s, server peak RSS $kb KiB"
      else
        FAILED[many/$mode]=1
        log "many round $((r + 1))/$ROUNDS $mode: FAILED"
      fi
    done
  done
  local total=$((MANY_CLIENTS * MANY_MB)) m1 mn
  mn=$(result many/many) m1=$(result many/one)
  md '' "Wall clock from starting the clients until the last one exited (every" \
        "file acknowledged); median over $ROUNDS round(s); peak RSS of ferry-server" \
        "from \`/usr/bin/time -v\`, highest over the rounds."
  md '' '| run | median s | aggregate MiB/s | server peak RSS MiB |' '| --- | ---: | ---: | ---: |'
  local rate_n='—' rate_1='—'
  is_number "$mn" && rate_n=$(calc "$total / $mn")
  is_number "$m1" && rate_1=$(calc "$MANY_MB / $m1")
  md "| $MANY_CLIENTS clients × $MANY_MB MiB | $mn | $rate_n | $(calc "$rss_many / 1024") |"
  md "| 1 client × $MANY_MB MiB | $m1 | $rate_1 | $(calc "$rss_one / 1024") |"
  log "many: $MANY_CLIENTS clients $mn s ($rate_n MiB/s), one client $m1 s ($rate_1 MiB/s)"
  big_file_rss
}

# big_file_rss: peak server RSS for one BIG_MB and one 4×BIG_MB file.
big_file_rss() {
  md '' "Peak RSS of ferry-server receiving one file (one run each):" ''
  md '| file | seconds | server peak RSS MiB |' '| --- | ---: | ---: |'
  local mult mib free_kb
  for mult in 1 4; do
    mib=$((mult * BIG_MB))
    free_kb=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
    if ((mult > 1 && free_kb < 12 * BIG_MB * 1024)); then
      log "skipping the $mib MiB file: $((free_kb / 1048576)) GiB free on $BENCH_DIR"
      md "| $mib MiB | skipped: less than $((12 * BIG_MB / 1024)) GiB free | — |"
      continue
    fi
    make_file "big-$mib" "$mib"
    if ferry_session "$RUN/out-rss" "$RUN/rss.txt" "$SRC"; then
      md "| $mib MiB | $ELAPSED | $(calc "$(rss_kb "$RUN/rss.txt") / 1024") |"
      log "rss: $mib MiB file in $ELAPSED s, peak RSS $(rss_kb "$RUN/rss.txt") KiB"
    else
      md "| $mib MiB | FAILED | — |"
    fi
    if ((mult > 1)); then rm -f "$SRC"; fi   # do not keep 4× the big file around
  done
}

case_latency() {
  make_tree "lat-$LAT_RUNS" "$LAT_RUNS" 0 1
  local src=$SRC i files=() t0
  mapfile -t files < <(find "$src" -type f | sort)
  log "case latency: $LAT_RUNS runs of one 1 KiB file"
  # Floor: starting a process under timeout(1), which every run pays too.
  for ((i = 0; i < LAT_RUNS; i++)); do
    t0=$EPOCHREALTIME
    timeout 5 true
    ELAPSED=$(elapsed "$t0" "$EPOCHREALTIME")
    record latency/floor
  done
  # ferry: one long-lived server; socat: a fresh one-shot receiver per run.
  local fdest=$RUN/out-lat-ferry sdest=$RUN/out-lat-socat fport=''
  rm -rf "$fdest" "$sdest"
  mkdir -p "$fdest" "$sdest"
  local FERRY_RX='' FERRY_RX_WAIT=''
  if [[ $FERRY_OK == 1 ]]; then
    fport=$(free_port)
    SPAWN_LIMIT=$SERVER_TIMEOUT rx_start ferry "$fdest" "$fport" ''
    FERRY_RX=$RX_PID FERRY_RX_WAIT=$RX_WAIT
    wait_listen "$fport" || FAILED[latency/ferry]=1
  fi
  for ((i = 0; i < LAT_RUNS; i++)); do
    if [[ $FERRY_OK == 1 && -z ${FAILED[latency/ferry]:-} ]]; then
      RX_PID=$FERRY_RX RX_WAIT=$FERRY_RX_WAIT
      if send_timed ferry "${files[i]}" "$fport" && verify "${files[i]}" "$fdest"; then
        record latency/ferry
      else
        FAILED[latency/ferry]=1
        log "latency: ferry run $i FAILED"
      fi
    fi
    if [[ -z ${FAILED[latency/socat]:-} ]]; then
      if transfer_once socat "${files[i]}" "$sdest" && verify "${files[i]}" "$sdest"; then
        record latency/socat
      else
        FAILED[latency/socat]=1
        log "latency: socat run $i FAILED"
      fi
    fi
  done
  if [[ -n $FERRY_RX ]]; then
    RX_PID=$FERRY_RX RX_WAIT=$FERRY_RX_WAIT
    stop_rx
  fi
  md '' "## Small-file latency: one 1 KiB file, $LAT_RUNS runs"
  md '' "Wall clock of one whole sender run: process start, connect, send and" \
        "(ferry) the server's acknowledgement; for socat until its one-shot" \
        "receiver exited. Includes the start of the \`timeout\` wrapper, shown" \
        "as the floor row. ferry talks to one long-lived server."
  md '' '| tool | median ms | p99 ms |' '| --- | ---: | ---: |'
  local tool med p99
  for tool in ferry socat floor; do
    med=$(result "latency/$tool") p99=$med
    if is_number "$med"; then
      p99=$(stat_of 99 "latency/$tool")
      med=$(calc "$med * 1000") p99=$(calc "$p99 * 1000")
    fi
    local label=$tool
    [[ $tool == floor ]] && label="floor (\`timeout 5 true\`)"
    md "| $label | $med | $p99 |"
    log "latency: $tool median $med ms, p99 $p99 ms"
  done
}

# ------------------------------------- durable peers, CPU per process (14)
# The default ferry-server flushes every file before it acknowledges it; so do
# these peers: rsync with --fsync, socat followed by an fsync of the received
# file (`sync FILE`, timed). The same rounds also run the plain variants
# (ferry-server --no-fsync, rsync, socat). Each end runs under
# /usr/bin/time -v, so the CPU seconds are each process's own, not the
# machine's. The tls case (18) measures through the same functions.

DURABLE_VARIANTS=(durable plain)
CPU_VARIANTS=("${DURABLE_VARIANTS[@]}")   # the variants cpu_rounds runs

# cpu_of TIMEFILE: user + system CPU seconds from a /usr/bin/time -v report.
cpu_of() { awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$1"; }

# rx_cpu VARIANT TOOL DEST PORT NAME: the receiver, its report in $RUN/rx.time.
# ferry-tls: a self-signed certificate kept in the run folder; scp-*: a
# one-shot `sshd -d` (one connection, no listener fork, then it exits).
rx_cpu() {
  local variant=$1 tool=$2 dest=$3 port=$4 name=$5 logf=$RUN/$2-rx.log t=$RUN/rx.time
  local -a flags=()
  [[ $variant == plain ]] && flags=(--no-fsync)
  case $tool in
    ferry) spawn_rss "$t" /dev/null "$logf" "$FERRY_SERVER" --listen "127.0.0.1:$port" --dir "$dest" "${flags[@]}" ;;
    ferry-tls) spawn_rss "$t" /dev/null "$logf" "$FERRY_SERVER" --listen "127.0.0.1:$port" --dir "$dest" \
             --tls-self-signed --state-dir "$RUN/tls-state" "${flags[@]}" ;;
    scp-*) spawn_rss "$t" /dev/null "$logf" /usr/sbin/sshd -d -e -f "$RUN/ssh/sshd_config" -p "$port" ;;
    socat) spawn_rss "$t" /dev/null "$logf" socat -u -b "$SOCAT_BUF" \
             "TCP-LISTEN:$port,reuseaddr,bind=127.0.0.1" "OPEN:$dest/$name,creat,trunc" ;;
    rsync) rm -f "$RUN/rsyncd.pid"
           spawn_rss "$t" /dev/null "$logf" rsync --daemon --no-detach --address 127.0.0.1 \
             --port "$port" --config "$(rsync_conf "$dest")" ;;
  esac
}

# tx_cpu VARIANT TOOL SRC PORT DEST: the sender in the foreground, its report
# in $RUN/tx.time (DEST is for scp, which names its destination).
tx_cpu() {
  local variant=$1 tool=$2 src=$3 port=$4 dest=$5 logf=$RUN/$2-tx.log
  local -a t=(/usr/bin/time -v -o "$RUN/tx.time" timeout -k 5 "$RUN_TIMEOUT")
  case $tool in
    ferry) "${t[@]}" "$FERRY" send "127.0.0.1:$port" "$src" --quiet </dev/null ;;
    ferry-tls) "${t[@]}" "$FERRY" send --known-hosts "$RUN/known_hosts" "127.0.0.1:$port" "$src" --quiet </dev/null ;;
    scp-aes) scp_cmd "$port" "$src" "$dest" -c aes128-gcm@openssh.com
           "${t[@]}" "${SCP_CMD[@]}" </dev/null ;;
    scp-chacha) scp_cmd "$port" "$src" "$dest" -c chacha20-poly1305@openssh.com
           "${t[@]}" "${SCP_CMD[@]}" </dev/null ;;
    socat) "${t[@]}" socat -u -b "$SOCAT_BUF" "OPEN:$src" "TCP:127.0.0.1:$port" </dev/null ;;
    rsync) local -a r=(-W); [[ -d $src ]] && r+=(-r); [[ $variant == durable ]] && r+=(--fsync)
           "${t[@]}" rsync "${r[@]}" "$src" "rsync://127.0.0.1:$port/mod/" </dev/null ;;
  esac >"$logf" 2>&1
}

# settle PID: wait (at most 5 s) until the receiver under the timeout process
# PID has reaped its own children (the rsync daemon's process for the
# connection), so that their CPU seconds count in its report.
settle() {
  local rx i
  rx=$(pgrep -P "$1" | head -n 1)
  for ((i = 0; i < 500; i++)); do
    [[ -n $rx ]] && pgrep -P "$rx" >/dev/null || return 0
    sleep 0.01
  done
}

# transfer_cpu VARIANT TOOL SRC DEST: like transfer_once; also sets TX_CPU and
# RX_CPU, the CPU seconds of the sender and of the receiver.
transfer_cpu() {
  local variant=$1 tool=$2 src=$3 dest=$4 port ok=0 t0 t1
  rm -rf "$dest"
  mkdir -p "$dest"
  port=$(free_port)
  rx_cpu "$variant" "$tool" "$dest" "$port" "$(basename "$src")"
  if wait_listen "$port"; then
    t0=$EPOCHREALTIME
    if tx_cpu "$variant" "$tool" "$src" "$port" "$dest"; then
      ok=1
      # sshd -d exits with 255 after its one connection; verify checks the output.
      if oneshot "$tool"; then reap_rx || [[ $tool == scp-* ]] || ok=0; fi
      if ((ok)) && [[ $tool == socat && $variant == durable ]]; then
        sync "$dest/$(basename "$src")" || ok=0
      fi
    fi
    t1=$EPOCHREALTIME
    ELAPSED=$(elapsed "$t0" "$t1")
  fi
  oneshot "$tool" || settle "$RX_PID"
  stop_rx
  if ((ok)); then
    TX_CPU=$(cpu_of "$RUN/tx.time") RX_CPU=$(cpu_of "$RUN/rx.time")
  else
    log "$variant $tool: transfer failed"
    tail -n 5 "$RUN/$tool-tx.log" "$RUN/$tool-rx.log" || true
  fi
  ((ok))
}

# cpu_rounds CASE SRC TOOLS...: ROUNDS rounds; each runs every tool in each of
# CPU_VARIANTS (durable and plain), in an order rotated by one per round; a tree goes into a folder of
# its own each time (see run_rounds), all removed after the last round. Samples go to
# VARIANT-CASE/TOOL, with /tx and /rx for the CPU seconds.
cpu_rounds() {
  local case=$1 src=$2 r i v t; shift 2
  local -a runs=()
  for v in "${CPU_VARIANTS[@]}"; do
    for t in "$@"; do runs+=("$v $t"); done
  done
  local n=${#runs[@]}
  for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
      read -r v t <<<"${runs[(i + r) % n]}"
      local key=$v-$case/$t dest=$RUN/out-$case-$v-$t-$r
      [[ $t == ferry* && $FERRY_OK != 1 ]] && continue
      [[ -n ${FAILED[$key]:-} ]] && continue
      if transfer_cpu "$v" "$t" "$src" "$dest" && verify "$src" "$dest"; then
        record "$key"
        TIMES[$key/tx]="${TIMES[$key/tx]:-} $TX_CPU"
        TIMES[$key/rx]="${TIMES[$key/rx]:-} $RX_CPU"
        log "$key round $((r + 1))/$ROUNDS: $ELAPSED s, CPU sender $TX_CPU s, receiver $RX_CPU s"
      else
        FAILED[$key]=1
        log "$key round $((r + 1))/$ROUNDS: FAILED"
      fi
      [[ -d $src ]] || rm -rf "$dest"   # only trees keep their folders (see run_rounds)
      sync
    done
  done
  rm -rf "$RUN/out-$case-"*
}

# both_cpu KEY: the median CPU seconds of KEY's sender plus its receiver's.
both_cpu() { calc "$(stat_of 50 "$1/tx") + $(stat_of 50 "$1/rx")"; }

# cpu_table CASE MIB TOOLS...: medians, MiB/s, ratios, and the median CPU
# seconds of each end.
cpu_table() {
  local case=$1 mib=$2 tool med; shift 2
  md '' '| tool | median s | MiB/s | time vs ferry | sender CPU s | receiver CPU s | both CPU s |' \
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: |'
  for tool in "$@"; do
    med=$(result "$case/$tool")
    local rate='—' tx='—' rx='—' both='—'
    if is_number "$med"; then
      rate=$(calc "$mib / $med")
      tx=$(stat_of 50 "$case/$tool/tx") rx=$(stat_of 50 "$case/$tool/rx")
      both=$(both_cpu "$case/$tool")
    fi
    md "| $tool | $med | $rate | $(ratio_vs_ferry "$case" "$tool") | $tx | $rx | $both |"
    log "$case: $tool: median $med s, time vs ferry $(ratio_vs_ferry "$case" "$tool"), CPU $tx + $rx s"
  done
}

case_durable() {
  make_tree "tree-$TREE_FILES" "$TREE_FILES" "$TREE_DIRS" "$TREE_KB"
  log "case durable: the tree, $ROUNDS rounds"
  cpu_rounds tree "$SRC" ferry rsync
  make_file "big-$BIG_MB" "$BIG_MB"
  log "case durable: one $BIG_MB MiB file, $ROUNDS rounds"
  cpu_rounds big "$SRC" ferry socat rsync
  blake3_floor "$SRC"
  local v label
  for v in "${DURABLE_VARIANTS[@]}"; do
    label='the default `ferry-server`, `rsync --fsync`, socat then `sync FILE` (fsync)'
    [[ $v == plain ]] && label='`ferry-server --no-fsync`, rsync, socat'
    md '' "## $v: $TREE_FILES files of $TREE_KB KiB in $TREE_DIRS folders" '' "$label;" \
          "median over $ROUNDS round(s); CPU seconds of each process (\`/usr/bin/time -v\`)."
    cpu_table "$v-tree" "$(calc "$TREE_FILES * $TREE_KB / 1024")" ferry rsync
    md '' "## $v: one $BIG_MB MiB file" '' "$label; median over $ROUNDS round(s)."
    cpu_table "$v-big" "$BIG_MB" ferry socat rsync
  done
  cpu_floor_table
}

# blake3_floor FILE: ROUNDS runs of `b3sum --num-threads 1` over FILE (cached by the
# rounds before), their CPU seconds in TIMES[blake3].
blake3_floor() {
  local i
  for ((i = 0; i < ROUNDS; i++)); do
    /usr/bin/time -v -o "$RUN/b3.time" b3sum --num-threads 1 "$1" >/dev/null
    TIMES[blake3]="${TIMES[blake3]:-} $(cpu_of "$RUN/b3.time")"
  done
  log "BLAKE3 of $(basename "$1"), one thread: median $(stat_of 50 blake3) CPU s"
}

# cpu_floor_table: issue 14's CPU target for the big file without fsync: both ferry
# processes against socat's two plus BLAKE3 of the file twice (each end hashes it once).
cpu_floor_table() {
  local socat ferry b3 floor
  is_number "$(result plain-big/ferry)" && is_number "$(result plain-big/socat)" || return 0
  ferry=$(both_cpu plain-big/ferry) socat=$(both_cpu plain-big/socat) b3=$(stat_of 50 blake3)
  floor=$(calc "$socat + 2 * $b3")
  md '' "## plain: the copy-and-hash floor of one $BIG_MB MiB file" '' \
     "CPU seconds (medians): socat's two processes, plus BLAKE3 of the file twice on one thread" \
     '(`b3sum --num-threads 1`, the file cached), against both ferry processes (`--no-fsync`).' '' \
     '| socat both | BLAKE3 once | floor | ferry both | ferry vs floor |' \
     '| ---: | ---: | ---: | ---: | ---: |' \
     "| $socat | $b3 | $floor | $ferry | $(calc "$ferry / $floor")× |"
}

# ----------------------------------------------- wide area: a 20 ms link (14)
# A userspace proxy (ferry-delay-proxy, bench/delay-proxy) between sender and
# receiver delays each direction by WAN_DELAY_MS and paces it at WAN_MBIT;
# ferry, the rsync daemon and scp (to a Debian sshd the bench starts, key-only,
# on 127.0.0.1) send the tree and the big file through it. scp is slow on trees (a round
# trip or more per file), so it runs WAN_SCP_ROUNDS rounds.

WAN_DELAY_MS=${WAN_DELAY_MS:-10}     # one way: 20 ms round trip
WAN_MBIT=${WAN_MBIT:-1000}
WAN_SCP_ROUNDS=${WAN_SCP_ROUNDS:-1}
WAN_SCP_TIMEOUT=${WAN_SCP_TIMEOUT:-1200}  # seconds scp may take (about 0.1 s per file)

# sshd_setup: once per run, a throw-away host key, client key and sshd
# configuration in $RUN/ssh (key login only, 127.0.0.1, the port given with
# -p); installs openssh if missing. Needs root (sshd's privilege separation).
sshd_setup() {
  local d=$RUN/ssh
  [[ -f $d/sshd_config ]] && return 0
  [[ $(id -u) == 0 ]] || { log "sshd needs root"; return 1; }
  if [[ ! -x /usr/sbin/sshd ]] || ! command -v scp >/dev/null; then
    log "installing: openssh-server openssh-client"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
  fi
  mkdir -p "$d" /run/sshd
  chmod 700 "$d"
  ssh-keygen -q -t ed25519 -N '' -f "$d/host" </dev/null || return 1
  ssh-keygen -q -t ed25519 -N '' -f "$d/client" </dev/null || return 1
  cp "$d/client.pub" "$d/authorized_keys"
  printf '%s\n' "ListenAddress 127.0.0.1" "HostKey $d/host" \
    "AuthorizedKeysFile $d/authorized_keys" "PidFile $d/sshd.pid" \
    "PermitRootLogin prohibit-password" "PasswordAuthentication no" \
    "KbdInteractiveAuthentication no" "UsePAM no" "StrictModes no" \
    "Subsystem sftp internal-sftp" >"$d/sshd_config"
}

# scp_cmd PORT SRC DEST [SCP OPTION...]: sets SCP_CMD, scp (SFTP) of SRC into
# DEST/ on the sshd of sshd_setup at 127.0.0.1:PORT, with the client key.
scp_cmd() {
  local port=$1 src=$2 dest=$3; shift 3
  SCP_CMD=(scp -q -r -P "$port" -i "$RUN/ssh/client" -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
    "$@" "$src" "$(id -un)@127.0.0.1:$dest/")
}

# sshd_start PORT: a long-lived sshd on PORT for the wan case's scp.
sshd_start() {
  SSHD_PID='' SSHD_WAIT=''
  sshd_setup || return 1
  SPAWN_LIMIT=$SERVER_TIMEOUT spawn /dev/null "$RUN/sshd.log" /usr/sbin/sshd -D -e -f "$RUN/ssh/sshd_config" -p "$1"
  SSHD_PID=$RX_PID SSHD_WAIT=$RX_WAIT
  wait_listen "$1"
}

# proxy_setup: PROXY, the delay proxy's binary. setup_ferry's workspace build
# makes it with the ferry binaries; with SKIP_BUILD=1 and no such binary it is
# built alone. If that fails, every wan transfer fails at proxy_start.
proxy_setup() {
  PROXY=${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry-delay-proxy
  [[ -x $PROXY ]] && return 0
  log "cargo build --release -p ferry-delay-proxy (log: $BENCH_DIR/build.log)"
  (cd "$ROOT" && timeout 1800 cargo build --release -p ferry-delay-proxy) >>"$BENCH_DIR/build.log" 2>&1 ||
    log "the delay proxy did not build (see $BENCH_DIR/build.log)"
}

# proxy_start PORT TARGET: the delay proxy from PORT to TARGET.
proxy_start() {
  SPAWN_LIMIT=$SERVER_TIMEOUT spawn /dev/null "$RUN/proxy.log" \
    "$PROXY" "$1" "$2" "$WAN_DELAY_MS" "$WAN_MBIT"
  PROXY_PID=$RX_PID PROXY_WAIT=$RX_WAIT
  wait_listen "$1"
}

# wan_once TOOL SRC DEST: one transfer through a fresh proxy; sets ELAPSED.
wan_once() {
  local tool=$1 src=$2 dest=$3 port pport ok=0 t0 rx='' rx_wait=''
  rm -rf "$dest"
  mkdir -p "$dest"
  pport=$(free_port)
  if [[ $tool == scp ]]; then
    port=$SSH_PORT
  else
    port=$(free_port)
    rx_start "$tool" "$dest" "$port" "$(basename "$src")"
    rx=$RX_PID rx_wait=$RX_WAIT
    wait_listen "$port" || { log "$tool: receiver did not start"; stop_rx; return 1; }
  fi
  if ! proxy_start "$pport" "$port"; then
    log "the delay proxy did not start (see $RUN/proxy.log)"
    stop_rx
    [[ -z $rx ]] || RX_PID=$rx RX_WAIT=$rx_wait stop_rx
    return 1
  fi
  local -a t=(timeout -k 5 "$RUN_TIMEOUT")
  [[ $tool == scp ]] && t=(timeout -k 5 "$WAN_SCP_TIMEOUT")
  CPU_USED=''   # the machine's CPU would count the proxy's too
  t0=$EPOCHREALTIME
  case $tool in
    ferry) "${t[@]}" "$FERRY" send "127.0.0.1:$pport" "$src" --quiet </dev/null ;;
    rsync) local -a r=(-W); [[ -d $src ]] && r+=(-r)
           "${t[@]}" rsync "${r[@]}" "$src" "rsync://127.0.0.1:$pport/mod/" </dev/null ;;
    scp)   scp_cmd "$pport" "$src" "$dest"
           "${t[@]}" "${SCP_CMD[@]}" </dev/null ;;
  esac >"$RUN/$tool-tx.log" 2>&1 && ok=1
  ELAPSED=$(elapsed "$t0" "$EPOCHREALTIME")
  stop_rx
  [[ -z $rx ]] || RX_PID=$rx RX_WAIT=$rx_wait stop_rx
  ((ok)) || { log "$tool: transfer through the proxy failed"; tail -n 5 "$RUN/$tool-tx.log" || true; }
  ((ok))
}

case_wan() {
  proxy_setup
  SSH_PORT=$(free_port)
  if ! sshd_start "$SSH_PORT"; then
    log "sshd did not start (see $RUN/sshd.log); scp is skipped"
    FAILED[wan-tree/scp]=1 FAILED[wan-big/scp]=1
  fi
  local link="$WAN_MBIT Mbit/s, $((2 * WAN_DELAY_MS)) ms round trip"
  make_tree "tree-$TREE_FILES" "$TREE_FILES" "$TREE_DIRS" "$TREE_KB"
  log "case wan: the tree through $link, $ROUNDS rounds"
  TRANSFER=wan_once SCP_ROUNDS=$WAN_SCP_ROUNDS KEEP_OUTPUTS=1 \
    run_rounds wan-tree "$SRC" ferry rsync scp
  make_file "big-$BIG_MB" "$BIG_MB"
  log "case wan: one $BIG_MB MiB file through $link, $ROUNDS rounds"
  TRANSFER=wan_once SCP_ROUNDS=$WAN_SCP_ROUNDS run_rounds wan-big "$SRC" ferry rsync scp
  [[ -z $SSHD_WAIT ]] || RX_PID=$SSHD_PID RX_WAIT=$SSHD_WAIT stop_rx
  md '' "## Wide area: $link (ferry-delay-proxy)" '' \
        "Sender to receiver through a userspace proxy that delays each direction" \
        "and paces it; \`ferry-server ${SERVER_FLAGS[*]}\`, the rsync daemon, scp (SFTP)" \
        "to a Debian sshd; median over $ROUNDS round(s), scp over $WAN_SCP_ROUNDS." \
        "The link carries at most $(calc "$WAN_MBIT * 1000000 / 8 / 1048576") MiB/s."
  md '' "### $TREE_FILES files of $TREE_KB KiB in $TREE_DIRS folders"
  rounds_table wan-tree "$(calc "$TREE_FILES * $TREE_KB / 1024")" ferry rsync scp
  md '' "### One $BIG_MB MiB file"
  rounds_table wan-big "$BIG_MB" ferry rsync scp
}

# ------------------------------------------- encrypted: ferry TLS and scp (18)
# One BIG_MB file with ferry TLS (`--tls-self-signed`, `--known-hosts`), ferry
# plain and scp (AES-GCM, ChaCha20) to a one-shot `sshd -d` (sshd_setup's keys
# and configuration), all without fsync (the plain variant), alternating; CPU
# seconds per process as in the durable case (cpu_rounds), and the targets of
# issue 18.

TLS_TOOLS=(ferry-tls ferry scp-aes scp-chacha)

# aead_cost: AEAD_SEAL and AEAD_OPEN, the CPU seconds ring's AES-128-GCM
# takes to seal and to open BIG_MB MiB on one core (crates/secure/examples).
aead_cost() {
  local out
  AEAD_SEAL='' AEAD_OPEN=''
  if (cd "$ROOT" && cargo build --release -q -p ferry-secure --example aead_speed) >>"$BENCH_DIR/build.log" 2>&1 &&
    out=$("${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/aead_speed" "$BIG_MB"); then
    log "$out"
    AEAD_SEAL=$(awk '{ for (i = 1; i < NF; i++) if ($i == "seal") print $(i + 1) }' <<<"$out")
    AEAD_OPEN=$(awk '{ for (i = 1; i < NF; i++) if ($i == "open") print $(i + 1) }' <<<"$out")
  fi
}

# yes_no EXPR: "yes" if the awk expression holds, else "no".
yes_no() { awk "BEGIN { print ($1) ? \"yes\" : \"no\" }"; }

# tls_verdict: the targets of issue 18, from the medians of the tls case.
tls_verdict() {
  local t p s r
  t=$(result plain-tls/ferry-tls) p=$(result plain-tls/ferry) s=$(result plain-tls/scp-aes)
  md '' '| target | measured | met |' '| --- | ---: | :---: |'
  if is_number "$t" && is_number "$p"; then
    r=$(calc "$t / $p")
    md "| TLS time ≤ 1.25 × plain | ${r}× | $(yes_no "$r <= 1.25") |"
  fi
  if is_number "$t" && is_number "$s"; then
    r=$(calc "$s / $t")
    md "| TLS ≥ 3 × faster than scp (AES-GCM) | ${r}× | $(yes_no "$r >= 3") |"
  fi
  if is_number "$t" && is_number "$p" && [[ -n $AEAD_SEAL ]]; then
    local extra budget
    extra=$(calc "$(both_cpu plain-tls/ferry-tls) - $(both_cpu plain-tls/ferry)")
    budget=$(calc "$AEAD_SEAL + $AEAD_OPEN")
    md "| TLS CPU − plain CPU (both processes) ≤ AES-GCM alone, seal $AEAD_SEAL s + open $AEAD_OPEN s | $extra s vs $budget s | $(yes_no "$extra <= $budget") |"
  fi
}

case_tls() {
  make_file "big-$BIG_MB" "$BIG_MB"
  local tools=("${TLS_TOOLS[@]}")
  if ! sshd_setup; then
    log "tls: no sshd for scp (see above); measuring ferry only"
    tools=(ferry-tls ferry)
  fi
  aead_cost
  log "case tls: one $BIG_MB MiB file, $ROUNDS rounds"
  local -a CPU_VARIANTS=(plain)   # seen by cpu_rounds (dynamic scope)
  cpu_rounds tls "$SRC" "${tools[@]}"
  md '' "## One ${BIG_MB} MiB file encrypted: ferry TLS, ferry plain, scp (warm cache)"
  md '' "ferry TLS: \`--tls-self-signed\` and \`--known-hosts\` (TLS 1.3, AES-128-GCM);" \
        "ferry: plain TCP; both \`--no-fsync\`. scp: to a one-shot \`sshd -d\`," \
        "\`-c aes128-gcm@openssh.com\` (scp-aes) or \`-c chacha20-poly1305@openssh.com\`" \
        "(scp-chacha). Wall clock as in the big case; CPU seconds (user + system) of the" \
        "sending and the receiving process trees from \`/usr/bin/time -v\`; medians over" \
        "$ROUNDS round(s), tools alternating."
  cpu_table plain-tls "$BIG_MB" "${tools[@]}"
  tls_verdict
}

# ------------------------------------------------------------------- main

main() {
  mkdir -p "$BENCH_DIR" "$DATA"
  RUN=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
  REPORT=$RUN/report.md
  : >"$REPORT"
  ensure_peers
  setup_ferry
  if [[ $FERRY_OK == 1 ]]; then
    log "ferry: $FERRY"
  else
    log "ferry: not available ($FERRY_WHY)"
  fi

  local commit cpu
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (uncommitted changes)"
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  md "# ferry benchmarks" ''
  md "| | |" "| --- | --- |"
  md "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |" "| nproc | $(nproc) |" \
     "| CPU | ${cpu:-unknown} |" "| kernel | $(uname -sr) |" \
     "| ferry | $([[ $FERRY_OK == 1 ]] && echo "commit $commit" || echo "not available ($FERRY_WHY)") |" \
     "| rounds | $ROUNDS |" \
     "| peers | $(socat -V | awk '/socat version/ { print "socat", $3; exit }'), $(dpkg-query -W -f='netcat-openbsd ${Version}' netcat-openbsd 2>/dev/null), $(rsync --version | awk 'NR == 1 { print "rsync", $3 }'), $(python3 -V) |"

  # The tree first: deleting the big case's files leaves ext4 busy for a while, which
  # slows file creation (both tools alike) by up to 5x.
  want tree && case_tree
  want big && case_big
  want many && case_many
  want durable && case_durable
  want wan && case_wan
  want tls && case_tls
  want latency && case_latency
  [[ $FERRY_OK == 1 ]] || md '' 'ferry: not available'
  cat "$REPORT" >&3
  log "done"
}

main
