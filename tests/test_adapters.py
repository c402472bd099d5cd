"Every adapter kind through loranb-train: exact resume, files other tools load, loranb's loader equal to the trained model, several LoRAs at once."
import shutil
import pytest, torch
from safetensors.torch import load_file
from loranb.data import make_shapes_folder
from loranb.lora import LORA_FILE
from loranb.models import load_parts, TINY, tiny_model_path, InputError
from loranb.train import (TrainConfig, train, check_config, add_adapter, run_adapter_config, load_adapter_state, ADAPTER_STATE,
                          LYCORIS_KEYS)
from loranb.hub import load_pipeline, to_kohya, sample_cli

KINDS = {'lora': {}, 'rslora': dict(use_rslora=True, rank=4, lora_alpha=8), 'pissa': dict(init_lora_weights='pissa'),
         'olora': dict(init_lora_weights='olora'), 'dora': dict(adapter='dora'), 'loha': dict(adapter='loha', train_text_encoder=True),
         'lokr': dict(adapter='lokr')}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    tiny_model_path()
    return make_shapes_folder(tmp_path_factory.mktemp("data")/"shapes", n=4)


def _config(shapes, out, **kw):
    base = dict(train_data_dir=str(shapes), resolution=64, train_batch_size=2, max_train_steps=6, learning_rate=1e-2,
                lr_warmup_steps=0, checkpointing_steps=3, report_to='none', seed=3, random_flip=True, rank=2, output_dir=str(out))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(shapes, tmp_path_factory):
    "Each kind trained 6 steps (checkpoints at 3 and 6), and the same run stopped at step 3 and resumed."
    root, done = tmp_path_factory.mktemp("kinds"), {}
    for name, extra in KINDS.items():
        whole = train(_config(shapes, root/f'{name}-whole', **extra), progress=False)
        stopped = root/f'{name}-stopped'; shutil.copytree(whole.output_dir, stopped)
        for f in ['checkpoint-6', LORA_FILE, 'loss.json']: shutil.rmtree(stopped/f) if (stopped/f).is_dir() else (stopped/f).unlink()
        resumed = train(_config(shapes, stopped, resume_from_checkpoint='latest', **extra), progress=False)
        done[name] = (whole, resumed, _config(shapes, whole.output_dir, **extra))
    return done


@pytest.mark.parametrize('name', list(KINDS))
def test_resume_is_bitwise(runs, name):
    whole, resumed, _ = runs[name]
    a, b = load_file(whole.lora_path), load_file(resumed.lora_path)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    s1, s2 = load_file(whole.output_dir/'checkpoint-6'/ADAPTER_STATE), load_file(resumed.output_dir/'checkpoint-6'/ADAPTER_STATE)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert whole.losses == resumed.losses and len(whole.losses) == 6


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 700]), torch.randn(2, 77, 32, generator=g)


@torch.no_grad()
def _unet_out(unet):
    x, t, text = _inputs()
    return unet(x, t, encoder_hidden_states=text).sample


def _trained(c, ckpt):
    "The trained model as it was in memory at the end: a fresh base, the same adapter (the same init), the final tensors."
    parts = load_parts(TINY, dtype=torch.float32)
    torch.manual_seed(c.seed)
    unet = add_adapter(parts.unet, run_adapter_config(c, c.lora_target_modules.split(',')))
    load_adapter_state(unet, ckpt/ADAPTER_STATE, 'unet')
    return unet


@pytest.mark.parametrize('name', list(KINDS))
def test_loaded_file_equals_trained_model(runs, name):
    whole, _, c = runs[name]
    trained = _unet_out(_trained(c, whole.output_dir/'checkpoint-6'))
    base = _unet_out(load_parts(TINY, dtype=torch.float32).unet)
    loaded = _unet_out(load_pipeline(str(whole.output_dir)).unet)
    assert (trained - base).abs().max() > 1e-3            # the adapter changed something
    assert (loaded - trained).abs().max() <= 1e-5


def test_file_layouts(runs):
    loha, lokr, dora = (load_file(runs[k][0].lora_path) for k in ('loha', 'lokr', 'dora'))
    assert all(k.startswith(('lora_unet_', 'lora_te_')) for k in {**loha, **lokr})
    assert {k.rpartition('.')[2] for k in loha} == {'hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b', 'alpha'}
    assert {k.rpartition('.')[2] for k in lokr} <= set(LYCORIS_KEYS) | {'alpha'} and any('.lokr_w1' in k for k in lokr)
    assert any(k.startswith('lora_te_text_model_encoder_layers_') for k in loha)   # the text encoder, in kohya's names
    assert any(k.endswith('lora_magnitude_vector') for k in dora)
    card = (runs['dora'][0].output_dir/'README.md').read_text()
    assert 'DoRA weights (rank 2' in card and 'dora' in card
    assert 'rank-4 LoRA on the original base weights' in (runs['pissa'][0].output_dir/'README.md').read_text()


