"""bench/ptxas_report.py: the registers/spills table from ptxas -v output mixed into a pytest log."""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("ptxas_report", os.path.join(ROOT, "bench", "ptxas_report.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


# The shape of `ptxas -v` output (CUDA 12/13), interleaved with pytest progress and absl log lines as in the GPU
# suite's log. The grads kernel is compiled twice (two sequence lengths), once with worse numbers.
LOG = """\
tests/test_pallas_delta.py ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gated_delta_rule_wu_k128_v64_bfloat16_mosaic_gpu_kernel' for 'sm_90a'
ptxas info    : Function properties for gated_delta_rule_wu_k128_v64_bfloat16_mosaic_gpu_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 392 bytes cmem[0]
I1129 04:01:02.123456  1234 something.cc:12] unrelated log line
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gated_delta_rule_grads_k128_v64_bfloat16_mosaic_gpu_kernel' for 'sm_90a'
ptxas info    : Function properties for gated_delta_rule_grads_k128_v64_bfloat16_mosaic_gpu_kernel
    264 bytes stack frame, 1040 bytes spill stores, 980 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 392 bytes cmem[0]
..
ptxas info    : Compiling entry function 'gated_delta_rule_grads_k128_v64_bfloat16_mosaic_gpu_kernel' for 'sm_90a'
ptxas info    : Function properties for gated_delta_rule_grads_k128_v64_bfloat16_mosaic_gpu_kernel
    296 bytes stack frame, 1200 bytes spill stores, 1104 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 392 bytes cmem[0]
ptxas info    : Compiling entry function 'simple_gla_fwd_k64_v64_bfloat16_mosaic_gpu_kernel' for 'sm_90a'
ptxas info    : Function properties for simple_gla_fwd_k64_v64_bfloat16_mosaic_gpu_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 90 registers, used 1 barriers, 392 bytes cmem[0]
3 passed in 61.2s
"""


def test_parse_reads_registers_and_spills_per_kernel_and_merges_recompiles():
    rows = _load().parse(LOG)
    assert [r.name for r in rows] == ["gated_delta_rule_wu_k128_v64_bfloat16",
                                      "gated_delta_rule_grads_k128_v64_bfloat16", "simple_gla_fwd_k64_v64_bfloat16"]
    wu, grads, gla = rows
    assert (wu.registers, wu.spill_stores, wu.spill_loads, wu.stack, wu.compiles) == (168, 0, 0, 0, 1)
    assert not wu.spills and gla.registers == 90 and gla.arch == "sm_90a"
    # Compiled twice: the worst numbers are kept, the compiles counted.
    assert (grads.registers, grads.spill_stores, grads.spill_loads, grads.stack, grads.compiles) == (255, 1200, 1104,
                                                                                                      296, 2)
    assert grads.spills


def test_main_writes_the_table_and_names_the_spilling_kernels(tmp_path, capsys):
    log = tmp_path / "tests.log"
    log.write_text(LOG)
    out = tmp_path / "ptxas.md"
    assert _load().main([f"--log={log}", "--device=NVIDIA H200", f"--out={out}"]) == 0
    md = out.read_text()
    assert "(NVIDIA H200)" in md
    assert "| gated_delta_rule_grads_k128_v64_bfloat16 **spills** | sm_90a | 255 | 1200 | 1104 | 296 | 2 |" in md
    assert "3 kernels, 1 with spills: gated_delta_rule_grads_k128_v64_bfloat16" in md
    assert md in capsys.readouterr().out


@pytest.mark.parametrize("content,code,message", [
    ("5 passed in 3.1s\n", 1, "no ptxas report"),  # the variable was not set, or no GPU kernel compiled
    (None, 2, "cannot read --log"),
])
def test_main_says_what_is_wrong_with_the_log(tmp_path, capsys, content, code, message):
    log = tmp_path / "tests.log"
    if content is not None:
        log.write_text(content)
    assert _load().main([f"--log={log}", f"--out={tmp_path / 'x.md'}"]) == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()
