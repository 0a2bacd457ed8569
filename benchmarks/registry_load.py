"""What the generated resource registry costs at start-up and per validation.

Run: python benchmarks/registry_load.py [RUNS]. Each run is a fresh interpreter (so nothing is cached) that
times, with ``time.perf_counter``: importing ``bulkconn.cli`` (what every command pays today), then
``bulkconn.registry`` on top of it (the data is not read yet), the first
``resource()`` call (reads and parses ``registry_data.json``), building every collection's resource, and
then validating one PATCH body many times. Medians over RUNS (default 9). Numbers, not assertions.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

PROBE = """
import time
t = time.perf_counter()
import bulkconn.cli
t0 = time.perf_counter()
import bulkconn.registry as r
t1 = time.perf_counter()
r.resource("exchangeConnectors")
t2 = time.perf_counter()
for name in r.collections():
    r.resource(name)
t3 = time.perf_counter()
res = r.resource("deviceConfigurations")
body = {"@odata.type": "#microsoft.graph.windows10GeneralConfiguration", "description": "x", "displayName": "y"}
n = 20000
for _ in range(n):
    r.validate_patch(res, body)
t4 = time.perf_counter()
print((t0 - t) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) / n * 1e6)
"""
LABELS = (
    "import bulkconn.cli, today's start-up (ms)",
    "then import bulkconn.registry (ms)",
    "first resource(): load + parse data (ms)",
    "all 46 collections built (ms)",
    "validate_patch, 3-field body (us)",
)


def main() -> None:
    """Run the probe RUNS times in fresh interpreters and print the medians."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    samples = [
        [
            float(x)
            for x in subprocess.run(
                [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
            ).stdout.split()
        ]
        for _ in range(runs)
    ]
    for i, label in enumerate(LABELS):
        print(f"{label:45} {statistics.median(s[i] for s in samples):8.3f}")


if __name__ == "__main__":
    main()
