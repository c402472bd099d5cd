"""Benchmark sampling: seconds per image for a 30-step DDIM run (classifier-free guidance, VAE decode included).

    python bench/sample.py --model tiny --resolution 64 --batch 4
    python bench/sample.py --model sd1 --resolution 512 --batch 1 --precision fp16     # on a GPU
"""
import argparse, json, os, platform, resource, time
from datetime import date
import torch

from loranb.sample import generate
from loranb.schedule import make_betas, alpha_bar
from loranb.models import SD1_SCHEDULE, load_parts, sd1_random, save_clip_tokenizer, learn_bpe, default_captions


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', choices=['tiny', 'sd1'], default='tiny')
    p.add_argument('--resolution', type=int, default=64)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--steps', type=int, default=30)
    p.add_argument('--precision', choices=['fp32', 'fp16', 'bf16'], default='fp32')
    p.add_argument('--repeats', type=int, default=2)
    a = p.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(a.precision, torch.float32)
    if a.model == 'tiny':
        parts = load_parts('loranb:tiny'); unet, vae, te, tok = parts.unet, parts.vae, parts.text_encoder, parts.tokenizer
    else:
        m = sd1_random('cpu'); unet, vae, te = m['unet'], m['vae'], m['text_encoder']
        import tempfile; tok = save_clip_tokenizer(*learn_bpe(default_captions()), tempfile.mkdtemp())
    for part in (unet, vae, te): part.to(device, dtype).eval()
    ab = alpha_bar(make_betas(**SD1_SCHEDULE))
    prompts = ['a red circle on a white background'] * a.batch
    times = []
    for i in range(a.repeats + 1):
        if device.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(unet, vae, tok, te, ab, prompts, steps=a.steps, height=a.resolution, width=a.resolution)
        if device.type == 'cuda': torch.cuda.synchronize()
        if i: times.append(time.perf_counter() - t0)   # the first run warms up
    s = min(times)
    res = dict(model=a.model, resolution=a.resolution, batch=a.batch, steps=a.steps, precision=a.precision,
               s_per_image=round(s / a.batch, 4), peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
               hardware=torch.cuda.get_device_name() if device.type == 'cuda' else f"{platform.machine()}, {os.cpu_count()} cores",
               torch=torch.__version__, date=str(date.today()))
    if device.type == 'cuda': res['peak_cuda_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(res))
    print(f"{a.model} {a.resolution}px batch {a.batch}, {a.steps} steps, {a.precision}: {res['s_per_image']} s/image")


if __name__ == '__main__': main()
