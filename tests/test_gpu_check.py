"The GPU check's CPU rehearsal: every section runs its code path and reports, and GPU-only sections say why they skip."
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path/"check.json"
    res = subprocess.run([sys.executable, str(ROOT/"bench"/"gpu_check.py"), "--dry", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {r["section"]: r for r in report["rows"]}
    assert set(rows) == {"fp16_b1", "bf16_b8", "adam8bit", "colab_path"}
    assert report["meta"]["dry"] is True and "CPU rehearsal" in report["meta"]["hardware"]
    for name in ("fp16_b1", "bf16_b8"):
        assert "error" not in rows[name], rows[name]
        assert rows[name]["s_per_step"] > 0 and rows[name]["flop_per_step"] > 0
    assert rows["bf16_b8"]["batch"] == 2
    assert rows["adam8bit"]["skipped"] == "no CUDA GPU"          # 8-bit Adam needs CUDA
    colab = rows["colab_path"]
    assert "error" not in colab, colab
    assert colab["steps"] == 2 and colab["lora_written"] and colab["validation_grid"]
    assert colab["probe_step_s"] > 0 and colab["session_steps_per_hour"] >= 1
    assert colab["lora_dtype"] == "torch.float32"
    assert "| colab_path |" in res.stdout                         # the table is printed
