"""`make bench`: run the benchmarks and write docs/benchmarks.md (machine and date included).

Implemented so far: serving (single events against the bare FastAPI ceiling, batches). Still to
come for issue 5: peers (LitServe, MLServer, BentoML), learning throughput, freshness, swaps under
load, memory.
"""

from __future__ import annotations

import serving
from common import ROOT, report

if __name__ == "__main__":
    sections = [
        report(
            "Serving", serving.main(),
            [f"wrk -t1 -c32 -d{serving.SECONDS}s (batches of 1,024: -c4); one uvicorn worker each; ours and the ceiling measured alternately in this run"],
            ROOT / "docs" / "benchmarks" / "serving.md",
        ),
    ]
    (ROOT / "docs" / "benchmarks.md").write_text("# Benchmarks\n\nWritten by `make bench`.\n\n" + "\n".join(sections))
