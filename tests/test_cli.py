"""Every console command of pyproject.toml's [project.scripts], run through its installed entry point as a user runs it.

For each command: `--help` prints a usage line naming the command and exits 0; a bad input exits 2 with one paragraph
`<command>: error: ...`, no traceback; and, where it is cheap, a run that works exits 0, writes what it should, and prints
on stderr nothing but the command's own messages (`own_messages_only`). loranb-world-model and loranb-demo run with one
step each (half a minute and a minute and a half), beside the others.

All the commands run at once at the start, two at a time next to a chain of successful runs that each uses what the one
before wrote (tiny model -> LoRA -> sample, export, merge, resize -> extract): about 4 minutes of CPU, two minutes on two
idle cores (each command spends ~8 s importing diffusers before it does anything)."""
import os, re, subprocess, sys, tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']
BIN = Path(sys.executable).parent
LORA = 'pytorch_lora_weights.safetensors'

# a bad input of each command, run in an empty folder: its arguments, and words its error message must hold
BAD = {
    'loranb-tiny-model':  (['--seed', 'abc'], ["invalid int value: 'abc'"]),    # argparse's own check: no loranb-level input error exists
    'loranb-train':       (['--train_data_dir=.', '--learning_rate=-1', '--output_dir=o', '--report_to=none'], ['--learning_rate=-1.0 must be above 0']),
    'loranb-sample':      (['--lora', 'x', '--prompt', 'p', '--steps', '0', '--output', 'o.png'], ['--steps=0 must be at least 1']),
    'loranb-export':      (['no/such/lora', '--to', 'kohya'], ["'no/such/lora' does not exist"]),
    'loranb-demo':        (['--steps=0', '--output_dir=o'], ['--steps=0 must be at least 1']),
    'loranb-world-model': (['o', '--unet_steps=0'], ['--unet_steps=0 must be at least 1']),
    'loranb-merge':       (['no/such/lora:1', 'x:0.5', '--output', 'o'], ["'no/such/lora' does not exist"]),
    'loranb-resize':      (['no/such/lora', '--rank', '0', '--output', 'o'], ['--rank=0 must be at least 1']),
    'loranb-extract':     (['--base', 'no/such/model', '--tuned', 'm', '--rank', '4', '--output', 'o'], ["'no/such/model' does not exist"]),
}

# the progress bars (tqdm descriptions) each command shows itself; any other bar comes from a library
OWN_BARS = {'loranb-train': ('caching latents', 'training'), 'loranb-demo': ('caching latents', 'training')}
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


def own_messages_only(res, cmd):
    """The pieces of `res.stderr` that are not `cmd`'s own messages, [] when there are none. Own messages are lines that start
    with `cmd:` (its errors and notices) and frames of its own progress bars (`OWN_BARS`: 'desc: NN%|...'; tqdm separates
    frames by carriage returns, which `splitlines` splits on). Everything else is a stray piece: library warnings, library
    progress bars, a traceback, a stray print."""
    bar = re.compile(rf"(?:{'|'.join(map(re.escape, OWN_BARS[cmd]))}): +\d+%\|") if cmd in OWN_BARS else None
    pieces = [ANSI.sub('', p).strip() for p in res.stderr.splitlines()]
    return [p for p in pieces if p and not p.startswith(f'{cmd}:') and not (bar and bar.match(p))]


def error_alone(stderr, cmd):
    "stderr without argparse's usage block, if the error is argparse's: what must be one paragraph `cmd: error: ...`."
    if stderr.startswith(f'usage: {cmd}') and f'\n{cmd}: error:' in stderr: stderr = stderr[stderr.index(f'\n{cmd}: error:') + 1:]
    return stderr.strip()


def _env(cache):
    "The environment of every command: offline, a private cache, and none of the settings that hide warnings."
    env = {k: v for k, v in os.environ.items()
           if k not in ('LORANB_DEBUG', 'PYTHONWARNINGS', 'TRANSFORMERS_VERBOSITY', 'DIFFUSERS_VERBOSITY', 'TQDM_DISABLE')}
    return {**env, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'MPLBACKEND': 'Agg',
            'LORANB_CACHE': str(cache), 'OMP_NUM_THREADS': '1'}   # one thread each: the commands run two at a time


def start(env, cmd, *args, cwd=None):
    return subprocess.Popen([str(BIN/cmd), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)

def finish(p):
    out, err = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)

def cli(env, cmd, *args, cwd=None): return finish(start(env, cmd, *args, cwd=cwd))


def successes(env, root):
    "Run the chain of working commands, each on what the one before wrote; return {command: CompletedProcess}."
    from loranb.data import make_shapes_folder
    tiny, lora = root/'tiny', root/'lora'
    proc = start(env, 'loranb-tiny-model', tiny, '--seed', '1')
    shapes = make_shapes_folder(root/'shapes', n=4)              # while the tiny model is built
    runs = {'loranb-tiny-model': finish(proc)}
    runs['loranb-train'] = cli(env, 'loranb-train', f'--pretrained_model_name_or_path={tiny}', f'--train_data_dir={shapes}',
                               '--resolution=64', '--train_batch_size=2', '--max_train_steps=4', '--learning_rate=1e-2',
                               '--lr_warmup_steps=0', '--checkpointing_steps=0', '--rank=4', '--report_to=none', f'--output_dir={lora}')
    jobs = {'loranb-sample': ['--lora', lora, '--prompt', 'a red circle', '--steps', '2', '--output', root/'sample.png'],
            'loranb-export': [lora, '--to', 'kohya', '--output', root/'kohya.safetensors', '--fuse', root/'fused'],
            'loranb-merge': [f'{lora}:1', f'{lora}:-0.5', '--output', root/'merged'],
            'loranb-resize': [lora, '--rank', '2', '--output', root/'r2']}
    with ThreadPoolExecutor(2) as pool:
        futures = {cmd: pool.submit(cli, env, cmd, *args) for cmd, args in jobs.items()}
        runs.update({cmd: f.result() for cmd, f in futures.items()})
    runs['loranb-extract'] = cli(env, 'loranb-extract', '--base', tiny, '--tuned', root/'fused', '--rank', '4', '--output', root/'x')
    return runs


