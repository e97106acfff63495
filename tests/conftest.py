import pytest
import torch
from torch import nn

# The tests run many small tensor operations: on a 2-core machine, torch's intra-op threads wait
# for each other far longer than they compute (up to 60× slower), so the suite uses one thread.
torch.set_num_threads(1)


class TinyNet(nn.Module):
    """Conv → tanh → Linear: small enough for an exact Hessian, smooth so it is well defined."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2, bias=False)
        self.fc = nn.Linear(18, 3, bias=False)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = TinyNet().double()
    x = torch.randn(16, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    return model, x, y


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # No test may read or write the user's statistics cache, or read a Fashion-MNIST installed on
    # the machine: every test sees what a fresh machine sees, the package alone.
    monkeypatch.setenv("EVOPROXY_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "no-fmnist").mkdir()
    monkeypatch.setenv("EVOPROXY_FMNIST_DIR", str(tmp_path / "no-fmnist"))


@pytest.fixture(autouse=True)
def _quiet_start(monkeypatch):
    # Progress lines come once PROGRESS_SECONDS have passed since the last line of any loop: each test
    # starts that interval afresh, so that no test's output depends on how long the tests before it took.
    from evoproxy import pace

    monkeypatch.setattr(pace, "_quiet_since", None)


@pytest.fixture(scope="session")
def _stats_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stats-cache")


@pytest.fixture
def shared_stats_cache(_stats_cache_dir, monkeypatch):
    """One statistics cache for every test module that asks for it (with
    `pytestmark = pytest.mark.usefixtures("shared_stats_cache")`): the shipped models'
    statistics take a while, so they are computed once per session, not once per test or module.
    No test of these modules changes the cache's entries."""
    monkeypatch.setenv("EVOPROXY_CACHE_DIR", str(_stats_cache_dir))
    return _stats_cache_dir


@pytest.fixture
def one_line_error(capsys):
    """A check that a command printed exactly one error line (warnings aside), no traceback,
    holding each of the given texts; returns that line."""

    def check(*needles: str) -> str:
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if not l.startswith("evoproxy: warning:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in lines[0], lines[0]
        return lines[0]

    return check


@pytest.fixture
def trained_mlp(tmp_path, monkeypatch):
    """mlp.pt (user_models.mlp fitted to user_models.vectors) in the cwd, and the model and data
    flags that use it."""
    import user_models

    monkeypatch.chdir(tmp_path)
    torch.save(user_models.fit(user_models.mlp(), *user_models.vectors()).state_dict(), "mlp.pt")
    return ["--model", "user_models:mlp", "--weights", "mlp.pt", "--data", "user_models:vectors"]
