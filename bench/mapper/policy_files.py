#!/usr/bin/env python3
"""Writes the policy scenario's tailnet layout and 200-rule policy (bench/lib/bench.py) for
bench_policy_change: policy_files.py NODES DIR -> DIR/layout.json, DIR/policy.json."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bench  # noqa: E402

nodes, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out, exist_ok=True)
lay = bench.policy_layout(nodes)
lay["owner"] = lay["owner"][:nodes]  # the propagation scenario's joiner is not needed here
with open(os.path.join(out, "layout.json"), "w") as f:
    json.dump(lay, f)
with open(os.path.join(out, "policy.json"), "w") as f:
    json.dump(bench.make_policy(lay), f)
