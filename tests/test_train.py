"Training end to end through its three ways in: the classic command, resume after a kill, two processes, logs, secrets."
import json, math, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from loranb.data import make_shapes_folder
from loranb.models import tiny_model_path

TINY_FLAGS = ["--resolution=64", "--report_to=none", "--lr_warmup_steps=0"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_folder(tmp_path_factory.mktemp("data")/"shapes", n=5)


@pytest.fixture(scope="module")
def model():
    return str(tiny_model_path())


def run(cmd, env=None, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_classic_command_unchanged(tmp_path, shapes, model):
    "The seed's README command, script name replaced, with a local model and data: fp16 base, fp32 LoRA, finite loss."
    one = tmp_path/"one"; one.mkdir()
    (one/"metadata.jsonl").write_text((shapes/"metadata.jsonl").read_text().splitlines()[0] + "\n")
    (one/"0000.png").write_bytes((shapes/"0000.png").read_bytes())
    out = tmp_path/"sd-naruto-model-lora"
    run(["accelerate", "launch", "--mixed_precision=fp16", "--num_processes=1", "--num_machines=1", "--dynamo_backend=no",
         "-m", "loranb.train",
         f"--pretrained_model_name_or_path={model}", f"--dataset_name={one}", "--caption_column=text",
         "--resolution=512", "--random_flip", "--train_batch_size=1", "--num_train_epochs=100", "--checkpointing_steps=5000",
         "--learning_rate=1e-04", "--lr_scheduler=constant", "--lr_warmup_steps=0", "--seed=42",
         f"--output_dir={out}", "--validation_prompt=cute dragon creature", "--report_to=wandb",
         # the classic flags end here; fp16 at 512 px is slow on a CPU, so the run is cut to a CPU's budget
         "--max_train_steps=2", "--num_validation_images=1", "--validation_inference_steps=2"],
        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}, cwd=tmp_path)
    losses = json.loads((out/"loss.json").read_text())
    assert len(losses) == 2 and all(math.isfinite(l) for _, l in losses)
    state = load_file(out/"pytorch_lora_weights.safetensors")
    assert {v.dtype for v in state.values()} == {torch.float32}
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora.up" in k)   # B moved away from zero: it trained
    assert {"step-1.png", "step-2.png"} <= {p.name for p in (out/"samples").iterdir()}   # every epoch
    runs = list((tmp_path/"wandb").glob("offline-run-*"))
    assert runs, "wandb offline run missing"
    assert any(b"loss" in f.read_bytes() for f in runs[0].rglob("*.wandb")), "wandb run holds no loss"
    assert (out/"samples"/"base-vs-lora.png").exists()


def test_fp16_precision_from_launcher(tmp_path, shapes):
    "Launcher fp16 and no flag: the precision the loop uses is fp16, with LoRA and Adam state in fp32."
    from loranb.train import TrainConfig, train
    os.environ["ACCELERATE_MIXED_PRECISION"] = "fp16"
    try:
        r = train(TrainConfig(train_data_dir=str(shapes), resolution=64, train_batch_size=2, max_train_steps=8,
                              output_dir=str(tmp_path/"o"), report_to="none", lr_warmup_steps=0), progress=False)
    finally: del os.environ["ACCELERATE_MIXED_PRECISION"]
    assert r.dtypes == dict(base="torch.float16", lora="torch.float32", optimizer_state="torch.float32")
    assert all(math.isfinite(l) for _, l in r.losses)


def test_flag_and_launcher_disagree(tmp_path, shapes):
    res = subprocess.run([sys.executable, "-m", "loranb.train", f"--train_data_dir={shapes}", "--mixed_precision=bf16",
                          f"--output_dir={tmp_path}"], capture_output=True, text=True,
                         env={**os.environ, "ACCELERATE_MIXED_PRECISION": "fp16"})
    assert res.returncode != 0 and "disagrees with the launcher's mixed_precision=fp16" in res.stderr


def test_bad_flags_are_argparse_errors(tmp_path):
    res = subprocess.run(["loranb-train", "--no_such_flag=1"], capture_output=True, text=True)
    assert res.returncode == 2 and "unrecognized arguments: --no_such_flag=1" in res.stderr
    res = subprocess.run(["loranb-train", "--train_batch_size=two"], capture_output=True, text=True)
    assert res.returncode == 2 and "invalid int value: 'two'" in res.stderr


def lora_tensors(folder):
    return load_file(Path(folder)/"pytorch_lora_weights.safetensors")


def kill_after_checkpoint(flags, out, step):
    "Start `loranb.train` with `flags` into `out` and kill -9 it once checkpoint-`step` is written, before the run ends."
    proc = subprocess.Popen([sys.executable, "-m", "loranb.train", *flags, f"--output_dir={out}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out/f"checkpoint-{step}"/"training_state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before a mid-run checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert not (out/"pytorch_lora_weights.safetensors").exists(), "the run finished before it was killed"


def test_resume_after_kill_is_bitwise_identical(tmp_path, shapes, model):
    "Kill a run mid-epoch, resume from 'latest': the final LoRA equals an uninterrupted run's, bit for bit (CPU, fp32)."
    flags = [f"--pretrained_model_name_or_path={model}", f"--train_data_dir={shapes}", "--train_batch_size=2",
             "--max_train_steps=60", "--checkpointing_steps=5", "--random_flip", "--learning_rate=1e-3", "--seed=3",
             "--snr_gamma=5", "--noise_offset=0.05", "--lora_dropout=0.1"] + TINY_FLAGS
    full = tmp_path/"full"
    run([sys.executable, "-m", "loranb.train", *flags, f"--output_dir={full}"])
    killed = tmp_path/"killed"
    kill_after_checkpoint(flags, killed, 10)
    steps = sorted(int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*"))
    assert 10 <= steps[-1] < 60
    res = run([sys.executable, "-m", "loranb.train", *flags, f"--output_dir={killed}", "--resume_from_checkpoint=latest"])
    assert "resumed from" in res.stdout
    a, b = lora_tensors(full), lora_tensors(killed)
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k
    assert json.loads((full/"loss.json").read_text()) == json.loads((killed/"loss.json").read_text())   # continuous across the resume


def test_checkpoint_is_loadable_and_pruned(tmp_path, shapes, model):
    out = tmp_path/"o"
    run([sys.executable, "-m", "loranb.train", f"--pretrained_model_name_or_path={model}", f"--train_data_dir={shapes}",
         "--train_batch_size=2", "--max_train_steps=8", "--checkpointing_steps=2", "--checkpoints_total_limit=2",
         f"--output_dir={out}", *TINY_FLAGS])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    # diffusers before 0.40 asks for weight_name when offline (HF_HUB_OFFLINE=1), even for a local folder
    pipe.load_lora_weights(out/"checkpoint-6", weight_name="pytorch_lora_weights.safetensors")
    assert "default_0" in pipe.unet.peft_config


def test_two_process_cpu_run(tmp_path, shapes, model):
    "torchrun with two CPU processes (gloo): one set of outputs, the data split between the processes."
    out = tmp_path/"ddp"
    res = run(["torchrun", "--nproc_per_node=2", "--master_port=29533", "-m", "loranb.train",
               f"--pretrained_model_name_or_path={model}", f"--train_data_dir={shapes}", "--train_batch_size=1",
               "--num_train_epochs=2", "--checkpointing_steps=0", f"--output_dir={out}", *TINY_FLAGS],
              env={"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})
    losses = json.loads((out/"loss.json").read_text())
    assert len(losses) == 2 * 3          # 5 rows over 2 processes: 3 batches each per epoch, 2 epochs
    assert (out/"pytorch_lora_weights.safetensors").exists() and (out/"README.md").exists()
    assert res.stdout.count("LoRA saved to") == 1   # one process saves and reports


def test_tensorboard_logs_and_secret_token(tmp_path, shapes, model):
    "Tensorboard holds the loss; the Hub token appears in no file the run writes; push offline fails after saving."
    token = "hf_DoNotLeakThisToken123"
    out = tmp_path/"tb"
    res = subprocess.run([sys.executable, "-m", "loranb.train", f"--pretrained_model_name_or_path={model}",
                          f"--train_data_dir={shapes}", "--train_batch_size=2", "--max_train_steps=4", "--checkpointing_steps=2",
                          "--resolution=64", "--lr_warmup_steps=0", "--report_to=tensorboard", "--validation_prompt=a red circle",
                          "--validation_steps=2", "--validation_inference_steps=2", "--num_validation_images=2",
                          "--push_to_hub", f"--hub_token={token}", f"--output_dir={out}"], capture_output=True, text=True)
    assert res.returncode != 0 and "push_to_hub: the Hub cannot be reached" in res.stderr
    assert (out/"pytorch_lora_weights.safetensors").exists() and (out/"README.md").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = [p for p in (out/"logs").rglob("events.out.tfevents.*")]
    assert events
    tags = set()
    for e in events:
        acc = EventAccumulator(str(e)); acc.Reload(); tags |= set(acc.Tags()["scalars"]) | set(acc.Tags()["images"])
    assert {"loss", "lr", "grad_norm"} <= tags and any("validation" in t for t in tags)
    for f in out.rglob("*"):
        if f.is_file(): assert token.encode() not in f.read_bytes(), f
    assert token not in res.stdout


def test_nonfinite_losses_stop_the_run(tmp_path, shapes, monkeypatch):
    import loranb.train as lt
    real = lt.diffusion_loss
    calls = {"n": 0}
    def sometimes_nan(*a, **kw):
        calls["n"] += 1
        loss = real(*a, **kw)
        return loss * float("nan") if calls["n"] > 4 else loss
    monkeypatch.setattr(lt, "diffusion_loss", sometimes_nan)
    cfg = lt.TrainConfig(train_data_dir=str(shapes), resolution=64, train_batch_size=1, max_train_steps=50,
                         checkpointing_steps=2, output_dir=str(tmp_path/"nan"), report_to="none", max_nonfinite_steps=3)
    with pytest.raises(lt.RunError, match="3 non-finite steps in a row") as e:
        lt.train(cfg, progress=False)
    assert "the run is in fp32" in str(e.value) and "--mixed_precision=bf16" not in str(e.value)   # advice fits the precision
    assert sorted(p.name for p in (tmp_path/"nan").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for ckpt in ["checkpoint-2", "checkpoint-4"]:
        assert all(torch.isfinite(v).all() for v in lora_tensors(tmp_path/"nan"/ckpt).values())


def test_bad_data_fails_before_models_load(tmp_path, monkeypatch):
    import loranb.train as lt
    def no_models(*a, **kw): raise AssertionError("a model was loaded before the data was checked")
    monkeypatch.setattr(lt, "load_parts", no_models)
    with pytest.raises(ValueError, match="caption column 'caption' not found"):
        lt.train(lt.TrainConfig(train_data_dir=str(make_shapes_folder(tmp_path/"s", n=2)), caption_column="caption",
                                output_dir=str(tmp_path/"o"), report_to="none"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    "Wide, tall and square pictures with comma-separated tag captions."
    from PIL import Image, ImageDraw
    folder, rows = tmp_path_factory.mktemp("mixed"), []
    colours = {'red': (220, 40, 40), 'blue': (40, 80, 220), 'green': (40, 170, 60)}
    for k in range(9):
        size = [(128, 64), (64, 128), (64, 64)][k % 3]; name = list(colours)[k % 3]
        img = Image.new('RGB', size, (245, 245, 245)); ImageDraw.Draw(img).ellipse([4, 4, 44, 44], fill=colours[name])
        img.save(folder/f'{k}.png'); rows.append(json.dumps({'file_name': f'{k}.png', 'text': f'{name}, circle, off centre, {size[0]}x{size[1]}'}))
    (folder/'metadata.jsonl').write_text('\n'.join(rows) + '\n')
    return folder


BUCKETS = ["--enable_bucket", "--min_bucket_reso=32", "--max_bucket_reso=128", "--bucket_reso_steps=8"]


def test_everything_on_survives_a_kill(tmp_path, mixed, model):
    "Buckets, varied captions, EMA and a held-out loss all on: kill -9, resume, and the average, the raw weights and val_loss equal an uninterrupted run's."
    flags = [f"--pretrained_model_name_or_path={model}", f"--train_data_dir={mixed}", "--train_batch_size=2",
             "--max_train_steps=30", "--checkpointing_steps=5", "--random_flip", "--learning_rate=1e-3", "--seed=4",
             *BUCKETS, "--shuffle_caption", "--keep_tokens=1", "--caption_tag_dropout_rate=0.2", "--caption_dropout_rate=0.2",
             "--caption_prefix=sks", "--use_ema", "--ema_decay=0.9", "--validation_split=0.2", "--validation_steps=5",
             "--lora_dropout=0.1", "--resolution=64", "--lr_warmup_steps=0", "--report_to=tensorboard"]
    full, killed = tmp_path/"full", tmp_path/"killed"
    res = run([sys.executable, "-m", "loranb.train", *flags, f"--output_dir={full}"])
    assert "aspect-ratio buckets" in res.stdout and "88 x 40" in res.stdout   # the histogram: 128x64 pictures go to 88x40
    kill_after_checkpoint(flags, killed, 10)
    run([sys.executable, "-m", "loranb.train", *flags, f"--output_dir={killed}", "--resume_from_checkpoint=latest"])
    for name in ["pytorch_lora_weights.safetensors", "pytorch_lora_weights_raw.safetensors"]:
        a, b = load_file(full/name), load_file(killed/name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    average, raw = load_file(full/"pytorch_lora_weights.safetensors"), load_file(full/"pytorch_lora_weights_raw.safetensors")
    assert any(not torch.equal(average[k], raw[k]) for k in raw)          # the average is not the last weights
    assert json.loads((full/"loss.json").read_text()) == json.loads((killed/"loss.json").read_text())
    val = json.loads((full/"val_loss.json").read_text())
    assert val == json.loads((killed/"val_loss.json").read_text())        # identical at every step, resumed or not
    assert [v[0] for v in val] == list(range(5, 31, 5)) and all(math.isfinite(x) for v in val for x in v[1:])
    assert (full/"loss.png").exists() and "moving average" in (full/"README.md").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logged = {}
    for e in (killed/"logs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(e)); acc.Reload()
        if "val_loss" in acc.Tags()["scalars"]: logged.update({ev.step: ev.value for ev in acc.Scalars("val_loss")})
    assert logged and all(abs(logged[s] - v) < 1e-6 for s, v, *_ in val if s in logged)


def test_two_process_buckets_and_wide_samples(tmp_path, mixed, model):
    "torchrun, two processes, buckets: every bucket batch cut between them; then a wide sample from the result."
    from loranb.data import bucket_resolutions, nearest_bucket
    from loranb.train import BucketBatchSampler
    from PIL import Image
    out = tmp_path/"ddp"
    run(["torchrun", "--nproc_per_node=2", "--master_port=29534", "-m", "loranb.train", f"--pretrained_model_name_or_path={model}",
         f"--train_data_dir={mixed}", "--train_batch_size=1", "--num_train_epochs=2", "--checkpointing_steps=0", *BUCKETS,
         f"--output_dir={out}", *TINY_FLAGS], env={"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})
    resos = bucket_resolutions(64, 32, 128, 8)
    sizes = [nearest_bucket(Image.open(mixed/f'{k}.png').size, resos) for k in range(9)]
    per_epoch = len(BucketBatchSampler(sizes, 1, 0, num_processes=2))
    # 3 buckets of 3 rows: a global batch of 2 rows each (one a process); the third row of each waits for another epoch's shuffle
    assert per_epoch == 3 and len(json.loads((out/"loss.json").read_text())) == 2 * per_epoch
    from loranb.hub import sample_cli
    sample_cli(['--lora', str(out), '--prompt', 'red, circle', '--steps', '2', '--width', '96', '--height', '48', '--output', str(tmp_path/'wide.png')])
    assert Image.open(tmp_path/'wide.png').size == (96, 48)


def test_bucket_flags_that_cannot_work(tmp_path, mixed):
    from loranb.models import InputError
    from loranb.train import TrainConfig, check_config
    base = dict(train_data_dir=str(mixed), resolution=64, enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128, output_dir=str(tmp_path/'o'))
    for extra, words in [(dict(gradient_accumulation_steps=2), "with --enable_bucket is not supported"),
                         (dict(bucket_reso_steps=12), "not a multiple of 8"), (dict(min_bucket_reso=256), "above --max_bucket_reso")]:
        with pytest.raises(InputError, match=words): check_config(TrainConfig(**{**base, 'bucket_reso_steps': 8, **extra}))


def test_validation_loss_is_the_same_for_the_same_weights(shapes, model):
    "Two evaluations of the same weights give the same number; it changes when the weights do."
    from loranb.models import load_parts
    from loranb.data import DataSettings, build_dataset
    from loranb.train import TrainConfig, validation_loss, split_rows
    c = TrainConfig(train_data_dir=str(shapes), resolution=64, seed=1)
    parts = load_parts(model)
    data = build_dataset(DataSettings(train_data_dir=str(shapes), resolution=64, center_crop=True), parts.tokenizer)
    train_rows, held = split_rows(data, 0.4, seed=1)
    assert len(held) == 2 and len(train_rows) == 3 and not set(held.rows) & set(train_rows.rows)
    assert len(held.report.sizes) == 2 and len(train_rows.report.sizes) == 3   # each part knows its own images' sizes
    ab = parts.noise_scheduler.alphas_cumprod
    v1 = validation_loss(parts.unet, held, parts.vae, parts.text_encoder, ab, c)
    v2 = validation_loss(parts.unet, held, parts.vae, parts.text_encoder, ab, c)
    assert v1 == v2 and math.isfinite(v1)
    with torch.no_grad(): parts.unet.conv_out.weight.mul_(1.5)
    assert validation_loss(parts.unet, held, parts.vae, parts.text_encoder, ab, c) != v1
