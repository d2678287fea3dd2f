#!/usr/bin/env python3
"""Pretrain a small GPT on bytes, with experiment flags, in one readable file.

    python train_llm.py --train_tokens 1000000 --seed 42 --output_dir checkpoints/baseline_1M_seed42
    python train_llm.py --config small --data input.txt --use_qk_norm --optimizer muon

Runs with no network and no GPU (default data: this Python's own standard-library
sources), and fast on one NVIDIA GPU (bf16 autocast, the whole step in one CUDA graph).
Prints one line per evaluation, `Step N | val_loss: ... | train_loss: ... | tok/s: ... |
elapsed: ...s`, the last one at --train_tokens, and writes metrics.json and ckpt.pt to
--output_dir. metrics.json's one_time_s is the part of wall_time_s spent building the corpus
cache that later runs reuse (0 when it was there), so wall_time_s - one_time_s compares across
runs. Exit codes: 0 done, 2 bad input, 3 diverged (NaN or inf loss).

With --worker, one process runs run after run (JSON lines on stdin), each as a fresh process
would, so a plugin pays Python's and torch's start-up once per session rather than once per run;
the protocol is described in docs/executors.md.
"""
import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

START = time.perf_counter()  # elapsed times count from here, before the slow imports

import numpy as np

try:
    import torch
except ModuleNotFoundError as exc:  # the plugin installs without torch; training needs its [train] extra
    if exc.name != "torch":
        raise
    sys.exit("train_llm.py needs PyTorch, which is not installed in this Python: pip install 'pytest-exprun[train]' "
             "(or, from a checkout, pip install -e '.[train]'); for the CPU-only wheel see the README's Install section")
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# Presets: model shape plus the recipe tuned for it at ~1M training tokens.
# The default, auto, is tiny on a CPU (a 2-core CPU trains it on 1M tokens in well under a
# minute; context 64 keeps attention cheap there) and small on a GPU (nanoGPT's Shakespeare
# shape, about a second of training there); base is a larger GPU model.
PRESETS = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=64, lr=3e-3, warmup_frac=0.05,
                 eval_tokens=16384),
    # small: batch 16, since at 1M tokens more steps beat bigger ones; the same lr and warmup are
    # also the best found at nanoGPT's batch 64 (docs/benchmarks.md, recipe sweep)
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=16, lr=2e-3, warmup_frac=0.3,
                  eval_tokens=131072),
    "base": dict(n_layer=12, n_head=8, n_embd=512, block_size=512, batch_size=16, lr=5e-4, warmup_frac=0.1,
                 eval_tokens=262144),
}


def add_experiment_flags(p):
    """Experiment flags: each off by default, and off means exactly the baseline's code path.
    To add one: add it here, then branch on `cfg.<name>` (model) or `args.<name>` (training)."""
    g = p.add_argument_group("experiment flags")
    g.add_argument("--use_qk_norm", type=str2bool, nargs="?", const=True, default=False,
                   help="RMS-normalise queries and keys per head before attention (default: false)")
    g.add_argument("--use_swiglu", type=str2bool, nargs="?", const=True, default=False,
                   help="SwiGLU MLP (hidden 8/3 of width) instead of GELU 4x (default: false)")
    g.add_argument("--tie_embeddings", type=str2bool, nargs="?", const=True, default=False,
                   help="share the token embedding with the output layer (default: false)")
    g.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon for hidden 2-D matrices, AdamW for the rest (default: adamw)")
    g.add_argument("--muon_lr", type=float, default=0.02, help="Muon learning rate (default: 0.02)")
    g.add_argument("--muon_momentum", type=float, default=0.95, help="Muon momentum (default: 0.95)")


