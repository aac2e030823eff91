"""CSV reading benchmark: the contract's reader (pyarrow, malformed lines become rejects)
against the plain ``pandas.read_csv`` it replaced, on the same generated 200,000-line export,
clean and with 50 malformed lines (which plain pandas cannot read at all). Prints and saves
bench/results/csv_read.{json,md}. Run: `python -m bench.csv_read`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from sendtime.features.csv_reader import read_csv_records

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HEADER = "event_id,user_id,message_id,event_type,timestamp,machine_open"


def _lines(n: int, bad_every: int | None) -> bytes:
    out = [HEADER]
    for i in range(n):
        ts = (pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(seconds=20 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        row = f"e{i},u{i % 997},m{i},send,{ts},"
        if bad_every and i % bad_every == 7:
            row += ",extra"
        out.append(row)
    return ("\n".join(out) + "\n").encode()


def _best(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, bad_every in (("clean", None), ("50 malformed lines", 4000)):
            path = Path(tmp) / "events.csv"
            path.write_bytes(_lines(200_000, bad_every))
            ours = _best(lambda: read_csv_records(path, "events").records())
            try:
                plain = _best(lambda: pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8"))
            except Exception as exc:  # noqa: BLE001 - what a user of plain pandas gets
                plain = f"fails: {str(exc).splitlines()[0][:60]}"
            rows.append({"file": f"200,000 lines, {name}", "sendtime reader s": round(ours, 3),
                         "pandas.read_csv s": plain if isinstance(plain, str) else round(plain, 3),
                         "ratio": round(plain / ours, 2) if not isinstance(plain, str) else None})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "csv_read.json").write_text(json.dumps(rows, indent=2))
    cols = list(rows[0])
    md = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                   + ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows])
    (RESULTS / "csv_read.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