@pytest.fixture(scope='module')
def runs(tmp_path_factory, _offline_and_private_cache):
    """Futures of every run: ('help', cmd), ('bad', cmd) and 'success' ({command: result}); `root` is their folder.
    The --help and bad-input runs go two at a time next to the chain, which waits on each of its steps."""
    root = tmp_path_factory.mktemp('cli')
    env = _env(os.environ['LORANB_CACHE'])   # the session's private cache from conftest.py
    with ThreadPoolExecutor(1) as chain, ThreadPoolExecutor(2) as quick:
        futures = {'success': chain.submit(successes, env, root), 'root': root}
        for cmd, (args, _) in BAD.items():
            (root/'bad'/cmd).mkdir(parents=True)
            futures['bad', cmd] = quick.submit(cli, env, cmd, *args, cwd=root/'bad'/cmd)
            futures['help', cmd] = quick.submit(cli, env, cmd, '--help')
        futures['slow'] = {'loranb-world-model': quick.submit(cli, env, 'loranb-world-model', root/'world', '--vae_steps=1', '--unet_steps=1'),
                           'loranb-demo': quick.submit(cli, env, 'loranb-demo', '--steps=1', f'--output_dir={root/"demo"}')}
        yield futures


def test_every_command_is_installed_and_covered():
    assert set(SCRIPTS) == set(BAD), 'a console command without a case here, or a case for one that is gone'
    for cmd in SCRIPTS: assert (BIN/cmd).is_file(), f"{BIN/cmd} is missing: run `pip install -e .`"


@pytest.mark.parametrize('cmd', sorted(SCRIPTS))
def test_help(runs, cmd):
    res = runs['help', cmd].result()
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.match(rf'usage: {re.escape(cmd)}(\s|$)', res.stdout.splitlines()[0]), res.stdout[:300]


@pytest.mark.parametrize('cmd', sorted(BAD))
def test_bad_input(runs, cmd):
    """Exit 2; stderr is one paragraph `cmd: error: ...` naming the problem (after argparse's usage block, for argparse's
    own errors) and nothing else: no library notice, no traceback, no 'unexpected error'; nothing written."""
    res, words = runs['bad', cmd].result(), BAD[cmd][1]
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stderr[-3000:]}"
    assert 'Traceback' not in res.stderr and 'unexpected error' not in res.stderr, res.stderr[-3000:]
    text = error_alone(res.stderr, cmd)
    assert text.startswith(f'{cmd}: error: ') and '\n\n' not in text, res.stderr[-3000:]
    for w in words: assert w in text, (w, text)
    assert list((runs['root']/'bad'/cmd).iterdir()) == []


def _expected(root):
    "What each successful run must write."
    return {'loranb-tiny-model': [root/'tiny'/'model_index.json', root/'tiny'/'unet', root/'tiny'/'text_encoder'],
            'loranb-train': [root/'lora'/LORA, root/'lora'/'README.md'],
            'loranb-sample': [root/'sample.png'],
            'loranb-export': [root/'kohya.safetensors', root/'fused'/'model_index.json', root/'fused'/'unet'],
            'loranb-merge': [root/'merged'/LORA], 'loranb-resize': [root/'r2'/LORA], 'loranb-extract': [root/'x'/LORA],
            'loranb-world-model': [root/'world'/'model_index.json', root/'world'/'unet'],
            'loranb-demo': [root/'demo'/'before.png', root/'demo'/'after.png', root/'demo'/LORA, root/'demo'/'README.md']}

SUCCESS_OUT = {'loranb-tiny-model': 'tiny SD v1 model written to', 'loranb-train': 'LoRA saved to', 'loranb-sample': '64x64 px',
               'loranb-export': 'wrote', 'loranb-merge': 'rank 8, ', 'loranb-resize': 'rank 2, ', 'loranb-extract': 'rank 4, ',
               'loranb-world-model': 'wrote', 'loranb-demo': 'rings, with the LoRA (after)'}

def _result(runs, cmd):
    "The finished run of a command that worked: from the chain, or from the slow ones beside it."
    return runs['slow'][cmd].result() if cmd in runs['slow'] else runs['success'].result()[cmd]


@pytest.mark.parametrize('cmd', list(SUCCESS_OUT))
def test_success(runs, cmd):
    "Exit 0 (the merge, resize and extract entry points return None, not their report), the files, the stdout message."
    res = _result(runs, cmd)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-1000:]}\n{res.stderr[-3000:]}"
    assert 'LoraReport' not in res.stderr and 'Traceback' not in res.stderr, res.stderr[-3000:]
    for f in _expected(runs['root'])[cmd]: assert f.exists(), f
    assert SUCCESS_OUT[cmd] in res.stdout, res.stdout


@pytest.mark.parametrize('cmd', list(SUCCESS_OUT))
def test_success_stderr_is_own_messages(runs, cmd):
    "A run that works prints nothing on stderr but the command's own messages: no library warning, no library progress bar."
    res = _result(runs, cmd)
    assert res.returncode == 0
    assert own_messages_only(res, cmd) == [], res.stderr[-3000:]