def str2bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: a parent process shows the last line
        fail(f"{message} (see python train_llm.py --help)")


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=["auto", *sorted(PRESETS)], default="auto",
                   help="model preset; auto: small when the run is on CUDA, else tiny (default: auto)")
    p.add_argument("--train_tokens", type=int, default=1_000_000,
                   help="training tokens, rounded to whole steps (default: 1000000)")
    p.add_argument("--seed", type=int, default=0, help="seeds initialisation and data order (default: 0)")
    p.add_argument("--output_dir", default="out", help="where metrics.json and ckpt.pt go (default: out)")
    p.add_argument("--data", default=None, help="text file, folder of text files, or folder with "
                   "train.bin/val.bin of uint16 ids (default: this Python's standard-library sources)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: auto")
    p.add_argument("--worker", action="store_true",
                   help="run after run in this one process, one per stdin line {\"argv\": [...]}, each exactly as "
                        "`train_llm.py <these args> <argv>` runs in a fresh process (protocol: docs/executors.md)")
    g = p.add_argument_group("training (default: the preset's value where shown as None)")
    g.add_argument("--batch_size", type=int, default=None, help="sequences per step")
    g.add_argument("--block_size", type=int, default=None, help="context length")
    g.add_argument("--n_layer", type=int, default=None)
    g.add_argument("--n_head", type=int, default=None)
    g.add_argument("--n_embd", type=int, default=None)
    g.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate")
    g.add_argument("--min_lr_frac", type=float, default=0.0, help="final lr as a fraction of peak (default: 0)")
    g.add_argument("--warmup_frac", type=float, default=None, help="warmup, fraction of steps")
    g.add_argument("--decay", choices=["cosine", "linear"], default="cosine", help="lr decay (default: cosine)")
    g.add_argument("--weight_decay", type=float, default=0.1, help="on 2-D weights (default: 0.1)")
    g.add_argument("--beta1", type=float, default=0.9)
    g.add_argument("--beta2", type=float, default=0.95)
    g.add_argument("--grad_clip", type=float, default=1.0, help="max grad norm, 0 = off (default: 1.0)")
    g.add_argument("--eval_every", type=int, default=0, help="steps between evals, 0 = 4 per run (default: 0)")
    g.add_argument("--eval_tokens", type=int, default=None, help="size of the fixed validation set")
    g.add_argument("--num_threads", type=int, default=0, help="CPU threads, 0 = torch's default")
    g.add_argument("--cuda_graph", type=str2bool, nargs="?", const=True, default=True,
                   help="capture the training step in a CUDA graph (default: true)")
    g.add_argument("--save_checkpoint", type=str2bool, nargs="?", const=True, default=True,
                   help="write the final model to ckpt.pt (default: true)")
    add_experiment_flags(p)
    args = p.parse_args(argv)
    if args.worker:  # the __main__ block takes it out; here it is abbreviated or inside a job
        fail("--worker starts worker mode only as a whole word on the command line, not in a job")
    del args.worker  # not a run's setting: metrics.json's flags stay as they were
    args.config_chosen_by = "--config"
    if args.config == "auto":  # the preset a user of this device would pick; reports state it
        on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        args.config, args.config_chosen_by = ("small", "auto: CUDA") if on_gpu else ("tiny", "auto: no CUDA")
    for key, value in PRESETS[args.config].items():  # resolve preset defaults
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("train_tokens", "batch_size", "block_size", "n_layer", "n_head", "n_embd", "eval_tokens"):
        if getattr(args, key) <= 0:
            fail(f"--{key} must be a positive integer, got {getattr(args, key)}")
    if args.n_embd % args.n_head or (args.n_embd // args.n_head) % 2:
        fail(f"--n_embd {args.n_embd} must be a multiple of --n_head {args.n_head} with an even head size")
    if args.train_tokens < args.batch_size * args.block_size:
        fail(f"--train_tokens {args.train_tokens} is less than one step "
             f"({args.batch_size} x {args.block_size} = {args.batch_size * args.block_size} tokens); raise it")
    return args


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


# -----------------------------------------------------------------------------
# Data: 1-D arrays of token ids (uint8 bytes or uint16 ids), a train and a val split.
# Text is tokenised as bytes (vocab 256); the last 10% of a text file or folder is val.

STDLIB_BYTES = 4_000_000  # a few MB of the standard library: real code and prose
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


def load_data(data, cache_dir):
    """Returns train, val, vocab_size, description and the seconds spent building a cache that
    later runs reuse (one-time work, so a run's time can be told apart from it); never depends on
    the seed."""
    if data is None:
        return stdlib_corpus(cache_dir)
    path = Path(data)
    how = "pass a text file, a folder of text files, or a folder with train.bin and val.bin"
    if not path.exists():
        fail(f"--data {path} does not exist; {how}")
    if path.is_dir() and (path / "train.bin").exists():
        return bin_folder(path)
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and not any(s.startswith(".") for s in f.relative_to(path).parts))
    parts = []
    for f in files:
        try:
            parts.append(f.read_bytes())
            parts[-1].decode("utf-8")
        except OSError as e:
            fail(f"cannot read --data file {f}: {e.strerror}; {how}")
        except UnicodeDecodeError:
            fail(f"--data file {f} is not UTF-8 text; {how}")
    tokens = np.frombuffer(b"".join(parts), dtype=np.uint8)
    if tokens.size < 20:
        fail(f"--data {path} holds {tokens.size} bytes of text: too little to train on; {how}")
    n_val = tokens.size // 10
    return tokens[:-n_val], tokens[-n_val:], 256, f"{path} ({len(files)} file(s), bytes)", 0.0


