"""The GPU check's CPU rehearsal: every section runs its code path and reports, fp16 with its loss scaler included; GPU-only
sections say why they skip; a section that fails is reported and the JSON is still written."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check(*args, timeout=900):
    return subprocess.run([sys.executable, str(ROOT/"bench"/"gpu_check.py"), "--dry", *args], capture_output=True, text=True, timeout=timeout)


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path/"check.json"
    res = check("--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {r["section"]: r for r in report["rows"]}
    assert set(rows) == {"fp16_b1", "bf16_b8", "adam8bit", "colab_path", "reference_split"}
    meta = report["meta"]
    assert meta["dry"] is True and "CPU rehearsal" in meta["hardware"] and meta["commit"] and meta["torch"]
    for name in ("fp16_b1", "bf16_b8"):
        assert "error" not in rows[name], rows[name]
        assert rows[name]["s_per_step"] > 0 and rows[name]["flop_per_step"] > 0
    assert rows["fp16_b1"]["precision"] == "fp16" and rows["fp16_b1"]["loss_scale"] > 0   # fp16 with its scaler, rehearsed
    assert "loss_scale" not in rows["bf16_b8"] and rows["bf16_b8"]["batch"] == 2
    assert rows["adam8bit"]["skipped"] == "no CUDA GPU"          # 8-bit Adam needs CUDA
    colab = rows["colab_path"]
    assert "error" not in colab, colab
    assert colab["steps"] == 2 and colab["lora_written"] and colab["validation_grid"]
    assert colab["probe_step_s"] > 0 and colab["session_steps_per_hour"] >= 1
    assert colab["lora_dtype"] == "torch.float32"
    ref = rows["reference_split"]
    assert "nan" in ref["flag_none"] and "torch.float16" in ref["flag_none"] and "nan" not in ref["flag_fp16"]
    assert "| colab_path |" in res.stdout                         # the table is printed


def test_a_failing_section_still_writes_the_report(tmp_path):
    out = tmp_path/"check.json"
    res = check("--out", str(out), "--sections", "fp16_b1,colab_path", "--fail", "colab_path")
    assert res.returncode == 1                                    # a section failed: said by the exit status
    rows = {r["section"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"fp16_b1", "colab_path"}
    assert "made to fail" in rows["colab_path"]["error"]          # what failed, recorded
    assert rows["fp16_b1"]["s_per_step"] > 0                      # what was measured, kept
