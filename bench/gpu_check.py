"""The GPU check: one script that measures what a Colab T4 user and a big-GPU user depend on, in a few minutes.

    python bench/gpu_check.py                      # on a CUDA GPU: full-size SD v1 (random weights), 512 px
    python bench/gpu_check.py --dry                # on a CPU: the same code paths on the tiny model, 64 px, seconds

Sections (each training step is loranb's: cached latents, LoRA rank 4 on the UNet's attention, AdamW, clipping):
  fp16_b1      fp16, batch 1: s/step and peak CUDA memory (target <= 6 GiB: under half a 15 GiB T4)
  bf16_b8      bf16, batch 8: s/step and MFU (target >= 40% on an H100/H200-class GPU)
  adam8bit     fp16, batch 1, bitsandbytes' 8-bit AdamW (skipped where bitsandbytes does not import)
  colab_path   the Colab lesson's code, end to end at a small step count: a model folder saved in the fp16 variant and
               loaded with variant='fp16', the run folder keyed by model and settings, the steady-state probe, the
               session plan, then `train` with the latent cache, the VAE and text encoder offloaded to the CPU while
               the UNet trains and brought back for a validation sample; peak CUDA memory of that run

Writes one JSON file (--out) and prints a Markdown table. Speed is reported, never asserted; targets are marked.
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _train_step(args, timeout=600):
    "One configuration of bench/train_step.py in its own process (its own peak memory); its JSON result."
    cmd = [sys.executable, str(HERE/'train_step.py'), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return dict(error=(out.stderr.strip().splitlines() or ['failed'])[-1], command=' '.join(cmd[1:]))
    return json.loads(next(l for l in out.stdout.splitlines() if l.startswith('{')))


def _bitsandbytes():
    "None if bitsandbytes imports with CUDA, else the reason it cannot be used."
    if not torch.cuda.is_available(): return 'no CUDA GPU'
    try: import bitsandbytes  # noqa: F401
    except Exception as e: return f'bitsandbytes does not import ({type(e).__name__}: {e})'.splitlines()[0]
    return None


def make_random_folder(out_dir, model='sd1', variant='fp16'):
    "A diffusers folder of SD v1 with random weights (or the tiny model), saved as `variant` weight files."
    from diffusers import StableDiffusionPipeline, PNDMScheduler
    from loranb.models import sd1_random, save_clip_tokenizer, learn_bpe, default_captions, load_parts, SD1_SCHEDULE
    if model == 'tiny':
        p = load_parts('loranb:tiny'); unet, vae, te, tok = p.unet, p.vae, p.text_encoder, p.tokenizer
    else:
        m = sd1_random('cpu'); unet, vae, te = m['unet'], m['vae'], m['text_encoder']
        tok = save_clip_tokenizer(*learn_bpe(default_captions()), Path(out_dir)/'tokenizer')
    scheduler = PNDMScheduler(**SD1_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if variant == 'fp16': pipe.to(torch.float16)
    pipe.save_pretrained(out_dir, variant=variant)
    return Path(out_dir)


def colab_path(dry, steps):
    "The Colab lesson's path at a small step count; what it measured."
    from loranb.train import TrainConfig, train
    from loranb.colab import run_folder, probe_step_time, session_plan
    from loranb.world import make_world_folder, NEW_SHAPE
    cuda = torch.cuda.is_available()
    work = Path(tempfile.mkdtemp(prefix='loranb-gpu-check-'))
    t0 = time.perf_counter()
    model = make_random_folder(work/'model', 'tiny' if dry else 'sd1')
    resolution = 64 if dry else 512
    data = make_world_folder(work/'rings', shapes=(NEW_SHAPE,), n=8, res=resolution)
    c = TrainConfig(pretrained_model_name_or_path=str(model), variant='fp16', train_data_dir=str(data), resolution=resolution,
                    random_flip=True, train_batch_size=1, learning_rate=1e-4, lr_scheduler='constant', lr_warmup_steps=0,
                    seed=42, mixed_precision='fp16' if cuda else 'no', report_to='none', resume_from_checkpoint='latest',
                    validation_prompt='a large red ring on a white background', num_validation_images=1,
                    validation_inference_steps=5, cache_dir=str(work/'cache'))
    out = run_folder(work, c)
    c.output_dir = str(out)
    prepared = time.perf_counter() - t0
    probe_steps = max(steps, 6)
    step_time, startup = probe_step_time(c, steps=probe_steps, warmup=min(5, probe_steps - 2))
    plan = session_plan(step_time, n_images=8, hours=1.0, startup=startup)
    if cuda: torch.cuda.reset_peak_memory_stats()
    c.max_train_steps, c.checkpointing_steps, c.validation_steps = steps, steps, steps
    result = train(c, progress=False)
    res = dict(section='colab_path', model='tiny' if dry else 'sd1', resolution=resolution, precision=c.mixed_precision,
               folder_seconds=round(prepared, 1), probe_step_s=round(step_time, 4), probe_startup_s=round(startup, 1),
               session_steps_per_hour=plan['session_steps'], steps=result.global_step,
               lora_written=bool(result.lora_path and Path(result.lora_path).exists()),
               validation_grid=(out/'samples'/'base-vs-lora.png').exists(), base_dtype=result.dtypes['base'], lora_dtype=result.dtypes['lora'])
    if cuda: res['peak_cuda_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def run(a):
    cuda = torch.cuda.is_available()
    if not cuda and not a.dry: sys.exit("gpu_check: no CUDA GPU here; run with --dry for the CPU rehearsal of the same code paths")
    size = ['--model', 'tiny', '--resolution', '64', '--steps', '2', '--warmup', '1'] if a.dry else \
           ['--model', 'sd1', '--resolution', '512', '--steps', str(a.steps), '--warmup', '3']
    half = 'bf16' if a.dry else 'fp16'   # fp16 on a CPU is very slow in torch: the dry run uses bf16 for the fp16 rows
    rows = []
    r = _train_step(size + ['--batch', '1', '--precision', half, '--cache', 'on']); r['section'] = 'fp16_b1'
    if 'peak_cuda_gib' in r: r['target'] = 'peak <= 6 GiB: ' + ('met' if r['peak_cuda_gib'] <= 6 else 'NOT met')
    rows.append(r)
    r = _train_step(size + ['--batch', '2' if a.dry else '8', '--precision', 'bf16', '--cache', 'on']); r['section'] = 'bf16_b8'
    if 'mfu' in r: r['target'] = 'MFU >= 40%: ' + ('met' if r['mfu'] >= 0.40 else 'NOT met')
    rows.append(r)
    why = _bitsandbytes()
    if why: rows.append(dict(section='adam8bit', skipped=why))
    else:
        r = _train_step(size + ['--batch', '1', '--precision', 'fp16', '--cache', 'on', '--optimizer', 'adamw8bit']); r['section'] = 'adam8bit'
        rows.append(r)
    try: rows.append(colab_path(a.dry, 2 if a.dry else a.steps))
    except Exception as e: rows.append(dict(section='colab_path', error=f'{type(e).__name__}: {e}'.splitlines()[0]))
    import diffusers, transformers, peft, accelerate
    meta = dict(date=str(date.today()), dry=a.dry, torch=torch.__version__, diffusers=diffusers.__version__,
                transformers=transformers.__version__, peft=peft.__version__, accelerate=accelerate.__version__,
                hardware=torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU rehearsal)")
    return dict(meta=meta, rows=rows)


COLS = ['section', 'model', 'resolution', 'batch', 'precision', 'optimizer', 's_per_step', 'images_per_s', 'peak_cuda_gib',
        'tflops', 'mfu', 'probe_step_s', 'session_steps_per_hour', 'steps', 'lora_written', 'validation_grid', 'target', 'skipped', 'error']

def table(report):
    rows = report['rows']
    cols = [c for c in COLS if any(c in r for r in rows)]
    lines = [f"{report['meta']['hardware']}, {report['meta']['date']}, torch {report['meta']['torch']}",
             '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(str(r.get(c, '')) for c in cols) + ' |' for r in rows]
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dry', action='store_true', help='CPU rehearsal: tiny model, 64 px, a few steps')
    p.add_argument('--steps', type=int, default=20, help='measured steps per training-step row (after 3 warm-up steps)')
    p.add_argument('--out', default='gpu_check.json', help='JSON file to write')
    a = p.parse_args(argv)
    t0 = time.time()
    report = run(a)
    report['meta']['seconds'] = round(time.time() - t0)
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(table(report)); print(f"wrote {a.out} in {report['meta']['seconds']} s")


if __name__ == '__main__': main()
