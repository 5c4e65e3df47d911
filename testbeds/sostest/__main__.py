"""sostest command line (run it as `testbeds/run COMMAND`; `testbeds/run help` lists every command).

    python3 -m sostest drill statewide-NAME        one statewide drill (PEER=kamailio for the peer)
    python3 -m sostest statewide-all               every statewide drill, then one table
    python3 -m sostest statewide-compare [NAME..]  each drill against sosrouter, then Kamailio; side by side
    python3 -m sostest statewide-table DIR|FILE..  the table of finished drills (result.json)
    python3 -m sostest topology OUTDIR [--regions N]
    python3 -m sostest fakepsap ... | caller ... | report ...   the pieces (see their --help)
    python3 -m sostest pytest [ARGS]               the testbed's own tests (testbeds/tests)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from . import statewide


def statewide_usage() -> str:
    return "\n".join(f"  {n:<32} {d[1]}" for n, d in statewide.DRILLS.items())


def cmd_all(names: list, peers: list) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(statewide.HERE, "out", f"{stamp}-statewide")
    results = []
    for peer in peers:
        for n in names:
            st = statewide.Settings()
            st.peer = peer
            try:
                r = statewide.run_drill(n, st, os.path.join(base, f"{n}-{peer}"))
                results.append(statewide.asdict(r))
            except SystemExit as e:
                statewide.say(f"drill {n} against {peer} did not run: {e}")
    text = statewide.results_table(results)
    if len(peers) > 1:
        text += "\n\n" + statewide.side_by_side(results)
    print(text)
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(base, "result.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    statewide.say(f"outputs in {base}")
    return 0 if len(results) == len(names) * len(peers) else 1


def main(argv: list) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__ + "\nStatewide drills:\n" + statewide_usage())
        return 0
    cmd, args = argv[0], argv[1:]
    if cmd == "drill":
        if not args:
            print("drill needs a NAME:\n" + statewide_usage(), file=sys.stderr)
            return 2
        statewide.run_drill(args[0], statewide.Settings())
        return 0
    if cmd == "statewide-all":
        return cmd_all(args or list(statewide.DRILLS), [statewide.Settings().peer])
    if cmd == "statewide-compare":
        return cmd_all(args or list(statewide.DRILLS), ["sosrouter", "kamailio"])
    if cmd == "statewide-table":
        res = statewide.load_results(args)
        print(statewide.results_table(res))
        if len({r["peer"] for r in res}) > 1:
            print("\n" + statewide.side_by_side(res))
        return 0
    if cmd == "topology":
        from . import topology
        topology.main(args)
        return 0
    if cmd == "fakepsap":
        from . import fakepsap
        fakepsap.main(args)
        return 0
    if cmd == "caller":
        from . import caller
        caller.main(args)
        return 0
    if cmd == "report":
        from . import report
        report.main(["report.py", *args])
        return 0
    if cmd == "pytest":
        tests = os.path.join(statewide.HERE, "tests")
        return subprocess.call([sys.executable, "-m", "pytest", "-q", tests, *args],
                               env=dict(os.environ, PYTHONPATH=statewide.HERE))
    print(f"unknown command {cmd!r}\n" + __doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
