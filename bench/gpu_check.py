"""The GPU check: one script that measures what a Colab T4 user and a big-GPU user depend on, in a few minutes.

    python bench/gpu_check.py                      # on a CUDA GPU: full-size SD v1 (random weights), 512 px
    python bench/gpu_check.py --dry                # on a CPU: the same code paths on the tiny model, 64 px, seconds

    python bench/gpu_check.py --like t4            # on a bigger GPU: as a T4 (15 GiB cap, no bf16, no flash attention)

Sections (each training step is loranb's: cached latents, LoRA rank 4 on the UNet's attention, AdamW, clipping):
  fp16_b1      fp16 with the loss scaler, batch 1: s/step and peak CUDA memory (target <= 6 GiB: under half a 15 GiB
               T4); on a CPU (--dry) the same fp16 path, scaler included, rehearsed
  bf16_b8      bf16, batch 8: s/step and MFU (target >= 40% on an H100/H200-class GPU); skipped where there is no bf16
  adam8bit     fp16, batch 1, bitsandbytes' 8-bit AdamW (skipped where bitsandbytes does not import)
  colab_path   the Colab lesson's code, end to end at a small step count: a model folder saved in the fp16 variant and
               loaded with variant='fp16', the run folder keyed by model and settings, the steady-state probe, the
               session plan, then `train` with the latent cache, the VAE and text encoder offloaded to the CPU while
               the UNet trains and brought back for a validation sample; peak CUDA memory of each phase, reset between them
  reference_split  the classic command's precision lines (launcher fp16, no --mixed_precision flag, then with it):
               what they do on this device (on CUDA: "Attempting to unscale FP16 gradients"; on a CPU: NaN)

Every section is guarded: one that fails is reported with its error and the others still run. The JSON file (--out)
is written after every section, with the date, GPU, torch/CUDA/driver versions, attention kernels and commit; a
Markdown table is printed. Exit status 1 if a section failed. Speed is reported, never asserted; targets are marked.
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _train_step(args, timeout=900):
    "One configuration of bench/train_step.py in its own process (its own peak memory); its JSON result, or what went wrong."
    cmd = [sys.executable, str(HERE/'train_step.py'), *args]
    try: out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: return dict(error=f'no result within {timeout} s', command=' '.join(cmd[1:]))
    line = next((l for l in out.stdout.splitlines() if l.startswith('{')), None)
    if out.returncode != 0 or line is None:
        return dict(error=(out.stderr.strip().splitlines() or ['no JSON line in its output'])[-1], command=' '.join(cmd[1:]))
    return json.loads(line)


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
    peaks = {}
    def phase(name):   # each phase's own peak: the memory the last one held is freed and the counter reset
        if not cuda: return
        if peaks.get('_last'): peaks[peaks['_last']] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(); peaks['_last'] = name
    t0 = time.perf_counter()
    phase('model_folder')
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
    phase('probe')
    step_time, startup = probe_step_time(c, steps=probe_steps, warmup=min(5, probe_steps - 2))
    plan = session_plan(step_time, n_images=8, hours=1.0, startup=startup)
    phase('train')
    c.max_train_steps, c.checkpointing_steps, c.validation_steps = steps, steps, steps
    result = train(c, progress=False)
    phase('end')
    res = dict(section='colab_path', model='tiny' if dry else 'sd1', resolution=resolution, precision=c.mixed_precision,
               folder_seconds=round(prepared, 1), probe_step_s=round(step_time, 4), probe_startup_s=round(startup, 1),
               session_steps_per_hour=plan['session_steps'], steps=result.global_step,
               lora_written=bool(result.lora_path and Path(result.lora_path).exists()),
               validation_grid=(out/'samples'/'base-vs-lora.png').exists(), base_dtype=result.dtypes['base'], lora_dtype=result.dtypes['lora'])
    if cuda:
        res.update({f'peak_cuda_gib_{k}': v for k, v in peaks.items() if not k.startswith('_')})
        res['peak_cuda_gib'] = res.get('peak_cuda_gib_train')
    return res


def reference_split():
    "The classic command's split precision (launcher fp16, no script flag) on this device, and with the flag: what happens."
    from loranb.config import reference_run
    res = dict(section='reference_split')
    for flag in ('none', 'fp16'):
        dtype, got = reference_run(flag)
        res[f'flag_{flag}'] = (f'LoRA {dtype}, losses ' + ', '.join(f'{l:.3f}' for l in got)) if dtype else f'stopped: {got}'
    return res


def _meta(a):
    "The report's header: date, hardware, versions, the attention kernels allowed, the commit."
    import diffusers, transformers, peft, accelerate
    cuda = torch.cuda.is_available()
    def cmd(*words):
        try: return subprocess.run(words, capture_output=True, text=True, timeout=20, cwd=HERE).stdout.strip() or None
        except Exception: return None
    meta = dict(date=str(date.today()), dry=a.dry, like=a.like, torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if cuda else None, diffusers=diffusers.__version__, transformers=transformers.__version__,
                peft=peft.__version__, accelerate=accelerate.__version__, python=platform.python_version(),
                commit=cmd('git', 'rev-parse', '--short', 'HEAD'),
                hardware=torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU rehearsal)")
    if cuda:
        meta['driver'] = cmd('nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader')
        meta['bf16'] = torch.cuda.is_bf16_supported() and a.like != 't4'
        meta['attention'] = dict(flash=torch.backends.cuda.flash_sdp_enabled() and a.like != 't4', mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
                                 math=torch.backends.cuda.math_sdp_enabled())
    return meta


def sections(a):
    "(name, function returning its row) for every section of this run, in order."
    size = ['--model', 'tiny', '--resolution', '64', '--steps', '2', '--warmup', '1'] if a.dry else \
           ['--model', 'sd1', '--resolution', '512', '--steps', str(a.steps), '--warmup', '3']
    def fp16_b1():   # fp16 with the loss scaler, on a CPU too: the T4's precision, rehearsed
        r = _train_step(size + ['--batch', '1', '--precision', 'fp16', '--cache', 'on'])
        if 'peak_cuda_gib' in r: r['target'] = 'peak <= 6 GiB: ' + ('met' if r['peak_cuda_gib'] <= 6 else 'NOT met')
        return r
    def bf16_b8():
        if torch.cuda.is_available() and (a.like == 't4' or not torch.cuda.is_bf16_supported()): return dict(skipped='no bf16 on this GPU (or on a T4)')
        r = _train_step(size + ['--batch', '2' if a.dry else '8', '--precision', 'bf16', '--cache', 'on'])
        if 'mfu' in r: r['target'] = 'MFU >= 40%: ' + ('met' if r['mfu'] >= 0.40 else 'NOT met')
        return r
    def adam8bit():
        why = _bitsandbytes()
        return dict(skipped=why) if why else _train_step(size + ['--batch', '1', '--precision', 'fp16', '--cache', 'on', '--optimizer', 'adamw8bit'])
    return [('fp16_b1', fp16_b1), ('bf16_b8', bf16_b8), ('adam8bit', adam8bit),
            ('colab_path', lambda: colab_path(a.dry, 2 if a.dry else a.steps)), ('reference_split', reference_split)]


def run(a, write):   # write(report): called after every section, so a report exists whatever happens later
    cuda = torch.cuda.is_available()
    if not cuda and not a.dry: sys.exit("gpu_check: no CUDA GPU here; run with --dry for the CPU rehearsal of the same code paths")
    if a.like == 't4': os.environ['LORANB_LIKE_T4'] = '1'   # the train_step processes cap their memory and attention kernels
    try: meta = _meta(a)
    except Exception as e: meta = dict(date=str(date.today()), dry=a.dry, like=a.like, torch=torch.__version__, hardware='unknown',
                                       diffusers='unknown', error=f'{type(e).__name__}: {e}'.splitlines()[0])
    report = dict(meta=meta, rows=[])
    unknown = set(a.sections or ()) - {name for name, _ in sections(a)}
    if unknown: sys.exit(f"gpu_check: no section named {', '.join(sorted(unknown))}; the sections: {', '.join(n for n, _ in sections(a))}")
    if a.like == 't4' and cuda:   # this process too (the Colab path)
        sys.path.insert(0, str(HERE)); from train_step import like_t4; like_t4()
    for name, section in sections(a):
        if a.sections and name not in a.sections: continue
        try:
            if name == a.fail: raise RuntimeError(f'{name} made to fail (--fail), to test the report')
            row = section()
        except Exception as e: row = dict(error=f'{type(e).__name__}: {e}'.splitlines()[0])
        report['rows'].append({'section': name, **row})
        write(report)
    return report


COLS = ['section', 'model', 'resolution', 'batch', 'precision', 'optimizer', 's_per_step', 'images_per_s', 'loss_scale', 'peak_cuda_gib',
        'tflops', 'mfu', 'probe_step_s', 'session_steps_per_hour', 'steps', 'lora_written', 'validation_grid', 'flag_none', 'flag_fp16',
        'target', 'skipped', 'error']

def table(report):
    rows = report['rows']
    cols = [c for c in COLS if any(c in r for r in rows)]
    m = report['meta']
    lines = [f"{m['hardware']}{' (as a T4: 15 GiB, no bf16, no flash attention)' if m.get('like') == 't4' else ''}, {m['date']}, "
             f"torch {m['torch']}, CUDA {m.get('cuda')}, driver {m.get('driver')}, diffusers {m['diffusers']}, commit {m.get('commit')}",
             '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(str(r.get(c, '')) for c in cols) + ' |' for r in rows]
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dry', action='store_true', help='CPU rehearsal: tiny model, 64 px, a few steps')
    p.add_argument('--like', choices=['t4'], help='on a bigger GPU, imitate a Colab T4: 15 GiB, no bf16, no flash attention')
    p.add_argument('--steps', type=int, default=20, help='measured steps per training-step row (after 3 warm-up steps)')
    p.add_argument('--out', default='gpu_check.json', help='JSON file to write (after every section)')
    p.add_argument('--sections', type=lambda s: s.split(','), help='run only these sections, comma-separated')
    p.add_argument('--fail', help='make this section fail (to check that the report is still written)')
    a = p.parse_args(argv)
    t0 = time.time()
    def write(report):
        report['meta']['seconds'] = round(time.time() - t0)
        Path(a.out).write_text(json.dumps(report, indent=1))
    report = run(a, write)
    write(report)
    print(table(report)); print(f"wrote {a.out} in {report['meta']['seconds']} s")
    sys.exit(1 if any('error' in r for r in report['rows']) else 0)


if __name__ == '__main__': main()
