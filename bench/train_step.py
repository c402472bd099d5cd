"""Benchmark one LoRA training step, steady state: loranb's (cached latents and text embeddings) against the
per-step-encode recipe of the reference script (VAE and text encoder run at every step).

    python bench/train_step.py --model sd1 --resolution 256 --compare      # both recipes, fp32 and loranb's best
    python bench/train_step.py --model tiny --cache on --precision bf16    # one configuration

Each configuration runs in its own process, so peak RSS is its own. Prints one JSON line per configuration and a table.
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from datetime import date
import torch

from loranb.models import load_parts, sd1_random, SD1_SCHEDULE
from loranb.schedule import make_betas, alpha_bar
from loranb.lora import add_lora, cast_trainable_to_fp32
from loranb.train import TrainConfig, diffusion_loss, autocast, vae_dtype

# Dense (no sparsity) fp16/bf16 tensor-core peaks in TFLOP/s, for MFU, by the exact name torch.cuda.get_device_name()
# reports: a name not listed gets no MFU rather than another part's peak ("L4" must not match an L40S, nor "H100" an
# H100 PCIe). Sources: NVIDIA's datasheets (half the "with sparsity" figure): H100 and H200 SXM 989.4, H100 PCIe 756.5,
# A100 (every form) 312, L40S 362.05, L40 181.05, L4 121, T4 65 (fp16 only: no bf16).
GPU_PEAK_TFLOPS = {'NVIDIA H200': 989.4, 'NVIDIA H100 80GB HBM3': 989.4, 'NVIDIA H100 PCIe': 756.5,
                   'NVIDIA A100-SXM4-80GB': 312.0, 'NVIDIA A100-SXM4-40GB': 312.0, 'NVIDIA A100-PCIE-40GB': 312.0, 'NVIDIA A100 80GB PCIe': 312.0,
                   'NVIDIA L40S': 362.05, 'NVIDIA L40': 181.05, 'NVIDIA L4': 121.0, 'Tesla T4': 65.0}
T4_MEMORY_GIB = 15.0   # what a Colab T4 offers (15,360 MiB)


def like_t4():
    "With LORANB_LIKE_T4=1 on a bigger GPU: cap this process at a T4's memory and turn off the flash-attention kernel a T4 lacks."
    if os.environ.get('LORANB_LIKE_T4') != '1' or not torch.cuda.is_available(): return False
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    torch.cuda.set_per_process_memory_fraction(min(1.0, T4_MEMORY_GIB / total))
    torch.backends.cuda.enable_flash_sdp(False)   # sm75 has no flash attention: a T4 runs SDPA's memory-efficient kernel
    return True


def build(model, precision, device, channels_last=False):
    "UNet with a rank-4 attention LoRA, VAE, text encoder and alpha-bar, as train() sets them up."
    if model == 'tiny':
        p = load_parts('loranb:tiny'); unet, vae, te, ab = p.unet, p.vae, p.text_encoder, p.noise_scheduler.alphas_cumprod
    else:
        m = sd1_random('cpu'); unet, vae, te = m['unet'], m['vae'], m['text_encoder']; ab = alpha_bar(make_betas(**SD1_SCHEDULE))
    for part in (vae, te): part.requires_grad_(False)
    torch.manual_seed(0); add_lora(unet, r=4)
    wdt = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(precision, torch.float32)
    for part, dt in ((unet, wdt), (te, wdt), (vae, vae_dtype(wdt, device))):
        part.to(device)
        if dt != torch.float32: part.to(dt)
    cast_trainable_to_fp32(unet)
    if channels_last: unet.to(memory_format=torch.channels_last)
    return unet, vae, te, ab.to(device)


def run(a):
    mp = {'fp32': 'no'}.get(a.precision, a.precision)   # loranb's name for "no mixed precision"
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    t4 = like_t4()
    torch.manual_seed(0)
    unet, vae, te, ab = build(a.model, mp, device, a.channels_last)
    if a.gradient_checkpointing: unet.enable_gradient_checkpointing(); unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    if a.optimizer == 'adamw8bit':   # bitsandbytes' 8-bit AdamW, as --use_8bit_adam uses it
        import bitsandbytes as bnb
        opt = bnb.optim.AdamW8bit(params, lr=1e-4)
    else: opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    scaler = torch.amp.GradScaler(device.type, enabled=mp == 'fp16')
    cfg, gen = TrainConfig(), torch.Generator().manual_seed(0)
    pixels = torch.rand(a.batch, 3, a.resolution, a.resolution, device=device) * 2 - 1
    ids = torch.randint(0, te.config.vocab_size, (a.batch, 77), device=device)
    sf = vae.config.scaling_factor
    if a.cache == 'on':   # what the cache holds: the VAE's mean and std, and the text embedding, computed once
        with torch.no_grad():
            dist = vae.encode(pixels.to(vae.dtype)).latent_dist
            mean, std, text = dist.mean.float(), dist.std.float(), te(ids)[0]

    def step():
        if a.cache == 'on':
            latents = (mean + std * torch.randn(mean.shape, generator=gen).to(device)) * sf
            if a.text == 'per_step':   # varied captions (--shuffle_caption, dropouts): the frozen text encoder at each step
                with torch.no_grad(), autocast(device, mp): emb = te(ids)[0]
            else: emb = text
        else:             # the reference: encode image and caption at every step
            with torch.no_grad(), autocast(device, mp):
                latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample().float() * sf
                emb = te(ids)[0]
        loss = diffusion_loss(unet, latents, emb, ab, gen, cfg, mp)
        scaler.scale(loss).backward()
        scaler.unscale_(opt); torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)

    times = []
    for i in range(a.warmup + a.steps):
        if device.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter(); step()
        if device.type == 'cuda': torch.cuda.synchronize()
        if i >= a.warmup: times.append(time.perf_counter() - t0)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc: step()
    flops = fc.get_total_flops()
    s = statistics.median(times)
    res = dict(model=a.model, resolution=a.resolution, batch=a.batch, precision=a.precision, cache=a.cache, text=a.text, optimizer=a.optimizer,
               channels_last=a.channels_last, gradient_checkpointing=a.gradient_checkpointing, steps=a.steps, s_per_step=round(s, 4), images_per_s=round(a.batch / s, 3),
               peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
               flop_per_step=flops, tflop_per_step=round(flops / 1e12, 3), tflops=round(flops / s / 1e12, 3), device=device.type,
               hardware=torch.cuda.get_device_name() if device.type == 'cuda' else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               torch=torch.__version__, date=str(date.today()), like_t4=t4)
    if scaler.is_enabled(): res['loss_scale'] = scaler.get_scale()   # fp16: the scaler ran (and where it settled)
    if device.type == 'cuda':
        res['peak_cuda_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        peak = None if t4 else GPU_PEAK_TFLOPS.get(torch.cuda.get_device_name())
        if peak and a.precision in ('fp16', 'bf16'): res['mfu'] = round(res['tflops'] / peak, 3)
    return res


def table(rows):
    cols = ['model', 'resolution', 'batch', 'precision', 'cache', 'text', 'channels_last', 'gradient_checkpointing', 's_per_step', 'images_per_s', 'peak_rss_gib', 'tflops']
    cols += [c for c in ('peak_cuda_gib', 'mfu') if any(c in r for r in rows)]
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(str(r.get(c, '')) for c in cols) + ' |' for r in rows]
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', choices=['tiny', 'sd1'], default='tiny')
    p.add_argument('--resolution', type=int, default=256)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--precision', choices=['fp32', 'fp16', 'bf16'], default='fp32')
    p.add_argument('--cache', choices=['on', 'off'], default='on')
    p.add_argument('--text', choices=['cached', 'per_step'], default='cached',
                   help='with --cache on: text embeddings from the cache, or the text encoder at each step (varied captions)')
    p.add_argument('--channels_last', action='store_true')
    p.add_argument('--gradient_checkpointing', action='store_true')
    p.add_argument('--optimizer', choices=['adamw', 'adamw8bit'], default='adamw', help='adamw8bit needs bitsandbytes and CUDA')
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--compare', action='store_true', help='run the reference recipe and loranb side by side (fp32, and loranb bf16)')
    a = p.parse_args()
    if not a.compare:
        r = run(a); print(json.dumps(r)); print(table([r])); return
    base = [sys.executable, __file__, '--model', a.model, '--resolution', str(a.resolution), '--batch', str(a.batch),
            '--steps', str(a.steps), '--warmup', str(a.warmup)]
    configs = [['--cache', 'off', '--precision', 'fp32'], ['--cache', 'on', '--precision', 'fp32'], ['--cache', 'on', '--precision', 'bf16']]
    rows = []
    for extra in configs:
        out = subprocess.run(base + extra, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(next(l for l in out.splitlines() if l.startswith('{'))))
        print(json.dumps(rows[-1]), flush=True)
    ref = rows[0]['s_per_step']
    for r in rows: r['speedup'] = round(ref / r['s_per_step'], 2)
    print(table(rows)); print('speed-up against the per-step-encode recipe (fp32):', [r['speedup'] for r in rows])


if __name__ == '__main__': main()
