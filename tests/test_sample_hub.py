"The sampling and export commands, end to end on a LoRA trained by loranb-train."
import subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from safetensors.torch import load_file
from loranb.data import make_shapes_folder
from loranb.models import tiny_model_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    shapes = make_shapes_folder(root/"shapes", n=4)
    out = root/"lora"
    subprocess.run(["loranb-train", f"--pretrained_model_name_or_path={tiny_model_path()}", f"--train_data_dir={shapes}",
                    "--resolution=64", "--train_batch_size=4", "--max_train_steps=30", "--learning_rate=1e-2",
                    "--lr_warmup_steps=0", "--report_to=none", "--checkpointing_steps=0", "--rank=4", "--lora_alpha=8",
                    "--train_text_encoder", f"--output_dir={out}"], check=True, capture_output=True)
    return out


def test_sample_cli_grid_and_scale_zero(trained, tmp_path):
    base = dict(prompt="a red circle", steps="6", seed="1")
    def sample(name, scale, n="1"):
        res = subprocess.run(["loranb-sample", "--lora", str(trained), "--prompt", base["prompt"], "--steps", base["steps"],
                              "--seed", base["seed"], "--scale", scale, "--n", n, "--output", str(tmp_path/name)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        return np.asarray(Image.open(tmp_path/name), dtype=int)
    grid = sample("grid.png", "1.0", n="4")
    assert grid.shape == (64, 256, 3)
    lora, off = sample("lora.png", "1.0"), sample("off.png", "0")
    assert np.abs(lora - off).max() > 0                      # the LoRA changes the image
    from diffusers import StableDiffusionPipeline, DDIMScheduler
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_path(), safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config); pipe.set_progress_bar_config(disable=True)
    plain = pipe("a red circle", num_inference_steps=6, guidance_scale=7.5, height=64, width=64,
                 generator=torch.Generator().manual_seed(1)).images[0]
    assert np.abs(np.asarray(plain, dtype=int) - off).max() <= 1   # scale 0 is the base model's image


def test_export_kohya_and_fuse(trained, tmp_path):
    res = subprocess.run(["loranb-export", str(trained), "--to", "kohya", "--output", str(tmp_path/"k.safetensors")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    keys = load_file(str(tmp_path/"k.safetensors"))
    assert any(k.startswith("lora_te_text_model_") for k in keys) and not any(k.startswith("lora_te1_") for k in keys)
    assert {v.item() for k, v in keys.items() if k.endswith(".alpha")} == {8.0}
    res = subprocess.run(["loranb-export", str(trained), "--fuse", str(tmp_path/"fused")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path/"fused"/"model_index.json").exists()
    res = subprocess.run(["loranb-export", str(trained)], capture_output=True, text=True)
    assert res.returncode == 2 and "nothing to do" in res.stderr


def test_saved_lora_carries_only_portable_settings(trained):
    "Older PEFT releases (Colab's) reject LoraConfig fields they do not know, so the file keeps only those all of them read."
    import json
    from safetensors import safe_open
    from loranb.lora import PORTABLE_LORA_FIELDS
    with safe_open(str(trained/"pytorch_lora_weights.safetensors"), "pt") as f: meta = json.loads(f.metadata()["lora_adapter_metadata"])
    fields = {k.split(".", 1)[1] for k in meta}
    assert fields <= set(PORTABLE_LORA_FIELDS), fields - set(PORTABLE_LORA_FIELDS)
    assert meta["unet.lora_alpha"] == 8 and meta["unet.r"] == 4 and meta["text_encoder.r"] == 4
    from loranb.world import rings_lora_path      # the shipped ring LoRA too
    with safe_open(str(rings_lora_path()/"pytorch_lora_weights.safetensors"), "pt") as f: shipped = json.loads(f.metadata()["lora_adapter_metadata"])
    assert {k.split(".", 1)[1] for k in shipped} <= set(PORTABLE_LORA_FIELDS)
