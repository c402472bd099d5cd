"""Faults a new user meets: mistakes in flags and paths, damaged files, full disks, diverging runs.

Every case runs a console command and checks four things: the exit code (2 for bad input, 1 for a failure at run
time), the key words of its one-paragraph message, that no traceback reaches the user, and that what was on disk
before is byte-identical afterwards, or rebuilt equal to what a clean run writes."""
import hashlib, json, os, shutil, subprocess, sys
from contextlib import contextmanager
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from loranb.data import make_shapes_folder
from loranb.models import tiny_model_path, make_tiny_model

FLAGS = ["--resolution=64", "--train_batch_size=2", "--report_to=none", "--lr_warmup_steps=0", "--learning_rate=1e-3",
         "--max_train_steps=6", "--checkpointing_steps=2", "--seed=4"]
LORA = "pytorch_lora_weights.safetensors"


def cli(*args, env=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def error_line(res, code, *words):
    "Check the exit code, a single `loranb-<cmd>: error: what — fix` line with `words`, and no traceback; return the line."
    assert res.returncode == code, f"exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [l for l in res.stderr.splitlines() if l.startswith("loranb-") and ": error: " in l]
    assert len(lines) == 1, res.stderr[-3000:]
    assert " — " in lines[0], lines[0]
    for w in words: assert w in lines[0], (w, lines[0])
    return lines[0]


def snapshot(*folders):
    "Every file under `folders` with the SHA-256 of its bytes."
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


def tensors_equal(a, b):
    "Same tensors, bit for bit, and the same metadata (safetensors' header may order it differently)."
    from safetensors import safe_open
    def meta(f):
        with safe_open(str(f), "pt") as h: return {k: json.loads(v) if v.startswith("{") else v for k, v in (h.metadata() or {}).items()}
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta) and meta(a) == meta(b)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return dict(root=root, shapes=make_shapes_folder(root/"shapes", n=4), model=str(tiny_model_path()), cache=root/"cache")


def train_cmd(env, out, *extra):
    return ["loranb-train", f"--pretrained_model_name_or_path={env['model']}", f"--train_data_dir={env['shapes']}",
            f"--cache_dir={env['cache']}", f"--output_dir={out}", *FLAGS, *extra]


