#!/usr/bin/env bash
# Instructions the server and the agent execute per echoed keystroke, counted by callgrind:
# a figure that the noise of a shared machine does not move (wall-clock figures move by 30 %),
# so two builds or two versions of a hot path can be compared in one run each.
#
#   scripts/instructions-per-key.sh [--cluster | --mib] [CMDOP_BINARY]   (default: the bench's own build)
#
# With --cluster it runs the cluster bench's echo instead (benches/cluster.rs, needs the
# PostgreSQL server binaries): the key goes in through node B, which forwards it to node A,
# which holds the agent; it prints node A's (the holder's), node B's (the edge's) and the
# agent's instructions per key.
#
# With --mib it runs the e2e bench's throughput phase instead (`head -c N /dev/zero | base64 |
# cat` through a link) in its quick form (16 MiB, one round) and its full form (64 MiB, three
# rounds), and prints the server's and the agent's instructions per MiB of output relayed:
# the difference of the two runs over the difference of the bytes the link delivered.
#
# Runs the e2e bench's echo phase twice (500 and 2,500 keys) with the server and the agent
# under `valgrind --tool=callgrind`, and prints the difference in instructions per key typed
# for each: start-up and set-up cancel out. Needs valgrind; takes about a minute and a half, plus
# building the bench (with the `dist` settings: several minutes after a change).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=e2e
case "${1:-}" in
  --cluster) mode=cluster; shift ;;
  --mib) mode=mib; shift ;;
esac
bench_name=$mode
[ "$mode" = mib ] && bench_name=e2e
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
# CMDOP_BENCH_EXE: an already built bench executable (skips the build).
bench=${CMDOP_BENCH_EXE:-$(cargo bench --locked --no-run --bench "$bench_name" --message-format=json 2>/dev/null \
  | sed -n "s/.*\"executable\":\"\([^\"]*$bench_name-[^\"]*\)\".*/\1/p" | tail -1)}
[ -x "$bench" ] || { echo "cannot build the e2e bench" >&2; exit 1; }
binary=$(realpath "${1:-$target/release/cmdop}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The bench starts `cmdop server` and `cmdop agent` through this wrapper. valgrind runs
# detached (not the wrapper's child), so that the bench's kill of the wrapper at the end of
# the phase leaves it alive to write its counts when asked.
cat > "$work/wrap" <<EOF
#!/usr/bin/env bash
case "\$1 \${2:-}" in
  "server local-login"|"server cluster-key") ;;
  server*|agent*)
    ( setsid valgrind --tool=callgrind --callgrind-out-file=$work/out/\$1.%p "$binary" "\$@" \\
        </dev/null & echo \$! > $work/out/pid.\$\$ )
    pid=\$(cat $work/out/pid.\$\$)
    for _ in \$(seq 1 7200); do kill -0 "\$pid" 2>/dev/null || exit 0; sleep 0.5; done
    exit 1 ;;
esac
exec "$binary" "\$@"
EOF
chmod +x "$work/wrap"

# The total instructions in one callgrind output file (0 for an empty one).
count() {
  local n=""
  [ -s "$1" ] && n=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$1" | head -1)
  echo "${n:-0}"
}

# Total instructions of each role over one run: of N keys, or (--mib) of the quick or full
# throughput phase, then a `bytes` line with the bytes the link delivered.
run() {
  rm -rf "$work/out" && mkdir -p "$work/out"
  if [ "$mode" = mib ]; then
    local size=()
    [ "$1" = quick ] && size=(--quick)
    CMDOP_BENCH_BIN="$work/wrap" CMDOP_BENCH_ONLY=throughput CMDOP_BENCH_OUT="$work/bench.json" \
      timeout 3600 "$bench" "${size[@]}" >/dev/null 2>"$work/bench.log" </dev/null || { cat "$work/bench.log" >&2; exit 1; }
    echo "bytes $(python3 -c 'import json,sys; print(sum(r["bytes"] for r in json.load(open(sys.argv[1]))["throughput"]["link_runs"]))' "$work/bench.json")"
  else
    CMDOP_BENCH_BIN="$work/wrap" CMDOP_BENCH_ONLY=echo CMDOP_BENCH_PARTS=echo CMDOP_BENCH_KEYS="$1" CMDOP_BENCH_ECHO=other \
      timeout 900 "$bench" --quick >/dev/null 2>"$work/bench.log" </dev/null || { cat "$work/bench.log" >&2; exit 1; }
  fi
  local pids
  pids=$(cat "$work"/out/pid.* | sort -u)
  for p in $pids; do callgrind_control --dump "$p" >/dev/null 2>&1 || true; done
  sleep 2
  local f n
  if [ "$mode" = cluster ]; then
    # Node A started first (lower pid): the holder; node B is the edge.
    # A process's counts may be split over several files (server.PID, server.PID.N: dumps).
    local i=0 names=(holder edge) pid sum
    for pid in $(ls "$work"/out/server.* | sed 's/.*server\.\([0-9]*\).*/\1/' | sort -un); do
      sum=0
      for f in "$work"/out/server."$pid" "$work"/out/server."$pid".*; do
        [ -e "$f" ] && sum=$((sum + $(count "$f")))
      done
      # Short commands (`server local-login`, `server cluster-key`) are not nodes. An edge
      # node's 500-key run counts about 19 M since its peer streams left tonic: the bound sits
      # below that.
      [ "$sum" -lt 5000000 ] && continue
      echo "${names[$i]:-server$i} $sum"
      i=$((i + 1))
    done
  else
    local sum=0
    for f in "$work"/out/server.*; do sum=$((sum + $(count "$f"))); done
    echo "server $sum"
  fi
  local sum=0
  for f in "$work"/out/agent.*; do sum=$((sum + $(count "$f"))); done
  echo "agent $sum"
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  sleep 1
}

# Keys the link's echo program gets for N timed keys: 50 warm-up keys, and 5 untimed keys
# opening every turn of 100 (benches/e2e.rs, ECHO_BLOCK and TURN_WARMUP).
typed() { echo $(( $1 + 50 + ($1 + 99) / 100 * 5 )); }

declare -A total
if [ "$mode" = mib ]; then
  for size in quick full; do
    while read -r role sum; do total[$role.$size]=$sum; echo "$size: $role $sum" >&2; done < <(run "$size")
  done
  bytes=$(( ${total[bytes.full]} - ${total[bytes.quick]} ))
  echo "binary: $binary"
  for role in server agent; do
    echo "$role: $(( (${total[$role.full]} - ${total[$role.quick]}) * 1048576 / bytes )) instructions per MiB of output"
  done
  exit 0
fi
for keys in 500 2500; do
  while read -r role sum; do total[$role.$keys]=$sum; echo "$keys keys: $role $sum" >&2; done < <(run "$keys")
done
keys=$(( $(typed 2500) - $(typed 500) ))
echo "binary: $binary"
roles="server agent"
[ "$mode" = cluster ] && roles="holder edge agent"
for role in $roles; do
  echo "$role: $(( (${total[$role.2500]} - ${total[$role.500]}) / keys )) instructions per key"
done
