"""Integration tests for loranb.beyond: the variants against PEFT on the world UNet, LyCORIS files, and the merge / resize /
extract command lines against diffusers' own loader and adapter API."""
import copy, math, subprocess, sys
from pathlib import Path

import pytest
import torch
from torch import nn
from fastcore.test import test_eq as assert_eq, test_close as assert_close, test_fail as assert_fail
from safetensors.torch import load_file, save_file

from loranb.train import to_lycoris
from loranb.hub import apply_lycoris
from loranb.beyond import (VARIANTS, LORA_FILE, adapted_weight, add_variant, adapter_params,
                           lora_deltas, lora_factors, merge_loras, resize_lora, main)
from loranb.lora import UNET_ATTENTION, matches
from loranb.world import rings_lora_path

RING = rings_lora_path()
RING_TARGETS = 'to_q,to_k,to_v,to_out.0,proj_in,proj_out,ff.net.0.proj,ff.net.2'   # what the ring LoRA adapts
LAYER = 'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k'               # 64 -> 128, not square


@pytest.fixture(scope='module')
def ring(tmp_path_factory):
    "The shipped ring LoRA, re-saved by an exact one-file merge: same Delta W, metadata every PEFT release reads."
    return merge_loras([(RING, 1.0)], tmp_path_factory.mktemp('ring')/'ring').path


def test_one_file_merge_is_the_same_lora(ring):
    want, got = lora_deltas(RING), lora_deltas(ring)
    assert_eq(set(got), set(want))
    assert max((got[m] - want[m]).abs().max().item() for m in want) <= 1e-6


@pytest.fixture(scope='module')
def world():
    from loranb.models import load_parts, WORLD
    parts = load_parts(WORLD, dtype=torch.float32)
    parts.unet.eval().requires_grad_(False)
    return parts


def _pipe(world, unet=None):
    from diffusers import StableDiffusionPipeline, DDIMScheduler
    from loranb.models import world_model_path
    pipe = StableDiffusionPipeline(vae=world.vae, text_encoder=world.text_encoder, tokenizer=world.tokenizer, unet=unet or world.unet,
                                   scheduler=DDIMScheduler.from_pretrained(world_model_path(), subfolder='scheduler'),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 4, 4, generator=g), torch.tensor([20, 800]), torch.randn(2, 8, 64, generator=g)


def _out(unet, inputs):
    with torch.no_grad(): return unet(*inputs).sample


