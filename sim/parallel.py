"""Seed search in worker processes with ordered, deterministic results.

Collection and evaluation both walk seeds upward from RoboTwin's start seed for each task
and keep the first N that qualify (the expert solves them). Workers run seeds
concurrently; results are consumed in submission order, so the kept seeds, their order
and everything written are the same for 1 or many workers.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def make_executor(workers: int, initializer: Callable, initargs: tuple) -> ProcessPoolExecutor:
    # spawn: each worker opens its own GL context; none is inherited through fork
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=initializer, initargs=initargs)


def ordered_seed_search(
    executor: ProcessPoolExecutor,
    fn: Callable[[str, int], Any],
    task: str,
    first_seed: int,
    needed: int,
    max_tries: int,
    keep: Callable[[Any], bool],
    on_result: Callable[[int, Any, bool], None],
    window: int,
) -> int:
    """Run ``fn(task, seed)`` for seeds ``first_seed, first_seed + 1, ...`` until ``needed``
    results satisfy ``keep``; calls ``on_result(seed, result, kept)`` in seed order.
    Returns the next untried seed. Raises if ``max_tries`` seeds do not suffice."""
    inflight: deque[tuple[int, Future]] = deque()
    next_seed, tried, kept = first_seed, 0, 0
    while kept < needed:
        while len(inflight) < window and len(inflight) < needed - kept and tried < max_tries:
            inflight.append((next_seed, executor.submit(fn, task, next_seed)))
            next_seed += 1
            tried += 1
        if not inflight:
            raise RuntimeError(f"task '{task}': only {kept} of {needed} seeds qualified in {max_tries} tries "
                               f"(seeds {first_seed}..{next_seed - 1})")
        seed, fut = inflight.popleft()
        result = fut.result()
        ok = keep(result)
        kept += ok
        on_result(seed, result, ok)
    for _, fut in inflight:  # pragma: no cover - window never exceeds what is needed
        fut.cancel()
    return next_seed
