#!/usr/bin/env bash
# A throw-away single-node Ceph cluster with an S3 gateway, for tests and measurements.
#
#   scripts/rgw.sh            start it; prints KEY=VALUE lines, then READY
#   scripts/rgw.sh --check    whether the Debian packages it needs are installed (exit 0/1)
#
# One ceph-mon, one ceph-osd (BlueStore on a sparse file, or memstore) and one radosgw (beast frontend), all
# on 127.0.0.1 with ports the OS picked, in a fresh temp folder with their own ceph.conf,
# keyring and fsid: nothing in /etc/ceph or /var/lib/ceph is read or written, no systemd. No
# ceph-mgr: pools, objects and the gateway work without one (the health says HEALTH_WARN).
#
# Output on stdout, one per line, then READY:
#   ENDPOINT=http://127.0.0.1:PORT  AWS_ACCESS_KEY_ID=…  AWS_SECRET_ACCESS_KEY=…
#   AWS_REGION=…  DIR=… (the cluster's folder; its logs are in DIR/log)
# Progress and errors go to stderr.
#
# Lifetime: after READY the script waits until its stdin closes (the process that started it
# exited, even by a crash) or it gets SIGTERM/SIGINT/SIGHUP; then it stops its daemons by PID
# and removes its folder. Every daemon also runs under `timeout`, so none outlives
# RGW_LIFETIME seconds (default 1800) even if this script is killed with SIGKILL. To keep it
# up from a shell: `scripts/rgw.sh < <(sleep 600)` or just leave it in the foreground (Ctrl-D
# or Ctrl-C stops it).
#
# Needs: ceph-mon ceph-osd radosgw (Debian: apt-get install -y ceph-mon ceph-osd radosgw),
# python3 (free ports) and curl (readiness probe).
set -euo pipefail

lifetime=${RGW_LIFETIME:-1800}
# The OSD's store: bluestore (on a sparse file in the folder) or memstore (in memory, up to
# 8 GiB). When bluestore cannot be made (a folder on tmpfs without O_DIRECT, say), memstore
# is used instead.
objectstore=${RGW_OBJECTSTORE:-bluestore}
# The S3 user every client of this cluster uses; fixed region name (RGW accepts any in the
# signature's scope, tools want one).
region=us-east-1
tools=(ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool python3 curl)