@pytest.fixture(scope="module")
def clean_run(env):
    "An uninterrupted run: checkpoints at 2, 4 and 6, the LoRA, loss.json and a model card."
    out = env["root"]/"clean"
    res = cli(*train_cmd(env, out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def stopped_copy(clean_run, dest):
    "The clean run as if it had been killed after checkpoint-4 was written."
    shutil.copytree(clean_run, dest)
    for name in ["checkpoint-6", LORA, "loss.json", "README.md", "logs"]:
        p = dest/name
        if p.is_dir(): shutil.rmtree(p)
        elif p.exists(): p.unlink()
    return dest


def fill_disk(folder):
    "Write zeros into `folder` until its disk is full."
    fd = os.open(folder/".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True: os.write(fd, bytes(4096))
    except OSError: pass
    finally: os.close(fd)


@contextmanager
def small_disk(path, size="1m", fill=True):
    "A tmpfs at `path`, full if `fill` (needs root; skipped elsewhere)."
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        if fill: fill_disk(path)
        yield path
    finally: subprocess.run(["umount", "-l", str(path)], capture_output=True)


# --- 1. one error, one paragraph, from every console command ---------------------------------------------------

@pytest.mark.parametrize("cmd, args, code, words", [
    ("loranb-train", ["--train_data_dir=.", "--learning_rate=-1"], 2, ["--learning_rate=-1.0 must be above 0", "use e.g. --learning_rate=0.0001"]),
    ("loranb-sample", ["--lora", "x", "--prompt", "p", "--steps", "0", "--output", "o.png"], 2, ["--steps=0 must be at least 1"]),
    ("loranb-export", ["./no/such/lora", "--to", "kohya"], 2, ["'./no/such/lora' does not exist"]),
    ("loranb-demo", ["--steps=0"], 2, ["--steps=0 must be at least 1"]),
    ("loranb-tiny-model", ["/proc/no/such/model"], 1, ["cannot write the tiny model '/proc/no/such/model'"]),
    ("loranb-world-model", ["out", "--unet_steps=0"], 2, ["--unet_steps=0 must be at least 1"]),
])
def test_every_command_reports_one_line(tmp_path, cmd, args, code, words):
    res = subprocess.run([cmd, *args], capture_output=True, text=True, cwd=tmp_path)
    line = error_line(res, code, *words)
    assert line.startswith(f"{cmd}: error: ")
    assert list(tmp_path.iterdir()) == []   # nothing written


def test_debug_shows_the_traceback(tmp_path):
    args = ["loranb-train", "--train_data_dir=.", "--learning_rate=-1", f"--output_dir={tmp_path/'o'}"]
    for res in [cli(*args, "--debug"), cli(*args, env={"LORANB_DEBUG": "1"})]:
        assert res.returncode == 1 and "Traceback" in res.stderr and "InputError: --learning_rate=-1.0" in res.stderr


def test_missing_model_folder_is_reported_once(env, tmp_path):
    res = cli("loranb-train", f"--pretrained_model_name_or_path={tmp_path/'no-model'}", f"--train_data_dir={env['shapes']}",
              f"--output_dir={tmp_path/'o'}", "--report_to=none")
    error_line(res, 2, f"model folder '{tmp_path/'no-model'}' does not exist")
    assert res.stderr.count("does not exist") == 1
    assert not (tmp_path/"o").exists()


# --- 7. checks before work ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, words", [
    ("--learning_rate=-1", ["--learning_rate=-1.0 must be above 0"]),
    ("--resolution=0", ["--resolution=0 must be a positive multiple of 8", "--resolution=512"]),
    ("--resolution=100", ["--resolution=100 is not a multiple of 8", "use --resolution=96 or --resolution=104"]),
    ("--train_batch_size=0", ["--train_batch_size=0 must be at least 1"]),
    ("--rank=0", ["--rank=0 must be at least 1"]),
    ("--max_train_steps=0", ["--max_train_steps=0 must be at least 1"]),
    ("--gradient_accumulation_steps=0", ["--gradient_accumulation_steps=0 must be at least 1"]),
    ("--adam_beta2=1.5", ["--adam_beta2=1.5 must be at least 0 and below 1"]),
    ("--max_grad_norm=nan", ["--max_grad_norm=nan must be above 0"]),
])
def test_bad_numbers_stop_before_any_model_loads(env, tmp_path, flag, words):
    cache = tmp_path/"cache"
    res = cli("loranb-train", f"--pretrained_model_name_or_path={env['model']}", f"--train_data_dir={env['shapes']}",
              f"--output_dir={tmp_path/'o'}", f"--cache_dir={cache}", "--report_to=none", flag)
    error_line(res, 2, *words)
    assert not (tmp_path/"o").exists() and not cache.exists()   # no output folder, no cache: nothing was started


def test_missing_paths_are_named(env, tmp_path):
    res = cli("loranb-train", f"--train_data_dir={tmp_path/'no-data'}", f"--output_dir={tmp_path/'o'}", "--report_to=none")
    error_line(res, 2, f"train_data_dir '{tmp_path/'no-data'}' does not exist")
    res = cli("loranb-train", f"--train_data_dir={env['shapes']}", f"--reg_data_dir={tmp_path/'no-reg'}",
              f"--output_dir={tmp_path/'o'}", "--report_to=none")
    error_line(res, 2, f"'{tmp_path/'no-reg'}' does not exist")
    (tmp_path/"a-file").write_text("x")
    res = cli("loranb-train", f"--train_data_dir={env['shapes']}", f"--output_dir={tmp_path/'a-file'/'o'}", "--report_to=none")
    error_line(res, 2, "cannot be written", "choose another --output_dir")
    assert not (tmp_path/"o").exists()


@pytest.mark.parametrize("report_to, package", [("wandb", "wandb"), ("all", "wandb"), ("tensorboard", "tensorboard")])
def test_tracker_not_installed(env, tmp_path, report_to, package):
    "A tracker whose package cannot be imported (here: shadowed by one that raises ImportError) stops the run at once."
    shim = tmp_path/"shim"/package; shim.mkdir(parents=True)
    (shim/"__init__.py").write_text(f"raise ImportError(\"No module named '{package}'\")\n")
    res = cli("loranb-train", f"--pretrained_model_name_or_path={env['model']}", f"--train_data_dir={env['shapes']}",
              f"--output_dir={tmp_path/'o'}", f"--report_to={report_to}", env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path/"shim"), os.environ.get("PYTHONPATH")]))})
    error_line(res, 2, f"--report_to={report_to} needs the {package} package", f"pip install {package}")
    assert not (tmp_path/"o").exists()


