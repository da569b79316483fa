"""Training-speed and quality benchmark: recd's item2vec against gensim Word2Vec on one corpus.

Both models train on the same corpus, each user's train positives in time
order (``trainer.evaluation.baselines.user_sentences``): gensim as sentences, item2vec as
the same (user, item) rows. Same dim, window = context, negatives, epochs;
gensim runs skip-gram with ``workers=2, min_count=1, sample=0``.

Counting pairs fairly. item2vec trains ``context`` pairs per target per
epoch, exactly (``FitReport.samples``). gensim draws, per centre word, a
window ``b`` uniform in 1..window (``shrink_windows``) and trains one pair
per neighbour inside it, so its pairs per epoch are, in expectation,
``sum_sentences sum_i mean_b [min(b, i) + min(b, L-1-i)]`` - computed exactly
below. (The upper bound ``L * min(2 * window, L - 1)`` would credit gensim
with ~1.6x the pairs it trains; it is printed for reference only.) Seconds
are wall-clock of the whole ``fit`` for item2vec (pair sampling included)
and of ``train`` for gensim (vocabulary built beforehand, not timed). CPU
seconds of the process are printed too: on a shared machine they are the
load-independent figure.

Usage: ``python -m bench.train --dataset ../shared/data/ml-100k-recbole``;
the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import torch

from bench.common import python_loop_seconds
from trainer.datasets import load_dataset
from trainer.evaluation.baselines import FactorScorer, _crc_hash
from trainer.evaluation.scoring import EmbeddingScorer, evaluate
from trainer.evaluation.splits import protocol_split
from trainer.fit import resolve_device
from trainer.interactions import Interactions
from trainer.models.item2vec import Item2Vec


def corpus(train: Interactions) -> tuple[list[np.ndarray], Interactions]:
    """Each user's positives in time order, and the same rows as an Interactions for item2vec."""
    pos = train.positives()
    order = np.lexsort((np.arange(len(pos)), pos.ts, pos.users))
    users, items = pos.users[order], pos.items[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    sentences = [chunk for chunk in np.split(items.astype(np.int64), bounds) if len(chunk)]
    rows = Interactions(
        users, items, pos.weights[order], pos.values[order], pos.ts[order], train.user_ids, train.item_ids
    )
    return sentences, rows


def gensim_pairs(lengths: np.ndarray, window: int) -> tuple[float, float]:
    """(expected pairs gensim trains per epoch with shrinking windows, the no-shrink upper bound)."""
    expected = 0.0
    for length, n in zip(*np.unique(lengths, return_counts=True), strict=True):
        i = np.arange(length)
        per = np.mean([np.minimum(b, i).sum() + np.minimum(b, length - 1 - i).sum() for b in range(1, window + 1)])
        expected += float(per) * int(n)
    upper = float(np.sum(lengths * np.minimum(2 * window, lengths - 1)))
    return expected, upper


def run_gensim(sentences: list[np.ndarray], args: argparse.Namespace) -> tuple[Any, float, float]:
    """(model, wall seconds, cpu seconds) of gensim's ``train``."""
    from gensim.models import Word2Vec

    tokens = [[str(i) for i in s.tolist()] for s in sentences]
    model = Word2Vec(
        vector_size=args.dim,
        window=args.window,
        negative=args.negatives,
        sg=1,
        min_count=1,
        sample=0.0,
        workers=2,
        seed=args.seed,
        hashfxn=_crc_hash,
    )
    model.build_vocab(tokens)
    wall, cpu = time.perf_counter(), time.process_time()
    model.train(tokens, total_examples=len(tokens), epochs=args.epochs)
    return model, time.perf_counter() - wall, time.process_time() - cpu


def gensim_scorer(model: Any, rows: Interactions) -> FactorScorer:
    """gensim vectors as a scorer: user = mean of their train positives' vectors (as ``fit_gensim``)."""
    items = np.zeros((rows.n_items, model.wv.vector_size), np.float32)
    items[[int(w) for w in model.wv.index_to_key]] = model.wv.vectors
    sums = np.zeros((rows.n_users, items.shape[1]), np.float32)
    np.add.at(sums, rows.users, items[rows.items])
    counts = np.maximum(np.bincount(rows.users, minlength=rows.n_users), 1).astype(np.float32)
    return FactorScorer("gensim", (sums / counts[:, None]).astype(np.float32), items)


def run_item2vec(rows: Interactions, args: argparse.Namespace) -> tuple[Item2Vec, int, float, float]:
    """(model, pairs, wall seconds, cpu seconds) of one item2vec ``fit``."""
    settings: dict[str, Any] = {
        "dim": args.dim,
        "epochs": args.epochs,
        "context": args.window,
        "negatives": args.negatives,
        "seed": args.seed,
    }
    if args.sampler:
        settings["sampler"] = args.sampler
    if args.batch:
        settings["batch"] = args.batch
    if args.plan:
        settings["plan"] = args.plan
    for spec in args.set:
        name, _, value = spec.partition("=")
        settings[name] = json.loads(value)
    model = Item2Vec(device=args.device, threads=args.threads, **settings)
    wall, cpu = time.perf_counter(), time.process_time()
    report = model.fit(rows)
    return model, report.samples, time.perf_counter() - wall, time.process_time() - cpu


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="../shared/data/ml-100k-recbole")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--negatives", type=int, default=5)
    p.add_argument("--window", "--context", dest="window", type=int, default=4)
    p.add_argument("--sampler", default="", help="item2vec negative sampler (default: the model's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=0, help="item2vec targets per SGD step (default: the model's)")
    p.add_argument("--set", action="append", default=[], help="any other item2vec setting, NAME=JSON (repeatable)")
    p.add_argument("--plan", default="", help="item2vec epoch planning: host, device or auto (default: the model's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; medians are reported")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


Rates = list[tuple[float, float]]  # (pairs per wall second, pairs per CPU second) of each run


def race(
    rows: Interactions, sentences: list[np.ndarray], args: argparse.Namespace, g_pairs: float, g_upper: float
) -> tuple[Item2Vec, Any, int, Rates, Rates]:
    """``args.repeats`` interleaved fits of item2vec and gensim, each printed: (the last models, item2vec's pairs
    per fit, item2vec's rates, gensim's rates)."""
    ours: Rates = []
    theirs: Rates = []
    model = gensim = None
    for rep in range(args.repeats):
        model, pairs, wall, cpu = run_item2vec(rows, args)
        ours.append((pairs / wall, pairs / cpu))
        print(
            f"[{rep}] item2vec: {pairs} pairs in {wall:.2f}s ({ours[-1][0] / 1e6:.2f}M/s, "
            f"{ours[-1][1] / 1e6:.2f}M per cpu-s)",
            flush=True,
        )
        gensim, wall, cpu = run_gensim(sentences, args)
        theirs.append((g_pairs / wall, g_pairs / cpu))
        print(
            f"[{rep}] gensim:   {g_pairs:.0f} pairs (upper bound {g_upper:.0f}) in {wall:.2f}s "
            f"({theirs[-1][0] / 1e6:.2f}M/s, {theirs[-1][1] / 1e6:.2f}M per cpu-s)",
            flush=True,
        )
    assert model is not None and gensim is not None
    return model, gensim, pairs, ours, theirs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    loop_before = python_loop_seconds()
    data = load_dataset(args.dataset)
    train, test, protocol = protocol_split(data, args.seed)
    sentences, rows = corpus(train)
    g_pairs, g_upper = gensim_pairs(np.array([len(s) for s in sentences]), args.window)
    g_pairs, g_upper = g_pairs * args.epochs, g_upper * args.epochs
    print(f"{data.name}: {protocol}; {len(sentences)} sentences, {len(rows)} positives, {train.n_items} items")
    model, gensim, pairs, ours, theirs = race(rows, sentences, args, g_pairs, g_upper)
    mine = evaluate(EmbeddingScorer(model, train), train, test, ks=(20,), seed=args.seed)
    base = evaluate(gensim_scorer(gensim, rows), train, test, ks=(20,), seed=args.seed)
    rate = statistics.median(r[0] for r in ours)
    g_rate = statistics.median(r[0] for r in theirs)
    print(
        f"per cpu-second: item2vec {statistics.median(r[1] for r in ours) / 1e6:.2f}M, "
        f"gensim {statistics.median(r[1] for r in theirs) / 1e6:.2f}M"
    )
    return {
        "dataset": data.name,
        "device": _device_name(args.device),
        "batch": model.config.batch,
        "pairs": int(pairs),
        "seconds": round(pairs / rate, 3),
        "pairs_per_s": round(rate),
        "gensim_pairs_per_s": round(g_rate),
        "pairs_per_s_vs_gensim": round(rate / g_rate, 3),
        "recall@20": round(mine["recall@20"], 4),
        "gensim_recall@20": round(base["recall@20"], 4),
        "ndcg@20": round(mine["ndcg@20"], 4),
        "gensim_ndcg@20": round(base["ndcg@20"], 4),
        "python_loop_s": [loop_before, python_loop_seconds()],
    }


def _device_name(name: str) -> str:
    dev = resolve_device(name)
    return f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "cpu"


if __name__ == "__main__":
    print(json.dumps(main()))
