"""Registers and spills of every Mosaic GPU kernel, from ptxas's own report (GPU machine).

    MOSAIC_GPU_DUMP_PTXAS=1 python -m pytest -m gpu -s tests/test_pallas_gpu.py ... > tests.log 2>&1
    python bench/ptxas_report.py --log=tests.log --device="NVIDIA H200"

With MOSAIC_GPU_DUMP_PTXAS set, Mosaic GPU runs `ptxas -v` on each kernel it compiles and prints the report to
stdout (pytest needs -s to let it through). Our kernels are launched under names that carry their configuration
(`gated_delta_rule_grads_k128_v64_bfloat16`, see gated_delta_rule/gpu_common.kernel_name), so one log of the GPU
tests gives, per kernel: registers per thread (a warpgroup has 128 threads; 255 is the most ptxas may give one),
bytes spilled to local memory and the stack frame. Spills are what to look at first when a kernel is slower than
its floor: they turn register tiles into local-memory (L1/L2) traffic.

Prints a table and saves it as bench/results/ptxas_<device>_<date>.md (--out to choose). A log without any
ptxas report (the variable unset, no ptxas binary, or no GPU kernel compiled) is an error that says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SUFFIX = "_mosaic_gpu_kernel"  # Mosaic names the outlined kernel <launch name>_mosaic_gpu_kernel


@dataclasses.dataclass
class KernelReport:
    name: str
    arch: str
    registers: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    compiles: int = 1

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


def parse(text: str) -> list[KernelReport]:
    """ptxas -v reports in `text` (any other lines are ignored), one row per kernel name in order of first
    appearance; a kernel compiled more than once keeps its worst numbers and counts the compiles."""
    out: dict[str, KernelReport] = {}
    current: KernelReport | None = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            name = m.group(1)
            current = KernelReport(name=name[:-len(_SUFFIX)] if name.endswith(_SUFFIX) else name, arch=m.group(2))
        elif current is not None and (m := _PROPS.search(line)):
            current.stack, current.spill_stores, current.spill_loads = (int(x) for x in m.groups())
        elif current is not None and (m := _USED.search(line)):  # the last line of one kernel's report
            current.registers = int(m.group(1))
            first = out.setdefault(current.name, current)
            if first is not current:
                first.compiles += 1
                for field in ("registers", "stack", "spill_stores", "spill_loads"):
                    setattr(first, field, max(getattr(first, field), getattr(current, field)))
            current = None
    return list(out.values())


def table(rows: list[KernelReport], device: str, source: str) -> str:
    spilled = [r for r in rows if r.spills]
    lines = [f"# ptxas report: registers and spills of the Mosaic GPU kernels ({device})", "",
             f"From `{source}`, {datetime.date.today().isoformat()}. Registers are per thread (a warpgroup is 128 "
             "threads; ptxas may give at most 255). Spill bytes are per thread.", "",
             "| kernel | arch | registers | spill stores (B) | spill loads (B) | stack (B) | compiles |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        flag = " **spills**" if r.spills else ""
        lines.append(f"| {r.name}{flag} | {r.arch} | {r.registers} | {r.spill_stores} | {r.spill_loads} | {r.stack} "
                     f"| {r.compiles} |")
    lines += ["", f"{len(rows)} kernels, {len(spilled)} with spills"
              + (": " + ", ".join(r.name for r in spilled) if spilled else ".")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", required=True, help="a log holding ptxas -v reports (MOSAIC_GPU_DUMP_PTXAS=1)")
    ap.add_argument("--device", default="gpu", help="the GPU the log comes from, for the title and file name")
    ap.add_argument("--out", default="",
                    help="where to save the table (default bench/results/ptxas_<device>_<date>.md)")
    a = ap.parse_args(argv)
    try:
        with open(a.log, errors="replace") as f:
            text = f.read()
    except OSError as e:
        print(f"ptxas_report: cannot read --log {a.log!r}: {e.strerror}", file=sys.stderr)
        return 2
    rows = parse(text)
    if not rows:
        print(f"ptxas_report: no ptxas report in {a.log!r}. Run the kernels with MOSAIC_GPU_DUMP_PTXAS=1 (and pytest "
              "-s), on a CUDA GPU whose toolkit has ptxas.", file=sys.stderr)
        return 1
    md = table(rows, a.device, os.path.basename(a.log))
    print(md, end="")
    slug = re.sub(r"[^A-Za-z0-9]+", "_", a.device).strip("_").lower() or "gpu"
    out = a.out or os.path.join(ROOT, "bench", "results", f"ptxas_{slug}_{datetime.date.today().isoformat()}.md")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write(md)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
