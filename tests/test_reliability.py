"""Faults of the second round, each through the installed command a user runs: a caption in a Windows encoding, a LoRA
holding NaN, LoRAs of two base models merged, a training set changed before a resume, two runs on one output folder,
a flag named in its own error; and a run stopped by SIGINT, SIGTERM or a KeyboardInterrupt inside `train()`, which
leaves a checkpoint that resumes bit for bit."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file, save_file
from loranb.data import make_shapes_folder
from loranb.models import tiny_model_path

LORA = "pytorch_lora_weights.safetensors"
FLAGS = ["--resolution=32", "--train_batch_size=2", "--report_to=none", "--lr_warmup_steps=0", "--learning_rate=1e-3", "--seed=5",
         "--random_flip"]


def cli(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def refused(res, *words, code=2):
    "Exit `code`, one `loranb-...: error:` line holding `words`, no traceback, never 'unexpected error'."
    assert res.returncode == code, f"exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr and "unexpected error" not in res.stderr, res.stderr[-3000:]
    line = next(l for l in res.stderr.splitlines() if ": error: " in l)
    for w in words: assert w in line, (w, line)
    return line


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    return dict(root=root, shapes=make_shapes_folder(root/"shapes", n=4, size=32), model=str(tiny_model_path()))


def train_cmd(env, out, *extra):
    return ["loranb-train", f"--pretrained_model_name_or_path={env['model']}", f"--train_data_dir={env['shapes']}",
            f"--output_dir={out}", *FLAGS, *extra]


def test_caption_in_a_windows_encoding_is_read(env, tmp_path):
    "A kohya caption saved as Windows-1252 trains, with one note naming the file; the caption is read as written."
    from loranb.data import load_captioned
    data = tmp_path/"kohya"; make_shapes_folder(data, n=2, size=32, layout="kohya")
    (data/"0001.txt").write_bytes("a red circle, café".encode("cp1252"))
    res = cli("loranb-train", f"--pretrained_model_name_or_path={env['model']}", f"--train_data_dir={data}", f"--output_dir={tmp_path/'o'}",
              *FLAGS, "--max_train_steps=2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"caption file '{data/'0001.txt'}' is not UTF-8" in res.stderr and "Windows-1252" in res.stderr
    assert "a red circle, café" in load_captioned(train_data_dir=str(data))["text"]


@pytest.mark.parametrize("layout", ["metadata.jsonl", "metadata.csv"])
def test_metadata_in_a_windows_encoding_is_read(tmp_path, layout):
    from loranb.data import load_captioned
    data = make_shapes_folder(tmp_path/"d", n=2, size=32)
    rows = [json.loads(l) for l in (data/"metadata.jsonl").read_text().splitlines()]
    rows[0]["text"] = "a red circle, café"
    (data/"metadata.jsonl").unlink()
    text = (''.join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) if layout == "metadata.jsonl"
            else "file_name,text\n" + ''.join(f"{r['file_name']},\"{r['text']}\"\n" for r in rows))
    (data/layout).write_bytes(text.encode("cp1252"))
    assert load_captioned(train_data_dir=str(data))["text"][0] == "a red circle, café"


@pytest.fixture(scope="module")
def lora(env):
    "A LoRA of the tiny model, trained once."
    out = env["root"]/"lora"
    res = cli(*train_cmd(env, out, "--max_train_steps=2"))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_lora_with_nan_is_refused_when_read(lora, tmp_path):
    bad = tmp_path/"nan"; bad.mkdir()
    sd = load_file(lora/LORA); k = next(iter(sd)); sd[k][0, 0] = float("nan")
    save_file(sd, str(bad/LORA)); (bad/"README.md").write_text((lora/"README.md").read_text())
    line = refused(cli("loranb-sample", "--lora", bad, "--prompt", "a ring", "--steps", "1", "--output", tmp_path/"x.png"),
                   f"LoRA file '{bad/LORA}' holds NaN or infinite values", k)
    assert not (tmp_path/"x.png").exists()
    refused(cli("loranb-resize", bad, "--rank", "1", "--output", tmp_path/"r"), "holds NaN or infinite values")
    assert not (tmp_path/"r").exists()


def test_merging_loras_of_two_base_models_is_refused(lora, tmp_path):
    "Same layer names, other shapes (another base model): both files named, nothing written."
    other = tmp_path/"other"; other.mkdir()
    from safetensors import safe_open
    with safe_open(str(lora/LORA), "pt") as f: meta = f.metadata()
    sd = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if "down" in k else v for k, v in load_file(lora/LORA).items()}
    save_file(sd, str(other/LORA), metadata=meta)
    line = refused(cli("loranb-merge", f"{lora}:1", f"{other}:1", "--output", tmp_path/"m"), "were made for different base models",
                   str(lora), str(other))
    assert not (tmp_path/"m").exists()


def test_width_error_names_the_flag(lora, tmp_path):
    refused(cli("loranb-sample", "--lora", lora, "--prompt", "a ring", "--width", "30", "--output", tmp_path/"x.png"),
            "--width=30 is not a multiple of 8", "--width=32")


def test_resume_on_changed_data_is_refused_then_allowed(env, tmp_path):
    import shutil
    data = tmp_path/"data"; shutil.copytree(env["shapes"], data)
    cmd = lambda *x: ["loranb-train", f"--pretrained_model_name_or_path={env['model']}", f"--train_data_dir={data}",
                      f"--output_dir={tmp_path/'o'}", *FLAGS, "--checkpointing_steps=2", *x]
    assert cli(*cmd("--max_train_steps=2")).returncode == 0
    shutil.copy(data/"0000.png", data/"0000-b.png")
    (data/"metadata.jsonl").write_text((data/"metadata.jsonl").read_text() + '{"file_name": "0000-b.png", "text": "a ring"}\n')
    before = sorted(p.name for p in (tmp_path/"o").rglob("*"))
    refused(cli(*cmd("--max_train_steps=4", "--resume_from_checkpoint=latest")), "the training set changed since checkpoint",
            "1 file added (e.g. 0000-b.png)", "1 file changed (e.g. metadata.jsonl)", "--allow_changed_data")
    assert sorted(p.name for p in (tmp_path/"o").rglob("*")) == before   # nothing lost, nothing written
    res = cli(*cmd("--max_train_steps=4", "--resume_from_checkpoint=latest", "--allow_changed_data"))
    assert res.returncode == 0 and "no longer an exact continuation" in res.stdout, res.stderr[-2000:]


def test_second_run_on_a_busy_folder_is_refused(env, tmp_path):
    out = tmp_path/"busy"
    first = subprocess.Popen(train_cmd(env, out, "--max_train_steps=150", "--checkpointing_steps=50"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out/".loranb.lock").exists():
        assert first.poll() is None and time.time() < deadline, "the first run never took its lock"
        time.sleep(0.05)
    second = cli(*train_cmd(env, out, "--max_train_steps=2"))
    refused(second, f"--output_dir '{out}' is in use by another loranb run (process {first.pid}")
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    assert "LoRA saved to" in stdout and not (out/".loranb.lock").exists()
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-100", "checkpoint-150", "checkpoint-50"]


@pytest.fixture(scope="module")
def whole(env):
    "The uninterrupted run the stopped ones must equal: 200 steps."
    out = env["root"]/"whole"
    res = cli(*train_cmd(env, out, "--max_train_steps=200", "--checkpointing_steps=1000"))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_with_a_checkpoint_and_resumes_exactly(env, whole, tmp_path, sig, code):
    out, log = tmp_path/"stopped", tmp_path/"stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(train_cmd(env, out, "--max_train_steps=200", "--checkpointing_steps=1000"), stdout=subprocess.PIPE,
                                stderr=err, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 120
        while "training:" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, "the run never started its steps"
            time.sleep(0.05)
        time.sleep(1.0); proc.send_signal(sig); proc.communicate(timeout=300)
    stderr = log.read_text()
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr and f"stopped by {sig.name}" in stderr and "--resume_from_checkpoint=latest" in stderr
    steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")]
    assert len(steps) == 1 and 0 < steps[0] < 200, (steps, stderr[-2000:])
    assert not (out/LORA).exists() and not (out/".loranb.lock").exists()
    res = cli(*train_cmd(env, out, "--max_train_steps=200", "--checkpointing_steps=1000", "--resume_from_checkpoint=latest"))
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_file(whole/LORA), load_file(out/LORA)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((whole/"loss.json").read_text()) == json.loads((out/"loss.json").read_text())


def test_keyboard_interrupt_inside_train_resumes_exactly(env, whole, tmp_path, monkeypatch):
    "A KeyboardInterrupt raised inside step 31 (before its optimizer step) reaches the caller; checkpoint-30 resumes to the whole run."
    import loranb.train as T
    from loranb.train import TrainConfig, train
    c = TrainConfig(pretrained_model_name_or_path=env["model"], train_data_dir=str(env["shapes"]), output_dir=str(tmp_path/"o"),
                    resolution=32, train_batch_size=2, report_to="none", lr_warmup_steps=0, learning_rate=1e-3, seed=5, random_flip=True,
                    max_train_steps=200, checkpointing_steps=1000)
    real = T.train_step
    def step(run, batch):
        if run.step == 30: raise KeyboardInterrupt
        return real(run, batch)
    threads = torch.get_num_threads(); torch.set_num_threads(1)   # as the command ran: one thread, the same sums
    try:
        monkeypatch.setattr(T, "train_step", step)
        with pytest.raises(KeyboardInterrupt): train(c, progress=False)
        monkeypatch.setattr(T, "train_step", real)
        assert [p.name for p in (tmp_path/"o").glob("checkpoint-*")] == ["checkpoint-30"]
        import dataclasses
        result = train(dataclasses.replace(c, resume_from_checkpoint="latest"), progress=False)
    finally: torch.set_num_threads(threads)
    a, b = load_file(whole/LORA), load_file(result.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_base_loads_in_its_fp16_variant(lora, tmp_path):
    "load_pipeline(..., variant='fp16') takes a base model's fp16 files: a folder holding only those loads, and is refused without it."
    from diffusers import StableDiffusionPipeline
    from loranb.hub import load_pipeline
    from loranb.errors import LoranbError
    base = tmp_path/"base-fp16"
    StableDiffusionPipeline.from_pretrained(str(tiny_model_path()), safety_checker=None).to(torch.float16).save_pretrained(base, variant="fp16")
    weights = list(base.glob("unet/*.safetensors"))
    assert weights and all(".fp16." in p.name for p in weights)   # only the fp16 variant's files are there
    pipe = load_pipeline(lora, base=str(base), variant="fp16", dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32 and "default_0" in pipe.unet.peft_config
    with pytest.raises((LoranbError, OSError, ValueError)): load_pipeline(lora, base=str(base))   # no variant: no weights to load
