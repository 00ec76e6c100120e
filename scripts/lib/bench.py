#!/usr/bin/env python3
"""Run competing commands side by side, in alternating rounds, and print
median wall time, peak RSS and the ratio against a baseline.

    bench.py --rounds 5 --title "scan, 2 GiB random" \
        --case "diskferry" "diskferry-agent scan x.img" \
        --case "b3sum" "b3sum x.img" --baseline b3sum \
        [--prep "diskferry" "rm -f out.vhd"]

Each case runs once per round, in turn, so drift in the machine's load hits
all of them alike. A prep command runs before its case each round and is not
timed. Exit status is non-zero if any run fails. Results are also appended as
JSON lines to $BENCH_JSON when it is set.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


def run(cmd, stdout=subprocess.DEVNULL):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=True, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"command failed ({code}): {cmd}\n{err}")
    # ru_maxrss is in KiB on Linux. With shell=True it is the largest
    # process in the tree that exited, which is the tool itself. CPU time is
    # the whole tree's (user + system).
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def cpu_seconds(pid):
    """User + system CPU seconds of `pid` so far (0 when not watching)."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def cpu_floor(*cpu):
    """Processes sharing this machine's cores: the sum of their CPU seconds
    over the cores is a wall time no schedule beats."""
    return max(sum(cpu), 1e-3) / cores()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--title", default="")
    ap.add_argument("--case", nargs=2, action="append", metavar=("NAME", "CMD"), required=True)
    ap.add_argument("--prep", nargs=2, action="append", metavar=("NAME", "CMD"), default=[])
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--bytes", type=int, default=0, help="bytes processed, for a throughput column")
    ap.add_argument("--watch-pid-file", default="", help="also report CPU seconds the process whose pid is in "
                    "this file (a server, read before each run) used")
    a = ap.parse_args()
    preps = dict(a.prep)
    names = [n for n, _ in a.case]
    if a.baseline not in names:
        sys.exit(f"baseline {a.baseline} is not a case")
    times = {n: [] for n in names}
    rss = {n: 0 for n in names}
    cpu_own = {n: [] for n in names}
    server = {n: [] for n in names}
    for _ in range(a.rounds):
        for name, cmd in a.case:
            if name in preps:
                subprocess.run(preps[name], shell=True, check=True, stdout=subprocess.DEVNULL)
            pid = int(open(a.watch_pid_file).read().strip()) if a.watch_pid_file else 0
            before = cpu_seconds(pid)
            wall, peak, used = run(cmd)
            cpu_own[name].append(used)
            server[name].append(cpu_seconds(pid) - before)
            times[name].append(wall)
            rss[name] = max(rss[name], peak)
    base = statistics.median(times[a.baseline])
    print(f"\n## {a.title} ({a.rounds} rounds, median)")
    extra = f" {'server CPU':>11}" if a.watch_pid_file else ""
    print(f"{'tool':<28} {'time':>9} {'min':>9} {'CPU':>8} {'peak RSS':>10} {'throughput':>12} {'vs ' + a.baseline:>14}{extra}")
    for name in names:
        med = statistics.median(times[name])
        tput = f"{a.bytes / med / 1e9:.2f} GB/s" if a.bytes else "-"
        speed = base / med
        cpu = f" {statistics.median(server[name]):>10.2f}s" if a.watch_pid_file else ""
        own = statistics.median(cpu_own[name])
        print(f"{name:<28} {med:>8.3f}s {min(times[name]):>8.3f}s {own:>7.2f}s {rss[name] / 2**20:>7.0f} MiB {tput:>12} {speed:>12.2f}x{cpu}")
        if a.watch_pid_file:
            floor = cpu_floor(own, statistics.median(server[name]))
            print(f"{'':<28} CPU floor on {cores()} cores {floor:.3f}s: at best {base / floor:.2f}x {a.baseline}")
        if os.environ.get("BENCH_JSON"):
            with open(os.environ["BENCH_JSON"], "a") as f:
                f.write(json.dumps({"title": a.title, "tool": name, "median_s": med, "min_s": min(times[name]),
                                    "peak_rss": rss[name], "speedup_vs_baseline": speed, "runs": times[name],
                                    "cpu_s": own}) + "\n")


if __name__ == "__main__":
    main()
