#!/usr/bin/env bash
# bench.sh: the service under wrk, in every mode, for each backend and connection count.
#
#   ./bench.sh                              # the full run: 2 backends x 3 conns x 5 rounds x 3 modes x ~13 s, ~20 min
#   R=1 D=3s CONNS="16 256" ./bench.sh      # a smoke run, about a minute
#
# Settings, from the environment or the flags:
#   R        rounds (-r)                                      5
#   D        wrk's duration a run (-d)                         10s
#   CONNS    connection counts (-c)                            "16 256 1024"
#   BACKENDS backends (-b)                                     "net sqlite"
#   MODES    modes, run interleaved, the order rotated each round  "goroutine semaphore iocp"
#   WARMUP   a wrk run before the measured one                 2s
#   THREADS  wrk's threads                                     2
#   PORT     the server's port on 127.0.0.1                    18473
#   URLPATH  what wrk asks for                                 /item?id=4242
#   FLAGS    more flags for the server, e.g. "-work 5000 -delay 2ms"
#
# Each run starts a fresh server process, warms it up, runs
# `wrk -t$THREADS -c$C -d$D --latency`, and records requests/s, p50 and p99
# (wrk's latency distribution), CPU a request (the server's utime+stime from
# /proc/PID/stat over the measured run, divided by its requests) and peak
# RSS (VmHWM). It prints every run as it ends, then the medians per
# backend, connections and mode, with iocp's ratios to goroutine and to the
# better of goroutine and semaphore. wrk shares the machine with the server:
# on a small machine it takes a good part of the CPU.
set -euo pipefail
cd "$(dirname "$0")"

cmdline=""
for v in R D CONNS BACKENDS MODES WARMUP THREADS PORT URLPATH FLAGS; do
	if [ -n "${!v+x}" ]; then cmdline+="$v=$(printf '%q' "${!v}") "; fi
done
cmdline+="$0"
for a in "$@"; do cmdline+=" $(printf '%q' "$a")"; done
echo "command: $cmdline"

R=${R:-5}
D=${D:-10s}
CONNS=${CONNS:-16 256 1024}
BACKENDS=${BACKENDS:-net sqlite}
MODES=${MODES:-goroutine semaphore iocp}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
PORT=${PORT:-18473}
URLPATH=${URLPATH:-/item?id=4242}
FLAGS=${FLAGS:-}
while getopts "r:d:c:b:" opt; do
	case $opt in
	r) R=$OPTARG ;;
	d) D=$OPTARG ;;
	c) CONNS=$OPTARG ;;
	b) BACKENDS=$OPTARG ;;
	*) echo "usage: $0 [-r rounds] [-d duration] [-c 'conns...'] [-b 'backends...']" >&2; exit 2 ;;
	esac
done

# wrk, from Debian's packages if it is missing.
if ! command -v wrk >/dev/null; then
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
	$sudo apt-get install -y wrk >/dev/null 2>&1 || { $sudo apt-get update >/dev/null && $sudo apt-get install -y wrk >/dev/null; }
fi

# Descriptors for 1024 connections on each side, and the backend's.
hard=$(ulimit -Hn)
want=65536
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want"
maxc=0
for c in $CONNS; do if [ "$c" -gt "$maxc" ]; then maxc=$c; fi; done
if [ $((3 * maxc + 256)) -gt "$(ulimit -n)" ]; then
	echo "bench.sh: ulimit -n is $(ulimit -n), too few for $maxc connections" >&2
	exit 1
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
	if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "date: $(date -u '+%Y-%m-%d %H:%M:%S') UTC; $(uname -srm); $(nproc) CPUs; $(go version | cut -d' ' -f3); $(wrk -v 2>&1 | head -1 || true)"
echo "settings: R=$R D=$D CONNS=\"$CONNS\" BACKENDS=\"$BACKENDS\" MODES=\"$MODES\" WARMUP=$WARMUP THREADS=$THREADS URLPATH=$URLPATH FLAGS=\"$FLAGS\" ulimit -n $(ulimit -n)"
go build -o "$tmp/service" .
bin=$tmp/service
url="http://127.0.0.1:$PORT$URLPATH"
clk=$(getconf CLK_TCK)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# cpu_ticks PID: the process's utime+stime, in clock ticks (fields 14 and
# 15 of /proc/PID/stat, counted after the command's name, which may hold
# spaces).
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

