"The tiny model from the command line, loaded by plain diffusers as any SD v1 folder."
import hashlib, subprocess, sys
from pathlib import Path
import torch
from diffusers import StableDiffusionPipeline


def sha(path): return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_cli_writes_a_pipeline_that_diffusers_runs(tmp_path):
    out = tmp_path/"t"
    res = subprocess.run(["loranb-tiny-model", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (out/"model_index.json").exists()
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == 32
    assert pipe.tokenizer.model_max_length == 77


def test_seed_controls_the_weights(tmp_path):
    for name, seed in [("a", "0"), ("b", "0"), ("c", "1")]:
        subprocess.run(["loranb-tiny-model", str(tmp_path/name), "--seed", seed], check=True, capture_output=True)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert sha(tmp_path/"a"/unet) == sha(tmp_path/"b"/unet)
    assert sha(tmp_path/"a"/unet) != sha(tmp_path/"c"/unet)


def test_cli_rejects_bad_arguments():
    res = subprocess.run(["loranb-tiny-model", "x", "--seed", "abc"], capture_output=True, text=True)
    assert res.returncode == 2 and "invalid int value: 'abc'" in res.stderr