def _run(*args):
    "Run `python -m loranb.beyond ...` as a user would; return its stdout."
    res = subprocess.run([sys.executable, '-m', 'loranb.beyond', *map(str, args)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('rank', [4, 16])
def test_variant_equals_peft_on_world_layer(world, variant, rank):
    torch.manual_seed(rank)
    unet = add_variant(copy.deepcopy(world.unet), variant, r=rank, alpha=rank / 2, targets=[LAYER], random=True)
    layer = unet.get_submodule(LAYER)
    if variant == 'dora':
        with torch.no_grad(): layer.lora_magnitude_vector['default'].weight.mul_(torch.rand(layer.out_features) + 0.5)
    x = torch.randn(3, 8, 64)
    with torch.no_grad():
        gap = (layer(x) - nn.functional.linear(x, adapted_weight(layer), layer.get_base_layer().bias)).abs().max().item()
    assert gap <= 1e-5, (variant, rank, gap)


@pytest.mark.parametrize('variant', VARIANTS)
def test_parameter_count_matches_peft(world, variant):
    layers = [m for n, m in world.unet.named_modules() if matches(n, UNET_ATTENTION) and isinstance(m, nn.Linear)]
    derived = sum(adapter_params(variant, m.out_features, m.in_features, 8) for m in layers)
    peft = sum(p.numel() for p in add_variant(copy.deepcopy(world.unet), variant, r=8).parameters() if p.requires_grad)
    assert_eq(derived, peft)


@pytest.mark.parametrize('variant,rank', [('loha', 4), ('lokr', 4), ('lokr', 16)])
def test_lycoris_file_round_trip(world, tmp_path, variant, rank):
    from peft import get_peft_model_state_dict
    torch.manual_seed(0)
    adapted = add_variant(copy.deepcopy(world.unet), variant, r=rank, alpha=3, random=True).eval()
    sd = to_lycoris(get_peft_model_state_dict(adapted), rank, alpha=3)
    prefix = 'lora_unet_' + LAYER.replace('.', '_')
    expected = {'loha': ['alpha', 'hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'],
                'lokr': ['alpha', 'lokr_w1', 'lokr_w2'] if rank == 16 else ['alpha', 'lokr_w1', 'lokr_w2_a', 'lokr_w2_b']}[variant]
    assert_eq(sorted(k.split('.', 1)[1] for k in sd if k.startswith(prefix + '.')), expected)
    save_file(sd, str(tmp_path/'adapter.safetensors'))
    plain = copy.deepcopy(world.unet)
    changed = apply_lycoris(plain, tmp_path/'adapter.safetensors')
    assert_eq(len(changed), 56)
    inputs = _inputs()
    assert (_out(adapted, inputs) - _out(plain, inputs)).abs().max().item() <= 1e-5
    assert (_out(world.unet, inputs) - _out(plain, inputs)).abs().max().item() > 1e-3   # the file did change the model


def test_lycoris_bad_key_changes_nothing(world):
    unet = copy.deepcopy(world.unet)
    before = unet.get_submodule(LAYER).weight.clone()
    assert_fail(lambda: apply_lycoris(unet, {'lora_unet_nowhere_to_q.hada_w1_a': torch.zeros(1)}), contains='lora_unet_nowhere_to_q')
    assert torch.equal(unet.get_submodule(LAYER).weight, before)


def test_exact_merge_equals_two_adapters(world, ring, tmp_path):
    "A CLI merge of the ring LoRA and its rank-4 resize equals diffusers' set_adapters at weights 1 and 1 (<= 1e-5)."
    out = _run('resize', RING, '--rank', 4, '--output', tmp_path/'r4')
    assert 'rank 4' in out and 'relative error' in out
    out = _run('merge', f'{RING}:1', f'{tmp_path/"r4"}:1.0', '--output', tmp_path/'merged')
    assert 'rank 12' in out
    from diffusers.utils import logging
    logging.set_verbosity_error()
    pipe = _pipe(world, copy.deepcopy(world.unet))
    inputs = _inputs(1)
    base = _out(pipe.unet, inputs)
    for name, folder in (('a', ring), ('b', tmp_path/'r4'), ('merged', tmp_path/'merged')):
        pipe.load_lora_weights(str(folder), weight_name=LORA_FILE, adapter_name=name)
    pipe.set_adapters(['a', 'b'], [1.0, 1.0]); two = _out(pipe.unet, inputs)
    pipe.set_adapters(['merged']); one = _out(pipe.unet, inputs)
    pipe.set_adapters(['a']); only_a = _out(pipe.unet, inputs)
    assert (one - two).abs().max().item() <= 1e-5
    assert (two - only_a).abs().max().item() > 1e-2 and (two - base).abs().max().item() > 1e-2   # both adapters count


def test_compressed_merge_reports_its_error(tmp_path):
    resize_lora(RING, 2, tmp_path/'r2')
    report = merge_loras([(RING, 1.0), (tmp_path/'r2', -1.0)], tmp_path/'m', rank=2)   # ring minus its rank-2 part: rank 6 left
    ring_r2 = lora_deltas(tmp_path/'r2')
    want = {m: d - ring_r2[m] for m, d in lora_deltas(RING).items()}
    got = lora_deltas(tmp_path/'m')
    measured = math.sqrt(sum((got[m] - want[m]).norm() ** 2 for m in want) / sum(want[m].norm() ** 2 for m in want))
    assert_close(report.error, measured, eps=1e-4)
    assert 0.05 < report.error < 1


def test_extract_recovers_fused_ring_lora(world, ring, tmp_path):
    "Extracting at rank 8 from loranb:world and the world UNet with the ring LoRA fused in (diffusers' fuse_lora) recovers its Delta W."
    pipe = _pipe(world, copy.deepcopy(world.unet))
    pipe.load_lora_weights(str(ring), weight_name=LORA_FILE); pipe.fuse_lora(); pipe.unload_lora_weights()
    pipe.unet.save_pretrained(tmp_path/'fused')
    out = _run('extract', '--base', 'loranb:world', '--tuned', tmp_path/'fused', '--rank', 8, '--targets', RING_TARGETS, '--output', tmp_path/'x')
    assert '84 layers' in out
    got, want = lora_deltas(tmp_path/'x'), lora_deltas(RING)
    assert_eq(set(got), set(want))
    rel = math.sqrt(sum((got[m] - want[m]).norm() ** 2 for m in want) / sum(want[m].norm() ** 2 for m in want))
    assert rel <= 1e-4, rel
    assert (tmp_path/'x'/'README.md').read_text().count('base_model: loranb:world') == 1
    # and diffusers loads what extract wrote, giving the fused model's outputs
    plain = _pipe(world, copy.deepcopy(world.unet))
    plain.load_lora_weights(str(tmp_path/'x'), weight_name=LORA_FILE)
    inputs = _inputs(2)
    assert (_out(plain.unet, inputs) - _out(pipe.unet, inputs)).abs().max().item() <= 1e-4


def test_cli_errors_name_the_problem(tmp_path):
    res = subprocess.run([sys.executable, '-m', 'loranb.beyond', 'resize', str(tmp_path/'missing'), '--rank', '2', '--output', str(tmp_path/'o')],
                         capture_output=True, text=True)
    assert res.returncode == 2 and 'missing' in res.stderr and 'Traceback' not in res.stderr, res.stderr[-2000:]
    with pytest.raises(SystemExit): main(['frobnicate'])
    from loranb.beyond import resize_cli
    # what the loranb-resize entry point runs: None, so that the console script exits 0; --out is an alias of --output
    assert resize_cli([str(RING), '--rank', '3', '--out', str(tmp_path/'r3')]) is None
    assert_eq(len(lora_factors(tmp_path/'r3')[LAYER][0]), 3)
    assert_fail(lambda: add_variant(nn.Linear(4, 4), 'lorb'), contains="unknown adapter 'lorb'")


@pytest.mark.parametrize('rank', [4, 16])
def test_lokr_alpha_as_diffusers_reads_it(rank):
    "diffusers' own LyCORIS LoKr reader (`_bake_lokr_alpha_`) turns our file into the Delta W PEFT computes."
    conv = pytest.importorskip('diffusers.loaders.lora_conversion_utils')
    if not hasattr(conv, '_bake_lokr_alpha_'): pytest.skip('this diffusers release has no LyCORIS LoKr reader')
    from peft import get_peft_model_state_dict

    class Block(nn.Module):
        def __init__(self): super().__init__(); self.to_q = nn.Linear(64, 128)
    torch.manual_seed(0)
    model = add_variant(Block(), 'lokr', r=rank, alpha=3, targets=['to_q'], random=True)
    sd = to_lycoris(get_peft_model_state_dict(model), rank, alpha=3, prefix='')
    conv._bake_lokr_alpha_(sd)
    assert not any(k.endswith('.alpha') for k in sd)
    w1 = sd['to_q.lokr_w1']
    w2 = sd['to_q.lokr_w2'] if 'to_q.lokr_w2' in sd else sd['to_q.lokr_w2_a'] @ sd['to_q.lokr_w2_b']
    assert_close(torch.kron(w1, w2), model.to_q.get_delta_weight('default').detach(), eps=1e-6)