def test_missing_card_names_the_flag(clean_run, tmp_path):
    lora = tmp_path/"lora"; lora.mkdir(); shutil.copy(clean_run/LORA, lora/LORA)
    res = cli("loranb-sample", "--lora", lora, "--prompt", "a red circle", "--steps", "2", "--output", tmp_path/"x.png")
    error_line(res, 2, "has no README.md model card", "--base")
    assert not (tmp_path/"x.png").exists()


# --- 2. name the file --------------------------------------------------------------------------------------------

def test_truncated_lora_is_named(clean_run, tmp_path):
    lora = tmp_path/"lora"; shutil.copytree(clean_run, lora, ignore=shutil.ignore_patterns("checkpoint-*", "logs"))
    (lora/LORA).write_bytes((lora/LORA).read_bytes()[:300])
    (tmp_path/"out.png").write_bytes(b"an earlier picture")
    before = snapshot(tmp_path)
    res = cli("loranb-sample", "--lora", lora, "--prompt", "a red circle", "--steps", "2", "--output", tmp_path/"out.png")
    error_line(res, 1, f"LoRA file '{lora/LORA}' cannot be read", "re-download")
    assert snapshot(tmp_path) == before


def test_truncated_training_state_is_named(clean_run, tmp_path, env):
    out = stopped_copy(clean_run, tmp_path/"run")
    state = out/"checkpoint-4"/"training_state.pt"; state.write_bytes(state.read_bytes()[:1000])
    before = snapshot(out)
    res = cli(*train_cmd(env, out, "--resume_from_checkpoint=checkpoint-4"))
    error_line(res, 1, f"checkpoint '{out/'checkpoint-4'}' is damaged", "training_state.pt does not match its checksum",
               "--resume_from_checkpoint=latest")
    assert snapshot(out) == before
    (out/"checkpoint-4"/"checkpoint.json").unlink()   # as a checkpoint written before checksums: it is loaded to be checked
    res = cli(*train_cmd(env, out, "--resume_from_checkpoint=checkpoint-4"))
    error_line(res, 1, "training_state.pt cannot be read")


def test_full_disk_names_the_checkpoint_not_a_temporary(clean_run, tmp_path, env):
    "The disk fills up before checkpoint-6: the message names it; checkpoint-2 and -4 are as they were, no half folder is left."
    with small_disk(tmp_path/"disk", size="8m", fill=False) as disk:
        out = stopped_copy(clean_run, disk/"run")   # copied before the disk is filled below
        fill_disk(disk)
        os.truncate(disk/".filler", os.path.getsize(disk/".filler") - 8192)   # room for the run's lock file, not for a checkpoint
        before = snapshot(out)
        res = cli(*train_cmd(env, out, "--resume_from_checkpoint=latest"))
        line = error_line(res, 1, "the disk is full", f"cannot write the checkpoint '{out/'checkpoint-6'}'")
        assert ".tmp" not in line
        assert snapshot(out) == before   # every file as it was, and no new one: no half-written checkpoint folder


def test_full_disk_at_the_start_names_the_lock(clean_run, tmp_path, env):
    "A disk already full when the run starts: refused before any model loads, naming the lock file; no empty lock left behind."
    with small_disk(tmp_path/"disk", size="8m", fill=False) as disk:
        out = stopped_copy(clean_run, disk/"run"); fill_disk(disk)
        before = snapshot(out)
        res = cli(*train_cmd(env, out, "--resume_from_checkpoint=latest"))
        error_line(res, 1, "the disk is full", "cannot write the run's lock file", ".loranb.lock")
        assert snapshot(out) == before and not (out/".loranb.lock").exists()