results=$tmp/results.tsv
: >"$results"
read -r -a modes <<<"$MODES"
nm=${#modes[@]}
printf '%-7s %5s %-9s %5s %9s %8s %8s %10s %7s %6s\n' backend conns mode round "req/s" "p50 ms" "p99 ms" "cpu us/req" "rss MB" errors

# run BACKEND CONNS MODE ROUND: one measured run, a line of $results.
run() {
	local b=$1 c=$2 m=$3 round=$4 log=$tmp/server.log
	if port_open; then echo "bench.sh: 127.0.0.1:$PORT is taken: set PORT" >&2; exit 1; fi
	# shellcheck disable=SC2086
	"$bin" -addr "127.0.0.1:$PORT" -mode "$m" -backend "$b" $FLAGS >"$log" 2>&1 &
	pid=$!
	local i
	for ((i = 0; i < 400; i++)); do
		if port_open; then break; fi
		if ! kill -0 "$pid" 2>/dev/null; then break; fi
		sleep 0.05
	done
	if ! port_open; then
		echo "bench.sh: the server ($m, $b) did not start:" >&2; cat "$log" >&2; exit 1
	fi
	wrk -t"$THREADS" -c"$c" -d"$WARMUP" "$url" >/dev/null
	local before after hwm
	before=$(cpu_ticks "$pid")
	wrk -t"$THREADS" -c"$c" -d"$D" --latency "$url" >"$tmp/wrk.out"
	after=$(cpu_ticks "$pid")
	hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
	kill -TERM "$pid"
	if ! wait "$pid"; then echo "bench.sh: the server ($m, $b) did not exit cleanly:" >&2; cat "$log" >&2; fi
	pid=""
	awk -v b="$b" -v c="$c" -v m="$m" -v round="$round" -v ticks=$((after - before)) -v clk="$clk" -v hwm="$hwm" '
		# ms: a wrk duration ("812.00us", "1.23ms", "2.01s", "1.02m") in milliseconds.
		function ms(v) {
			if (v ~ /us$/) return v / 1000
			if (v ~ /ms$/) return v + 0
			if (v ~ /m$/) return v * 60000
			return v * 1000
		}
		$1 == "50%" { p50 = ms($2) }
		$1 == "99%" { p99 = ms($2) }
		/ requests in / { req = $1 }
		$1 == "Requests/sec:" { rps = $2 }
		/Socket errors:/ { gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) errs += $i }
		/Non-2xx or 3xx responses:/ { errs += $NF }
		END {
			if (req <= 0) { print "bench.sh: no requests in wrk output" > "/dev/stderr"; exit 1 }
			printf "%s\t%d\t%s\t%d\t%.0f\t%.3f\t%.3f\t%.1f\t%.1f\t%d\n", b, c, m, round, rps, p50, p99, ticks / clk * 1e6 / req, hwm / 1024, errs
		}' "$tmp/wrk.out" >>"$results"
	tail -n 1 "$results" | awk -F '\t' '{ printf "%-7s %5s %-9s %5s %9s %8s %8s %10s %7s %6s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }'
}

for b in $BACKENDS; do
	for c in $CONNS; do
		for ((r = 0; r < R; r++)); do
			for ((i = 0; i < nm; i++)); do
				run "$b" "$c" "${modes[$(((i + r) % nm))]}" $((r + 1))
			done
		done
	done
done

echo
echo "medians of $R round(s) per backend, conns and mode (errors: the sum); ratios of the medians:"
echo "iocp/best is to the better of goroutine and semaphore: the higher req/s, the lower of the rest."
awk -F '\t' -v backends="$BACKENDS" -v conns="$CONNS" -v modes="$MODES" '
	function median(key, m,    n, i, j, v, a) {
		n = cnt[key]
		for (i = 1; i <= n; i++) {
			v = val[key, m, i]
			for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
			a[j + 1] = v
		}
		if (n % 2) return a[(n + 1) / 2]
		return (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function ratio(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "-" }
	{
		key = $1 SUBSEP $2 SUBSEP $3
		n = ++cnt[key]
		for (m = 5; m <= 9; m++) val[key, m, n] = $m
		errs[key] += $10
	}
	END {
		nb = split(backends, B, " "); nc = split(conns, C, " "); nm = split(modes, M, " ")
		printf "%-7s %5s %-15s %9s %8s %8s %10s %7s %6s\n", "backend", "conns", "mode", "req/s", "p50 ms", "p99 ms", "cpu us/req", "rss MB", "errors"
		for (bi = 1; bi <= nb; bi++) for (ci = 1; ci <= nc; ci++) {
			delete med
			for (mi = 1; mi <= nm; mi++) {
				key = B[bi] SUBSEP C[ci] SUBSEP M[mi]
				if (!(key in cnt)) continue
				for (m = 5; m <= 9; m++) med[M[mi], m] = median(key, m)
				printf "%-7s %5s %-15s %9.0f %8.3f %8.3f %10.1f %7.1f %6d\n", B[bi], C[ci], M[mi], med[M[mi], 5], med[M[mi], 6], med[M[mi], 7], med[M[mi], 8], med[M[mi], 9], errs[key]
			}
			if (!(("iocp", 5) in med) || !(("goroutine", 5) in med)) continue
			printf "%-7s %5s %-15s %9s %8s %8s %10s %7s\n", B[bi], C[ci], "iocp/goroutine", ratio(med["iocp", 5], med["goroutine", 5]), ratio(med["iocp", 6], med["goroutine", 6]), ratio(med["iocp", 7], med["goroutine", 7]), ratio(med["iocp", 8], med["goroutine", 8]), ratio(med["iocp", 9], med["goroutine", 9])
			if (!(("semaphore", 5) in med)) continue
			for (m = 5; m <= 9; m++) {
				g = med["goroutine", m]; s = med["semaphore", m]
				best[m] = (m == 5) ? (g > s ? g : s) : (g < s ? g : s)
			}
			printf "%-7s %5s %-15s %9s %8s %8s %10s %7s\n", B[bi], C[ci], "iocp/best", ratio(med["iocp", 5], best[5]), ratio(med["iocp", 6], best[6]), ratio(med["iocp", 7], best[7]), ratio(med["iocp", 8], best[8]), ratio(med["iocp", 9], best[9])
		}
	}' "$results"
