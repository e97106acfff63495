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