def test_read_only_output_is_refused(tmp_path, env):
    with small_disk(tmp_path/"ro", fill=False) as disk:
        (disk/"o").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        res = cli("loranb-train", f"--train_data_dir={env['shapes']}", f"--output_dir={disk/'o'}", "--report_to=none")
        error_line(res, 2, f"output_dir '{disk/'o'}' cannot be written (Read-only file system", "choose another --output_dir")


def test_full_disk_while_caching_names_the_cache(tmp_path, env):
    with small_disk(tmp_path/"disk") as disk:
        res = cli("loranb-train", f"--pretrained_model_name_or_path={env['model']}", f"--train_data_dir={env['shapes']}",
                  f"--cache_dir={disk}", f"--output_dir={tmp_path/'o'}", *FLAGS)
        line = error_line(res, 1, "the disk is full: cannot write the latent cache", str(disk/"latents"), "it needs about",
                          "--cache_dir", "--cache_latents=memory")
        assert ".tmp" not in line
        assert not [p for p in disk.rglob("*") if p.is_file() and p.name != ".filler"]   # no half-written shard
    assert not (tmp_path/"o").exists()   # the run failed before training: no output folder


# --- 3. all or nothing when loading a LoRA -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def deep_lora(env):
    "A LoRA for a UNet of another layout (two attention layers per block where the tiny model has one), carded for the tiny model."
    from diffusers import UNet2DConditionModel
    from loranb.lora import add_lora, save_lora
    from loranb.train import TrainConfig, write_model_card
    cfg = json.loads((Path(env["model"])/"unet"/"config.json").read_text()); cfg["layers_per_block"] = 2
    torch.manual_seed(0); unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    out = env["root"]/"deep-lora"
    save_lora(out, add_lora(unet, 4))
    write_model_card(TrainConfig(pretrained_model_name_or_path=env["model"], train_data_dir="shapes"), out)
    return out


def test_partial_lora_is_refused_and_writes_nothing(deep_lora, tmp_path):
    (tmp_path/"out.png").write_bytes(b"an earlier picture")
    before = snapshot(tmp_path)
    res = cli("loranb-sample", "--lora", deep_lora, "--prompt", "a red circle", "--steps", "2", "--output", tmp_path/"out.png")
    error_line(res, 2, "matched 32 of 48 layers", "unmatched, e.g.: unet.down_blocks.0.attentions.1", "--allow_partial")
    assert snapshot(tmp_path) == before
    res = cli("loranb-export", deep_lora, "--fuse", tmp_path/"fused")
    error_line(res, 2, "matched 32 of 48 layers")
    assert not (tmp_path/"fused").exists()