def test_dora_loads_in_diffusers(runs):
    "DoRA in diffusers' layout is read by diffusers' own load_lora_weights, to the trained model's outputs."
    from diffusers import StableDiffusionPipeline
    whole, _, c = runs['dora']
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_path()), torch_dtype=torch.float32, safety_checker=None)
    pipe.load_lora_weights(str(whole.output_dir), weight_name=LORA_FILE)
    assert (_unet_out(pipe.unet) - _unet_out(_trained(c, whole.output_dir/'checkpoint-6'))).abs().max() <= 1e-5


@pytest.mark.parametrize('name', ['loha', 'lokr', 'dora', 'rslora', 'pissa'])
def test_kohya_export_covers_every_kind(runs, name):
    sd = to_kohya(str(runs[name][0].output_dir))
    assert all(k.startswith(('lora_unet_', 'lora_te_')) for k in sd) and any(k.endswith('.alpha') for k in sd)
    if name == 'dora': assert any(k.endswith('.dora_scale') for k in sd)
    if name in ('loha', 'lokr'): assert any(k.rpartition('.')[2] in LYCORIS_KEYS for k in sd)


def test_bad_adapter_flags(shapes, tmp_path):
    for kw, words in [(dict(adapter='vera'), '--adapter=vera unknown'), (dict(init_lora_weights='loftq'), '--init_lora_weights=loftq unknown'),
                      (dict(adapter='lokr', use_rslora=True), '--use_rslora applies to --adapter lora or dora'),
                      (dict(adapter='dora', init_lora_weights='pissa'), 'works with --adapter lora, not dora')]:
        with pytest.raises(InputError, match=words.replace('-', r'\-')): check_config(_config(shapes, tmp_path/'x', **kw))
    assert not (tmp_path/'x').exists()


def test_several_loras_equal_their_merge(runs, tmp_path):
    "Two LoRAs loaded at weight 1 each give the UNet output of their exact merge."
    from loranb.beyond import merge_loras
    a, b = (str(runs[k][0].output_dir) for k in ('lora', 'rslora'))
    merge_loras([(a, 1.0), (b, 1.0)], tmp_path/'merged')
    both = _unet_out(load_pipeline(loras=[(a, 1.0), (b, 1.0)]).unet)
    merged = _unet_out(load_pipeline(str(tmp_path/'merged')).unet)
    one = _unet_out(load_pipeline(a).unet)
    assert (both - one).abs().max() > 1e-3 and (both - merged).abs().max() <= 1e-5
    merge_loras([(a, 0.5), (b, -1.0)], tmp_path/'weighted')   # a weight, and a weight below 0, given as 'PATH:WEIGHT'
    weighted = _unet_out(load_pipeline(loras=[f'{a}:0.5', f'{b}:-1']).unet)
    assert (weighted - _unet_out(load_pipeline(str(tmp_path/'weighted')).unet)).abs().max() <= 1e-5


def test_sample_with_two_adapters(runs, tmp_path):
    out = tmp_path/'two.png'
    sample_cli(['--lora', f"{runs['loha'][0].output_dir}:0.7", '--lora', f"{runs['lora'][0].output_dir}:0.5", '--prompt', 'a red circle',
                '--steps', '2', '--resolution', '64', '--output', str(out)])
    assert out.exists()


def test_extract_recovers_fused_rank4_lora(tmp_path):
    "A rank-4 LoRA fused into the base is recovered at rank 4 by extraction, to a relative error of Delta W <= 1e-4."
    from loranb.beyond import extract_lora, lora_deltas
    from loranb.lora import add_lora, save_lora
    torch.manual_seed(0)
    parts = load_parts(TINY, dtype=torch.float32)
    add_lora(parts.unet, r=4)
    for n, p in parts.unet.named_parameters():
        if 'lora_B' in n: torch.nn.init.normal_(p, std=0.3)
    save_lora(tmp_path/'r4', parts.unet)
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_path()), torch_dtype=torch.float32, safety_checker=None)
    pipe.load_lora_weights(str(tmp_path/'r4'), weight_name=LORA_FILE); pipe.fuse_lora(); pipe.unload_lora_weights()
    report = extract_lora(str(tiny_model_path()), pipe.unet, 4, tmp_path/'extracted')
    assert report.rank == 4 and report.error <= 1e-4, report.error
    want, got = lora_deltas(tmp_path/'r4'), lora_deltas(tmp_path/'extracted')
    assert set(want) == set(got)


def test_fuse_a_lycoris_file_at_a_scale(runs, tmp_path):
    "loranb-export --fuse of a LoHa file adds it at --scale, as loading it at that weight does."
    from diffusers import StableDiffusionPipeline
    from loranb.hub import fuse
    loha = str(runs['loha'][0].output_dir)
    fused = StableDiffusionPipeline.from_pretrained(str(fuse(loha, tmp_path/'fused', scale=0.5)), torch_dtype=torch.float32, safety_checker=None)
    half, full = _unet_out(load_pipeline(loras=[(loha, 0.5)]).unet), _unet_out(load_pipeline(loha).unet)
    assert (_unet_out(fused.unet) - half).abs().max() <= 1e-5 and (half - full).abs().max() > 1e-4