def bin_folder(path):
    """nanoGPT/llm.c layout: train.bin and val.bin of uint16 ids (llm.c's 1 KiB header is skipped)."""
    def open_bin(f):
        if not f.exists():
            fail(f"--data {path} has train.bin but no {f.name}; add it or pass a text file")
        header = np.fromfile(f, dtype=np.int32, count=3)
        if header.size == 3 and header[0] == 20240520:  # llm.c: magic, version, token count
            return np.memmap(f, dtype=np.uint16, mode="r", offset=1024, shape=(int(header[2]),))
        return np.memmap(f, dtype=np.uint16, mode="r") if f.stat().st_size >= 2 else np.zeros(0, np.uint16)

    train, val = open_bin(path / "train.bin"), open_bin(path / "val.bin")
    if train.size == 0 or val.size == 0:
        fail(f"--data {path}: train.bin or val.bin is empty")
    vocab = int(max(train.max(), val.max())) + 1
    return train, val, -(-vocab // 64) * 64, f"{path} (train.bin/val.bin, uint16 ids)", 0.0


def stdlib_corpus(cache_dir):
    """A few MB of this Python's standard-library sources, cached as memory-mapped bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    if not files:
        fail(f"no standard-library sources found under {root}; pass --data PATH (a text file or folder)")
    files.sort()
    rel = [f.relative_to(root).as_posix() for f in files]
    # Names, sizes and mtimes find the cache without reading the sources.
    key = sha256(repr([(r, f.stat().st_size, f.stat().st_mtime_ns) for r, f in zip(rel, files)]).encode())
    pointer = cache_dir / f"stdlib-{key[:16]}.json"
    try:
        meta = json.loads(pointer.read_text())
        train, val = (np.memmap(cache_dir / meta[s], dtype=np.uint8, mode="r") for s in ("train", "val"))
        return train, val, 256, meta["description"], 0.0
    except (OSError, ValueError, KeyError):
        pass  # not built yet (or damaged): build it
    build_start = time.perf_counter()
    # Deterministic subset: files in the order of a hash of their path, up to STDLIB_BYTES;
    # a file is val when its path hash says so (about 10%), so the split is seed-independent.
    order = sorted(range(len(files)), key=lambda i: sha256(rel[i].encode()))
    chosen, total = [], 0
    for i in order:
        if total < STDLIB_BYTES:
            chosen.append(i)
            total += files[i].stat().st_size
    chosen.sort()
    is_val = {i: int(sha256(b"val:" + rel[i].encode())[:8], 16) % 10 == 0 for i in chosen}
    train = b"".join(files[i].read_bytes() for i in chosen if not is_val[i])
    val = b"".join(files[i].read_bytes() for i in chosen if is_val[i])
    fingerprint = sha256(train + val)
    description = f"Python {sys.version.split()[0]} standard library ({len(chosen)} files, bytes)"
    names = {"train": f"corpus-{fingerprint[:16]}.train.u8", "val": f"corpus-{fingerprint[:16]}.val.u8"}
    atomic_write(cache_dir / names["train"], train)  # two racing builders write the same bytes;
    atomic_write(cache_dir / names["val"], val)  # the pointer goes last, once both files exist
    atomic_write(pointer, json.dumps(dict(names, fingerprint=fingerprint, description=description)).encode())
    train, val = (np.memmap(cache_dir / names[s], dtype=np.uint8, mode="r") for s in ("train", "val"))
    return train, val, 256, description, time.perf_counter() - build_start


def fingerprint_of(train, val):
    """sha256 of the train then val token bytes; above 256 MB, of 64 evenly spaced 1 MB slices."""
    h = hashlib.sha256()
    for a in (train, val):
        raw = np.asarray(a).view(np.uint8)
        if raw.size <= 2**28:
            h.update(raw)
        else:
            h.update(str(raw.size).encode())
            for start in np.linspace(0, raw.size - 2**20, 64).astype(np.int64):
                h.update(raw[start:start + 2**20])
    return h.hexdigest()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def atomic_write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def get_batch(tokens, offsets, block_size, device):
    """Rows of block_size + 1 tokens starting at offsets: inputs are [:, :-1], targets [:, 1:]."""
    rows = torch.from_numpy(tokens[offsets[:, None] + np.arange(block_size + 1)].astype(np.int64))
    if device.type == "cuda":  # pinned, so the copy runs behind the GPU's work
        rows = rows.pin_memory().to(device, non_blocking=True)
    return rows


# -----------------------------------------------------------------------------
# Model: pre-norm GPT with RMSNorm, rotary position embeddings and SDPA attention.

@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    use_qk_norm: bool = False
    use_swiglu: bool = False
    tie_embeddings: bool = False


def apply_rotary(x, rotation):
    """Rotate each pair of channels of x (B, T, ..., D) by its position's angle (rotation: T, ..., D/2): one complex multiply."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.use_qk_norm = cfg.n_head, cfg.use_qk_norm
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, rotation):
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]  # queries and keys together: half the kernels below
        if self.use_qk_norm:  # bounds the attention logits, which lets higher learning rates work
            qk = F.rms_norm(qk, (qk.size(-1),)).type_as(v)
        q, k = apply_rotary(qk, rotation[:, None]).unbind(dim=2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.use_swiglu = cfg.use_swiglu
        hidden = -(-8 * cfg.n_embd // 3 // 64) * 64 if cfg.use_swiglu else 4 * cfg.n_embd  # similar size
        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden if cfg.use_swiglu else hidden, bias=False)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=False)

    def forward(self, x):
        if self.use_swiglu:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            return self.c_proj(F.silu(gate) * up)
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1, self.attn = nn.RMSNorm(cfg.n_embd), Attention(cfg)
        self.ln_2, self.mlp = nn.RMSNorm(cfg.n_embd), MLP(cfg)

    def forward(self, x, rotation):
        x = x + self.attn(self.ln_1(x), rotation)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.RMSNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        head_dim = cfg.n_embd // cfg.n_head
        freqs = torch.outer(torch.arange(cfg.block_size).float(),
                            10000.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("rotation", torch.polar(torch.ones_like(freqs), freqs)[:, None, :], persistent=False)
        for name, p in self.named_parameters():  # GPT-2 init; residual outputs scaled by depth
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx, targets=None):
        T = idx.size(1)
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, self.rotation[:T])
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def flops_per_token(self):
        """Matmul FLOPs per trained token (forward + backward), as in the PaLM paper's MFU."""
        c = self.cfg
        matmul_params = sum(p.numel() for p in self.parameters()) - (0 if c.tie_embeddings else self.wte.weight.numel())
        return 6 * matmul_params + 12 * c.n_layer * c.n_embd * c.block_size


