"""The --backend and --scheduler flags of the commands whose work joblib spreads (`evolve`'s
fitness, `bench build`'s measurements): local processes, or the workers of a Dask cluster."""

from __future__ import annotations

from ..errors import EvoproxyError


def add_backend_args(group) -> None:
    """Add --backend and --scheduler to an argument group."""
    group.add_argument(
        "--backend", choices=["loky", "dask"], help="joblib backend (loky: local processes; dask: --scheduler ADDRESS)"
    )
    group.add_argument("--scheduler", help="Dask scheduler address, such as tcp://host:8786 (default: a local cluster)")


def parallel_backend(args, log) -> str | None:
    """The joblib backend the flags name: None (local processes) or "dask", with a Client connected
    to the scheduler at --scheduler, else to a local cluster it starts (its dashboard goes to `log`)."""
    if args.backend != "dask":
        if args.scheduler:
            raise EvoproxyError("--scheduler needs --backend dask")
        return None
    try:
        from dask.distributed import Client
    except ImportError:
        raise EvoproxyError("--backend dask needs dask.distributed: pip install 'dask[distributed]'") from None
    try:
        client = Client(args.scheduler) if args.scheduler else Client(processes=True)
    except (OSError, TimeoutError, ValueError) as exc:
        raise EvoproxyError(
            f"--scheduler {args.scheduler}: cannot connect ({type(exc).__name__}: {exc}); give the address of a "
            "running Dask scheduler, such as tcp://host:8786"
        ) from None
    log(f"dask cluster: {client.dashboard_link}")
    return "dask"