missing=()
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [[ ${1:-} == --check ]]; then
  if ((${#missing[@]})); then
    echo "not installed: ${missing[*]} (apt-get install -y ceph-mon ceph-osd radosgw python3 curl)"
    exit 1
  fi
  echo "installed: $(ceph --version)"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi
if ((${#missing[@]})); then
  echo "rgw.sh: not installed: ${missing[*]}" >&2
  exit 1
fi

say() { echo "rgw.sh: $*" >&2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-rgw.XXXXXX")
pids=()

# Kills every daemon by PID (a throw-away cluster needs no clean shutdown), reaps their
# `timeout` wrappers and removes the folder.
cleanup() {
  trap - EXIT INT TERM HUP
  local p
  for p in "$dir"/run/*.pid; do
    [[ -e $p ]] && kill -KILL "$(<"$p")" 2>/dev/null
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# Prints the tail of every daemon log and fails.
die() {
  say "$*"
  for f in "$dir"/log/*.log; do
    [[ -e $f ]] || continue
    echo "----- $f" >&2
    tail -n 20 "$f" >&2
  done
  exit 1
}

# A TCP port on 127.0.0.1 that nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a daemon in the foreground of a background job, killed by `timeout` at the end of the
# lifetime; the daemon's own PID (kept by exec) goes to run/NAME.pid for the cleanup.
daemon() {
  local name=$1
  shift
  timeout --kill-after=10 "$lifetime" \
    bash -c 'echo $$ >"$0"; exec "$@"' "$dir/run/$name.pid" "$@" >>"$dir/log/daemons.out" 2>&1 &
  pids+=($!)
}

# Waits up to $1 seconds for the command after it to succeed.
wait_until() {
  local limit=$1 deadline
  shift
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "a daemon exited (pid $p)"; done
    sleep 0.2
  done
}

started=$SECONDS
fsid=$(python3 -c "import uuid; print(uuid.uuid4())")
mon_port=$(free_port)
rgw_port=$(free_port)
mkdir -p "$dir"/{log,run,mon,osd/ceph-0}
conf=$dir/ceph.conf
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file =
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon data avail warn = 2
mon data avail crit = 1
osd crush chooseleaf type = 0

[mon]
mon data = $dir/mon/\$cluster-\$id
mon cluster log file = $dir/log/cluster.log

[osd]
osd data = $dir/osd/\$cluster-\$id
osd objectstore = $objectstore
memstore device bytes = 8589934592
bluestore block create = true
bluestore block size = 21474836480
bluestore fsck on mount = false
osd memory target = 1073741824
osd op num shards = 1
osd op num threads per shard = 2

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw thread pool size = 64
EOF

# One keyring for all: the monitors' key, the admin, the OSD and the gateway.
keyring=$dir/keyring
ceph-authtool --create-keyring "$keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$keyring" --gen-key -n osd.0 \
  --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
ceph-authtool "$keyring" --gen-key -n client.rgw.a \
  --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null

monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
timeout 120 ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$keyring" 2>>"$dir/log/mkfs.log" ||
  die "ceph-mon --mkfs failed"
say "mon on 127.0.0.1:$mon_port"
daemon mon ceph-mon -c "$conf" -f -i a
ceph=(ceph -c "$conf" --connect-timeout 10)
wait_until 60 timeout 20 "${ceph[@]}" mon stat || die "the monitor does not answer"

osd_uuid=$(python3 -c "import uuid; print(uuid.uuid4())")
osd_id=$(timeout 60 "${ceph[@]}" osd new "$osd_uuid")
[[ $osd_id == 0 ]] || die "expected OSD id 0, got $osd_id"
osd_mkfs() {
  timeout 120 ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$dir/log/mkfs.log" >/dev/null
}
if ! osd_mkfs; then
  [[ $objectstore == bluestore ]] || die "ceph-osd --mkfs failed"
  say "bluestore cannot be made in $dir (see $dir/log/mkfs.log); the OSD keeps its data in memory"
  sed -i 's/^osd objectstore = bluestore$/osd objectstore = memstore/' "$conf"
  rm -rf "$dir/osd/ceph-0" && mkdir "$dir/osd/ceph-0"
  osd_mkfs || die "ceph-osd --mkfs failed"
fi
daemon osd ceph-osd -c "$conf" -f -i 0
osd_up() { timeout 20 "${ceph[@]}" osd dump | grep -q '^osd.0 up '; }
wait_until 60 osd_up || die "the OSD does not come up"
say "osd up"

daemon rgw radosgw -c "$conf" -f -n client.rgw.a
endpoint=http://127.0.0.1:$rgw_port
wait_until 120 curl -sf -m 5 -o /dev/null "$endpoint" || die "the gateway does not answer on $endpoint"

access=$(python3 -c 'import secrets; print("FERRY" + secrets.token_hex(8).upper())')
secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')
timeout 120 radosgw-admin -c "$conf" -n client.admin user create --uid=ferry --display-name=ferry \
  --access-key="$access" --secret-key="$secret" >/dev/null 2>>"$dir/log/admin.log" ||
  die "radosgw-admin user create failed"
say "ready in $((SECONDS - started)) s"

echo "ENDPOINT=$endpoint"
echo "AWS_ACCESS_KEY_ID=$access"
echo "AWS_SECRET_ACCESS_KEY=$secret"
echo "AWS_REGION=$region"
echo "DIR=$dir"
echo READY

# Until stdin closes (lines are ignored), a signal arrives or the lifetime is over.
deadline=$((SECONDS + lifetime))
while ((SECONDS < deadline)) && read -r -t "$((deadline - SECONDS))" _; do :; done