# -----------------------------------------------------------------------------
# Optimizers, written out: torch.optim's first use imports torch._dynamo, seconds of start-up.
# Both keep their step count and accept learning rates as tensors, so a CUDA graph can hold them.

class AdamW:
    """Adam with decoupled weight decay; each line is one foreach kernel over all tensors."""
    def __init__(self, param_groups, betas=(0.9, 0.95), eps=1e-8):
        self.param_groups, self.betas, self.eps = param_groups, betas, eps
        self.t = None

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        if self.t is None:  # state is created on the first step
            self.t = torch.zeros((), device=self.param_groups[0]["params"][0].device)
            for group in self.param_groups:
                group["m"] = [torch.zeros_like(p) for p in group["params"]]
                group["v"] = [torch.zeros_like(p) for p in group["params"]]
        self.t.add_(1)
        for group in self.param_groups:
            params, m, v, lr = group["params"], group["m"], group["v"], group["lr"]
            grads = [p.grad for p in params]
            if not params:
                continue
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, (1 - beta2 ** self.t).sqrt())
            torch._foreach_add_(denom, self.eps)
            updates = torch._foreach_div(m, denom)
            torch._foreach_mul_(updates, -lr / (1 - beta1 ** self.t))
            torch._foreach_add_(params, updates)