def test_partial_lora_on_request(deep_lora, tmp_path):
    res = cli("loranb-sample", "--lora", deep_lora, "--prompt", "a red circle", "--steps", "2", "--output", tmp_path/"out.png",
              "--allow_partial")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "matched 32 of 48 layers" in res.stderr and "only those 32 were applied" in res.stderr
    assert (tmp_path/"out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- 4. non-finite losses never reach the weights ----------------------------------------------------------------

def test_diverging_run_stops_with_finite_files(env, tmp_path):
    "A learning rate of 1e30 makes the second step's loss NaN: skipped, counted, stopped, with fp32 advice; no file holds a NaN."
    out = tmp_path/"o"
    res = cli(*train_cmd(env, out, "--learning_rate=1e30", "--max_nonfinite_steps=3", "--checkpointing_steps=1"))
    error_line(res, 1, "3 non-finite steps in a row", "none of them changed the LoRA", f"{out/'checkpoint-1'}, is intact",
               "the run is in fp32", "lower --learning_rate")
    assert "--mixed_precision=bf16" not in res.stderr
    assert res.stdout.count("step skipped") == 3
    files = list(out.rglob("*.safetensors"))
    assert files and all(torch.isfinite(v).all() for f in files for v in load_file(str(f)).values())


# --- 5. checkpoints you can trust --------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate_lora", "truncate_state", "overwrite_lora_same_size"])
def test_latest_passes_over_a_damaged_checkpoint(clean_run, tmp_path, env, damage):
    "checkpoint-4 is damaged: 'latest' says so, resumes from checkpoint-2, and ends bitwise equal to the clean run."
    out = stopped_copy(clean_run, tmp_path/"run")
    name = "training_state.pt" if damage == "truncate_state" else LORA
    f = out/"checkpoint-4"/name; data = f.read_bytes()
    f.write_bytes(data[:len(data)//2] if damage.startswith("truncate") else data[:-64] + bytes(64))
    kept = snapshot(out/"checkpoint-2")
    res = cli(*train_cmd(env, out, "--resume_from_checkpoint=latest"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"checkpoint {out/'checkpoint-4'} is damaged ({name} does not match its checksum)" in res.stdout
    assert f"resumed from {out/'checkpoint-2'} at step 2" in res.stdout
    assert snapshot(out/"checkpoint-2") == kept
    assert tensors_equal(out/LORA, clean_run/LORA)
    for step in (4, 6): assert tensors_equal(out/f"checkpoint-{step}"/LORA, clean_run/f"checkpoint-{step}"/LORA)
    assert json.loads((out/"loss.json").read_text()) == json.loads((clean_run/"loss.json").read_text())   # steps 1-6


def test_every_checkpoint_damaged(clean_run, tmp_path, env):
    out = stopped_copy(clean_run, tmp_path/"run")
    for step in (2, 4): (out/f"checkpoint-{step}"/LORA).write_bytes(b"")
    before = snapshot(out)
    res = cli(*train_cmd(env, out, "--resume_from_checkpoint=latest"))
    error_line(res, 1, f"every checkpoint in '{out}' is damaged", "another --output_dir")
    assert snapshot(out) == before


@pytest.mark.parametrize("flag, made, given", [("--rank=8", "--rank=4", "--rank=8"), ("--resolution=32", "--resolution=64", "--resolution=32")])
def test_resume_with_other_shapes_is_refused(clean_run, tmp_path, env, flag, made, given):
    out = stopped_copy(clean_run, tmp_path/"run")
    before = snapshot(out)
    res = cli(*train_cmd(env, out, "--resume_from_checkpoint=latest", flag))
    error_line(res, 2, f"checkpoint '{out/'checkpoint-4'}' was made with {made}, but this run has {given}", "another --output_dir")
    assert snapshot(out) == before


def test_resume_with_another_base_model_is_refused(clean_run, tmp_path, env):
    other = make_tiny_model(tmp_path/"other-model", seed=1)
    out = stopped_copy(clean_run, tmp_path/"run")
    before = snapshot(out)
    cmd = [a if not a.startswith("--pretrained_model_name_or_path=") else f"--pretrained_model_name_or_path={other}"
           for a in train_cmd(env, out, "--resume_from_checkpoint=latest")]
    res = cli(*cmd)
    error_line(res, 2, f"was made with --pretrained_model_name_or_path={Path(env['model']).resolve()}",
               f"but this run has --pretrained_model_name_or_path={other.resolve()}", "resume with the checkpoint's settings")
    assert snapshot(out) == before


# --- 6. a cache that checks itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "overwrite_same_size"])
def test_damaged_cache_shard_is_rebuilt(clean_run, tmp_path, env, damage):
    shard, = (env["cache"]/"latents").glob("*/latents-00000.safetensors")
    good = shard.read_bytes()
    shard.write_bytes(good[:len(good)//3] if damage == "truncate" else good[:-64] + bytes(64))
    out = tmp_path/"o"
    res = cli(*train_cmd(env, out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"latent cache: {shard} is damaged" in res.stdout and "rebuilding it" in res.stdout
    assert shard.read_bytes() == good                          # rebuilt to the clean cache's bytes
    assert tensors_equal(out/LORA, clean_run/LORA)             # and the LoRA is the clean run's
    assert json.loads((shard.parent/"index.json").read_text())["complete"] is True
