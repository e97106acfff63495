"""Where candidates are judged: in the run's process (jobs=1) or in joblib workers (local
processes, or a Dask cluster through joblib's dask backend). A worker builds its inputs and
fitness task once per run and keeps them; a local worker dies with the run's process."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

import numpy as np
import torch
from joblib import Parallel, delayed, parallel_config

from ..proxy import Genome, prepare_inputs
from ..stats import load_stats_file
from .fitness import BenchesTask, CSPSettings, FitnessTask, Outcome

Benches = list[tuple[str, np.ndarray, np.ndarray]]  # per bench: statistics file, bits (N, L), accuracies (N,)

# This process's prepared inputs and fitness task, for the one run (benches, aggregate) it serves.
_CONTEXT: dict[tuple, tuple] = {}


def _context(benches: Benches, aggregate: str) -> tuple:
    key = (tuple((path, bits.tobytes(), acc.tobytes()) for path, bits, acc in benches), aggregate)
    if key not in _CONTEXT:
        _CONTEXT.clear()
        _CONTEXT[key] = (
            [prepare_inputs(load_stats_file(path)) for path, _, _ in benches],
            BenchesTask([FitnessTask(bits, acc) for _, bits, acc in benches], aggregate),
        )
    return _CONTEXT[key]


def _die_with(parent: int) -> None:
    """Have the system kill this worker process when `parent` (the run's process, which started
    it) ends, however it ends: a run killed with kill -9 would otherwise leave its loky workers
    waiting for work until their idle timeout (5 minutes). Each worker runs it first, as it
    starts (loky's initializer), so none outlives a run killed while its workers start. Linux
    only (prctl PR_SET_PDEATHSIG)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def judge_batch(benches: Benches, aggregate: str, genome_jsons: list[str], csp: CSPSettings) -> list[Outcome]:
    """Judge serialized genomes on each bench's statistics file and configurations (what a worker
    process runs). Small tensors: one thread per process is faster than torch's intra-op threads."""
    torch.set_num_threads(1)
    inputs, task = _context(benches, aggregate)
    return [task.judge(Genome.from_json(g), inputs, csp) for g in genome_jsons]


class Evaluator:
    """Judges candidates in this process (jobs=1) or in joblib workers (local processes, or a
    Dask cluster through joblib's dask backend), on `benches` (statistics file, bits,
    accuracies per bench) with their fitnesses aggregated by `aggregate`."""

    def __init__(
        self, benches: Benches, csp: CSPSettings, aggregate: str = "mean", jobs: int = 1, backend: str | None = None
    ):
        self.args = ([(str(path), bits, acc) for path, bits, acc in benches], aggregate)
        self.csp, self.jobs, self.backend = csp, jobs, backend

    def __call__(self, genomes: list[Genome]) -> list[Outcome]:
        """The outcomes of `genomes`, in their order."""
        payload = [g.to_json() for g in genomes]
        if self.jobs == 1 and self.backend is None:
            return judge_batch(*self.args, payload, self.csp)
        n = max(1, min(len(payload), abs(self.jobs) if self.jobs > 0 else 2))
        chunks = [payload[i::n] for i in range(n)]
        # A local worker dies with this process; a Dask worker is no child of ours.
        local = {"initializer": _die_with, "initargs": (os.getpid(),)} if self.backend in (None, "loky") else {}
        with parallel_config(backend=self.backend or "loky", n_jobs=self.jobs, **local):
            parts = Parallel()(delayed(judge_batch)(*self.args, c, self.csp) for c in chunks)
        out: list[Outcome | None] = [None] * len(payload)
        for i, part in enumerate(parts):
            out[i::n] = part
        return out

    def compute_quantization_errors(self, log: Callable[[str], None]) -> None:
        """BenchesTask.compute_quantization_errors on the inputs candidates are judged on, where they
        are judged in this process (jobs=1); a worker computes its own Q as its candidates read it."""
        if self.jobs == 1 and self.backend is None:
            inputs, task = _context(*self.args)
            task.compute_quantization_errors(inputs, log)
