#!/usr/bin/env python3
"""Floods a server on loopback with interactive registrations, as an unauthenticated client
with fresh keys would (issue 18, item 1), and reports what it cost the server: resident memory
(VmRSS, VmHWM of the pid) and database growth (the SQLite files, or pg_database_size).

    python3 tests/system/register_flood.py --port 8080 --pid $(pidof headscale) \\
        --sqlite data/db.sqlite --count 5000 --hostinfo-bytes 14336

Each of --machines machines (its own machine key and Noise connection) sends --count /
--machines register requests, each with a fresh node key and a Hostinfo padded to about
--hostinfo-bytes. Answers are counted by kind: AuthURL, Error (with its text), HTTP status."""

import argparse
import collections
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from noise_client import ControlClient  # noqa: E402


def rss_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def db_bytes(args):
    if args.sqlite:
        return sum(os.path.getsize(p) for p in (args.sqlite, args.sqlite + "-wal",
                                                args.sqlite + "-shm") if os.path.exists(p))
    if args.pg:
        out = subprocess.run(["psql", "-Atq", "-d", args.pg, "-c",
                              "SELECT pg_database_size(current_database())"],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip())
    return None


def flood(args):
    counts = collections.Counter()
    per = max(1, args.count // args.machines)
    for m in range(args.machines):
        c = ControlClient(args.port, args.host)
        sock, h2 = c.connect()
        try:
            for i in range(per):
                c.new_node_key()
                # Random text: padding that compresses (PostgreSQL's TOAST) would understate
                # what an attacker can make the server store.
                pad = os.urandom(args.hostinfo_bytes // 2 + 1).hex()[:args.hostinfo_bytes]
                c.hostinfo = {"Hostname": f"flood-{m}-{i}", "OS": "linux", "DeviceModel": pad}
                st, _, resp = c.register(session=h2, timeout=60)
                if st == 200 and isinstance(resp, dict) and resp.get("AuthURL"):
                    counts["AuthURL"] += 1
                elif st == 200 and isinstance(resp, dict) and resp.get("Error"):
                    counts["Error: " + resp["Error"][:40]] += 1
                else:
                    counts[f"HTTP {st}"] += 1
        finally:
            sock.close()
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, help="the server's pid, for its memory")
    ap.add_argument("--sqlite", help="the server's SQLite file, for its size")
    ap.add_argument("--pg", help="a psql connection string of the server's database")
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--hostinfo-bytes", type=int, default=14 * 1024)
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("loopback only: this tool is for test servers")
    before_mem = rss_kib(args.pid) if args.pid else {}
    before_db = db_bytes(args)
    t0 = time.monotonic()
    counts = flood(args)
    took = time.monotonic() - t0
    after_mem = rss_kib(args.pid) if args.pid else {}
    after_db = db_bytes(args)
    print(f"{args.count} registrations of ~{args.hostinfo_bytes} B Hostinfo from "
          f"{args.machines} machines in {took:.1f} s: " +
          ", ".join(f"{k} x{v}" for k, v in counts.most_common()))
    if before_mem:
        print(f"server VmRSS {before_mem['VmRSS'] / 1024:.1f} -> {after_mem['VmRSS'] / 1024:.1f}"
              f" MiB (+{(after_mem['VmRSS'] - before_mem['VmRSS']) / 1024:.1f}), "
              f"VmHWM {after_mem['VmHWM'] / 1024:.1f} MiB")
    if before_db is not None:
        print(f"database {before_db / 2**20:.2f} -> {after_db / 2**20:.2f} MiB "
              f"(+{(after_db - before_db) / 2**20:.2f})")


if __name__ == "__main__":
    main()
