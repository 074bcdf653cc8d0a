"""A synthetic RecBole atomic dataset with a large catalogue, for timing the main job by size.

Users follow item-to-item habits inside a few favourite genres, so that sequential models
have something to learn: each next item is, with probability ``--follow``, the successor of
the previous one in its genre, else a Zipf-popular item of one of the user's genres.
Deterministic for a given ``--seed``; writes ``<out>/<name>/<name>.inter`` and ``.item``.

    python benchmarks/synthetic_catalogue.py --items=10000 --interactions=100000 --out=/tmp/syn
    python benchmarks/main_job_walltime.py --dataset=syn10k --data_path=/tmp/syn
"""

import argparse
import json
import os
import sys

import numpy as np


def interactions(items, total, users, genres, follow, rng):
    """``(user, item, timestamp)`` rows, every user with about ``total / users`` interactions."""
    per_genre = items // genres
    zipf = 1.0 / np.arange(1, per_genre + 1)
    zipf /= zipf.sum()
    rows = []
    for user in range(1, users + 1):
        liked = rng.choice(genres, size=3, replace=False)
        item = None
        for step in range(total // users):
            if item is not None and rng.random() < follow:
                genre, rank = divmod(item - 1, per_genre)
                item = genre * per_genre + (rank + 1) % per_genre + 1
            else:
                item = int(rng.choice(liked)) * per_genre + int(rng.choice(per_genre, p=zipf)) + 1
            rows.append((user, item, 1_000_000 + 1000 * user + step))
    return rows


def write(out, name, rows, items, genres):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        handle.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    per_genre = items // genres
    with open(os.path.join(folder, f"{name}.item"), "w", encoding="utf-8") as handle:
        handle.write("item_id:token\tmovie_title:token_seq\n")
        handle.writelines(f"{i}\tgenre {(i - 1) // per_genre} title {i}\n" for i in range(1, items + 1))
    return folder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--items", type=int, default=10000)
    p.add_argument("--interactions", type=int, default=100000)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--genres", type=int, default=100)
    p.add_argument("--follow", type=float, default=0.5, help="probability of the habitual next item")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="syn10k")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    rows = interactions(args.items, args.interactions, args.users, args.genres, args.follow,
                        np.random.default_rng(args.seed))
    folder = write(args.out, args.name, rows, args.items, args.genres)
    used = len({item for _, item, _ in rows})
    print(json.dumps({"benchmark": "synthetic_catalogue", "folder": folder, "interactions": len(rows),
                      "users": args.users, "items": args.items, "items_used": used}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