def newton_schulz(G, steps=5):
    """Approximately U V^T of G = U S V^T: the quintic iteration of Keller Jordan's Muon."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    if G.size(0) > G.size(1):
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if G.size(0) > G.size(1) else X).to(G.dtype)


class Muon:
    """Momentum (Nesterov), then the update orthogonalised: every direction moves at the same rate."""
    def __init__(self, param_groups, momentum=0.95):
        self.param_groups, self.momentum = param_groups, momentum

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr = group["lr"]
            if "m" not in group:
                group["m"] = [torch.zeros_like(p) for p in group["params"]]
            for p, buf in zip(group["params"], group["m"]):
                buf.mul_(self.momentum).add_(p.grad)
                update = newton_schulz(p.grad.add(buf, alpha=self.momentum))
                p.sub_(update * (lr * max(1.0, p.size(0) / p.size(1)) ** 0.5))


def make_optimizers(model, args, graphed):
    """AdamW decays 2-D weights only (nanoGPT's rule); with --optimizer muon the hidden matrices
    (every 2-D weight inside the blocks) go to Muon instead. Learning rates are tensors when the
    step is a CUDA graph, so the schedule can change them between replays."""
    def lr(value):
        return torch.tensor(value, device=args.device) if graphed else value
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = {id(p) for p in model.blocks.parameters() if p.dim() == 2} if args.optimizer == "muon" else set()
    decay = [p for p in params if p.dim() >= 2 and id(p) not in hidden]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=args.weight_decay, lr=lr(args.lr), base_lr=args.lr),
              dict(params=no_decay, weight_decay=0.0, lr=lr(args.lr), base_lr=args.lr)]
    optimizers = [AdamW(groups, betas=(args.beta1, args.beta2))]
    if hidden:
        optimizers.append(Muon([dict(params=[p for p in params if id(p) in hidden], lr=lr(args.muon_lr),
                                     base_lr=args.muon_lr)], momentum=args.muon_momentum))
    return optimizers


def lr_factor(step, args, steps):
    """Linear warmup, then cosine or linear decay to min_lr_frac at the last step."""
    warmup = max(1, round(args.warmup_frac * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)  # the last step still moves
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if args.decay == "cosine" else 1 - progress
    return args.min_lr_frac + (1 - args.min_lr_frac) * shape


def set_lr(optimizers, factor):
    for group in (group for opt in optimizers for group in opt.param_groups):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(group["base_lr"] * factor)  # in place: a CUDA graph reads this tensor
        else:
            group["lr"] = group["base_lr"] * factor


# -----------------------------------------------------------------------------
# Training step: eager, or captured once in a CUDA graph and replayed (kernel launches,
# not arithmetic, bound a small model's step on a GPU; a graph launches them all at once).

class TrainStep:
    def __init__(self, model, optimizers, args, graphed):
        self.model, self.optimizers, self.args, self.graphed = model, optimizers, args, graphed
        self.calls, self.graph = 0, None

    def step(self, rows):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.args.device.type == "cuda",
                            cache_enabled=not self.graphed):
            _, loss = self.model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        if self.args.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)  # no sync: graph-safe
        for opt in self.optimizers:
            opt.step()
        return loss.detach()

    def eager(self, rows):
        loss = self.step(rows)
        self.model.zero_grad(set_to_none=True)
        return loss

    def __call__(self, rows):
        self.calls += 1
        if not self.graphed:
            return self.eager(rows)
        if self.calls <= 3:  # real steps, eager on a side stream: they create the optimizer state
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.eager(rows)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:  # capture; the capture itself does not run, so replay below
            self.rows, self.graph = rows.clone(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self.step(self.rows)
        self.rows.copy_(rows)
        self.graph.replay()
        return self.loss.clone()


@torch.no_grad()
def evaluate(model, val, offsets, args):
    """Mean loss over a fixed set of validation windows (the same for every seed)."""
    total, batch = torch.zeros((), device=args.device), max(args.batch_size, 64)  # no grads: room for more
    for i in range(0, len(offsets), batch):
        rows = get_batch(val, offsets[i:i + batch], args.block_size, args.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.type == "cuda"):
            _, loss = model(rows[:, :-1], rows[:, 1:])
        total += loss * len(rows)
    return (total / len(offsets)).item()


def main(argv=None, start=START):
    """One run; elapsed times count from start (the process's start, or a worker's job's)."""
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but CUDA is not available here; use --device cpu or auto")
    args.device = torch.device(args.device)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    torch.set_float32_matmul_precision("high")

    cache_dir = Path(os.environ.get("TRAIN_LLM_CACHE") or Path.home() / ".cache" / "train_llm")
    train, val, vocab_size, data_description, one_time = load_data(args.data, cache_dir)
    fingerprint = fingerprint_of(train, val)
    if len(train) <= args.block_size + 1 or len(val) <= args.block_size + 1:
        fail(f"--data has {len(train)} train and {len(val)} val tokens: each split needs more than "
             f"--block_size {args.block_size}; pass more text or a smaller --block_size")
    tokens_per_step = args.batch_size * args.block_size
    steps = round(args.train_tokens / tokens_per_step)
    print(f"data: {data_description} | fingerprint {fingerprint[:16]} | train {len(train):,} tokens | "
          f"val {len(val):,} tokens | vocab {vocab_size}", flush=True)
    print(f"train tokens: {steps * tokens_per_step:,} ({steps} steps x {args.batch_size} x {args.block_size}; "
          f"asked {args.train_tokens:,})", flush=True)

    # Everything that varies between runs comes from the seed: initialisation and data order.
    torch.manual_seed(args.seed)
    cfg = GPTConfig(vocab_size, args.block_size, args.n_layer, args.n_head, args.n_embd,
                    args.use_qk_norm, args.use_swiglu, args.tie_embeddings)
    with args.device:  # built where it trains: no copy, and the GPU draws the initial weights
        model = GPT(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    train_offsets = np.random.default_rng(args.seed).integers(0, len(train) - args.block_size - 1,
                                                              size=(steps, args.batch_size))
    n_val = max(1, args.eval_tokens // args.block_size)
    val_offsets = np.linspace(0, len(val) - args.block_size - 1, n_val).astype(np.int64)
    eval_every = args.eval_every or max(1, math.ceil(steps / 4))
    device_name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    print(f"model: {args.config} ({args.config_chosen_by}) | {n_params / 1e6:.2f}M parameters | {args.n_layer} layers, {args.n_head} heads, "
          f"{args.n_embd} wide | device {device_name} | torch {torch.__version__}", flush=True)

    graphed = args.device.type == "cuda" and args.cuda_graph
    optimizers = make_optimizers(model, args, graphed)
    train_step = TrainStep(model, optimizers, args, graphed)
    train_loss_sum, since_eval, train_time, history = torch.zeros((), device=args.device), 0, 0.0, []
    t_start = time.perf_counter()
    startup = t_start - start
    for step in range(1, steps + 1):
        set_lr(optimizers, lr_factor(step - 1, args, steps))
        rows = get_batch(train, train_offsets[step - 1], args.block_size, args.device)
        train_loss_sum += train_step(rows)
        since_eval += 1
        if step % eval_every == 0 or step == steps:
            train_loss = train_loss_sum.item() / since_eval  # .item() waits for the GPU
            train_time += time.perf_counter() - t_start
            eval_start = time.perf_counter()
            val_loss = evaluate(model, val, val_offsets, args)
            eval_time = time.perf_counter() - eval_start
            tok_s = step * tokens_per_step / train_time
            print(f"Step {step} | val_loss: {val_loss:.4f} | train_loss: {train_loss:.4f} | "
                  f"tok/s: {tok_s:,.0f} | elapsed: {time.perf_counter() - start:.1f}s", flush=True)
            history.append(dict(step=step, val_loss=val_loss, train_loss=train_loss, train_time_s=train_time,
                                eval_time_s=eval_time))
            if not (math.isfinite(val_loss) and math.isfinite(train_loss)):
                fail(f"training diverged at step {step}: loss is NaN or inf; lower --lr", code=3)
            train_loss_sum.zero_()
            since_eval, t_start = 0, time.perf_counter()

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.save_checkpoint:
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".ckpt.pt.", suffix=".tmp")
        os.close(fd)
        torch.save(dict(model=model.state_dict(), config=asdict(cfg), step=steps, seed=args.seed), tmp)
        os.replace(tmp, out / "ckpt.pt")
    metrics = dict(
        val_loss=val_loss, train_loss=train_loss, train_tokens=steps * tokens_per_step,
        train_tokens_requested=args.train_tokens, steps=steps, wall_time_s=time.perf_counter() - start,
        startup_s=startup, one_time_s=one_time, train_time_s=train_time, tokens_per_s=steps * tokens_per_step / train_time, n_params=n_params,
        cpu_time=time.process_time(),  # this process's user + system seconds: beside wall time, it shows a loaded machine
        flops_per_token=model.flops_per_token(), config=dict(asdict(cfg), preset=args.config),
        preset_chosen_by=args.config_chosen_by,
        seed=args.seed, device=device_name, torch_version=torch.__version__, data=data_description,
        data_fingerprint=fingerprint, flags={k: str(v) if isinstance(v, torch.device) else v
                                             for k, v in vars(args).items() if k != "config_chosen_by"},
        history=history)
    atomic_write(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    print(f"done: val_loss {val_loss:.4f} | {metrics['wall_time_s']:.1f}s | wrote {out / 'metrics.json'}", flush=True)


# -----------------------------------------------------------------------------
# Worker mode: run after run in one process, each exactly as a fresh process would run it.
# A fresh process costs seconds (import torch, the CUDA context, loading kernels on first use);
# training 1M tokens on a GPU takes about one. Protocol (docs/executors.md): after start-up print
# `exprun-worker: ready`; then for each stdin line {"argv": [...]} run `<common args> <argv>` and
# print `exprun-worker: done <exit code>`; stop after a failed job (its state is not trusted), at a
# malformed line (code 2), or at EOF (code 0).

READY, DONE = "exprun-worker: ready", "exprun-worker: done"
WARM_UP_STEPS = 5  # past the 3 eager steps, the CUDA graph's capture and a replay


def exit_code(exc):
    """The exit status a process ending with this SystemExit would have."""
    return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1


def run_job(argv, fresh, start):
    """main(argv) as a fresh process runs it; returns its exit code."""
    # What main and torch leave set in the process goes back to how it was at start-up: a job
    # without --num_threads gets torch's default, as in a fresh process. Everything random is
    # seeded inside main from --seed.
    torch.set_num_threads(fresh["num_threads"])
    torch.set_float32_matmul_precision(fresh["matmul_precision"])
    try:
        main(argv, start)
    except SystemExit as e:  # fail(), or --help
        return exit_code(e)
    except Exception:
        traceback.print_exc()  # as Python prints an uncaught one; the worker exits after it
        return 1
    return 0


def warm_up(common, args, fresh):
    """One short run with the common args (parsed: args) into a temporary folder, its output held
    back, so that the first job pays no one-time costs that later jobs do not: on a GPU the CUDA
    context, kernels loaded on first use and the first CUDA graph capture. On a CPU, where first
    calls cost far less, one step (about 0.3 s for tiny). Either way bad common args or data fail
    here, before `ready`. Returns the exit code; on failure prints what the run printed to stderr
    (the one-line error), as a job with these args would."""
    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    steps = WARM_UP_STEPS if on_gpu else 1
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory(prefix="train_llm-warm-up-") as tmp, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_job([*common, "--train_tokens", str(steps * args.batch_size * args.block_size),
                        "--eval_every", str(steps), "--eval_tokens", str(max(args.batch_size, 64) * args.block_size),
                        "--save_checkpoint", "false", "--output_dir", tmp], fresh, time.perf_counter())
    if code:
        print(err.getvalue(), end="", file=sys.stderr, flush=True)
    return code


def worker(common):
    """Worker mode's loop; returns the process's exit code."""
    fresh = dict(num_threads=torch.get_num_threads(), matmul_precision=torch.get_float32_matmul_precision())
    try:
        args = parse_args([*common, "--train_tokens", str(2**62)])  # the warm-up's step shape
    except SystemExit as e:  # bad common args (or --help) end the worker before `ready`
        return exit_code(e)
    code = warm_up(common, args, fresh)
    if code:
        return code
    print(READY, flush=True)
    for line in sys.stdin.buffer:  # bytes: a line that is not UTF-8 is malformed like any other
        start = time.perf_counter()
        try:
            job = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            job = None
        argv = job.get("argv") if isinstance(job, dict) else None
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            print(f'error: worker: expected one JSON object {{"argv": [strings]}} per line, got '
                  f'{line.decode(errors="replace").strip()[:200]!r}',
                  file=sys.stderr, flush=True)
            code = 2
        else:
            code = run_job([*common, *argv], fresh, start)
        print(f"{DONE} {code}", flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        sys.exit(worker([a for a in sys.argv[1:] if a != "--worker"]))
    main()
