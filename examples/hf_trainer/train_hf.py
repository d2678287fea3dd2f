"""A tiny GPT-2 trained from scratch with the Hugging Face Trainer, as exprun sees your own script.

Nothing is downloaded: the model is a ``GPT2Config`` of about 250k parameters with random
weights, the tokens are bytes (vocabulary 256, no tokenizer), and the text is this Python's
own standard-library sources. Training ends with ``trainer.evaluate()`` and
``trainer.save_metrics("eval", ...)``, which writes ``eval_results.json`` with ``eval_loss``
into the output dir: that file is what exprun records (``exprun_result`` in ``pytest.ini``).

    python train_hf.py --seed 42 --max_steps 32 --output_dir out/run42
    EXPRUN_SEED=42 EXPRUN_OUTPUT_DIR=out/run42 python train_hf.py --max_steps 32

The options below are the experiment flags: ``pytest --experiment=learning_rate=3e-3``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import sysconfig
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; make sure nothing is even asked for

import torch  # noqa: E402

BLOCK_SIZE = 64
BATCH_SIZE = 16  # BATCH_SIZE * BLOCK_SIZE = 1024 tokens a step: exprun_tokens_per_step in pytest.ini
CORPUS_BYTES = 1_500_000
VAL_BLOCKS = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    # What exprun sets for every run: by argument, or else by environment variable.
    p.add_argument("--seed", type=int, default=int(env("EXPRUN_SEED", "42")))
    p.add_argument("--output_dir", default=env("EXPRUN_OUTPUT_DIR", "out"))
    p.add_argument("--max_steps", type=int, default=None, help="default: EXPRUN_TRAIN_TOKENS / 1024 tokens a step")
    # Experiment flags.
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--warmup_steps", type=int, default=4)
    p.add_argument("--n_layer", type=int, default=2)
    p.add_argument("--n_embd", type=int, default=96)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--num_threads", type=int, default=1,
                   help="torch threads; one is fastest for a model this small, and steady on a busy machine")
    args = p.parse_args(argv)
    if args.max_steps is None:
        args.max_steps = max(1, round(int(env("EXPRUN_TRAIN_TOKENS", "32768")) / (BATCH_SIZE * BLOCK_SIZE)))
    return args


def stdlib_bytes() -> tuple[bytes, bytes]:
    """About 1.5 MB of standard-library sources, split into train and val by a hash of each path.

    The choice depends only on the file names, never on the seed, so every run sees the same data.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        sys.exit(f"train_hf.py: no standard-library sources under {root} to train on")
    digest = {p: hashlib.sha256(p.name.encode()).digest() for p in files}
    train, val, total = [], [], 0
    for path in sorted(files, key=digest.get):
        if total >= CORPUS_BYTES:
            break
        data = path.read_bytes()
        (val if digest[path][0] < 26 else train).append(data)  # about one file in ten is val
        total += len(data)
    return b"".join(train), b"".join(val)


class Blocks(torch.utils.data.Dataset):
    """Non-overlapping BLOCK_SIZE-byte windows; GPT-2 shifts the labels itself."""

    def __init__(self, data: bytes, limit: int | None = None) -> None:
        tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        n = len(tokens) // BLOCK_SIZE if limit is None else min(limit, len(tokens) // BLOCK_SIZE)
        self.blocks = tokens[: n * BLOCK_SIZE].view(n, BLOCK_SIZE)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)  # before the model exists: its random initial weights depend on the seed
    train_bytes, val_bytes = stdlib_bytes()
    config = GPT2Config(vocab_size=256, n_positions=BLOCK_SIZE, n_embd=args.n_embd, n_layer=args.n_layer,
                        n_head=4, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # what it is; saves transformers a warning about guessing it
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"data: {len(train_bytes):,} train / {len(val_bytes):,} val bytes", flush=True)
    training = TrainingArguments(
        output_dir=args.output_dir,
        seed=args.seed,
        max_steps=args.max_steps,
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=VAL_BLOCKS,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        lr_scheduler_type="cosine",
        save_strategy="no",  # exprun needs the metrics, not checkpoints
        eval_strategy="no",  # one evaluation, at the end: the value exprun records
        logging_steps=max(1, args.max_steps // 4),
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=training, train_dataset=Blocks(train_bytes),
                      eval_dataset=Blocks(val_bytes, VAL_BLOCKS))
    trainer.train()
    metrics = trainer.evaluate()
    metrics["global_step"] = trainer.state.global_step  # exprun reads the step next to eval_loss
    trainer.save_metrics("eval", metrics)  # writes eval_results.json in the output dir
    print(f"final eval_loss {metrics['eval_loss']:.4f} at step {trainer.state.global_step}", flush=True)


if __name__ == "__main__":
    main()
