"""Generate the field-case trace of docs/economics.md's worked example.

37 days from Monday 2026-03-02 00:00Z: 3 units from 08:00 to 18:00 UTC (3,750 input +
1,250 output tokens a minute at unit_tpm 2,500 and output weight 3), 1 unit otherwise
(1,249 + 417: exactly 2,500 weighted tokens).

    python examples/field_case/generate.py [OUT.csv]   (default: field_case.csv beside it)
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
DAYS = 37
PEAK = (3750, 1250, 50)
OFF_PEAK = (1249, 417, 17)


def rows() -> list[str]:
    out = ["minute_utc,input_tokens,output_tokens,requests"]
    for k in range(DAYS * 1440):
        t = START + dt.timedelta(minutes=k)
        inp, outp, req = PEAK if 8 <= t.hour < 18 else OFF_PEAK
        out.append(f"{t:%Y-%m-%dT%H:%M}:00Z,{inp},{outp},{req}")
    return out


def write(path: Path) -> Path:
    path.write_text("\n".join(rows()) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name(
        "field_case.csv")
    print(write(target))
