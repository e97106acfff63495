"""Token data for language models (tokens.py through open_data): a text file's bytes, an .npz of a
1-D stream, of (N, T) windows or of given train/test parts, and the shipped King James text; how
streams are cut into blocks (every 20th the test part) and windows, seeds, bad token arrays, and
DataSource.check_classes against a model's vocabulary."""

import numpy as np
import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError
from evoproxy.model import MODELS, DataSettings, TinyLM, default_data, layer_registry, open_data
from evoproxy.model.text import corpus_bytes

BLOCK, TEST_EVERY = 4096, 20  # what tokens.py documents: blocks of 4096 tokens, every 20th the test part


def _rows(pair):
    """Each window as seq_len + 1 tokens: its inputs, then its last target."""
    inputs, targets = pair
    return torch.cat([inputs, targets[:, -1:]], 1)


def _fingerprints(rows):
    """One int64 per row, sorted: two sets of windows are the same multiset when these are equal."""
    weights = torch.randint(1, 2**31, (rows.shape[1],), generator=torch.Generator().manual_seed(0))
    return (rows.long() * weights).sum(1).sort().values


def _expected_windows(stream, seq_len):
    """Windows of seq_len + 1 tokens, each starting where the last one's final token is."""
    return stream.unfold(0, seq_len + 1, seq_len)


def _block_coded_text(path, blocks=45, tail=100, seed=0):
    """A text whose byte at position p is 5 · (p // BLOCK) + a random 0..4: a byte's block is byte // 5."""
    n = blocks * BLOCK + tail
    pos = np.arange(n)
    data = (pos // BLOCK * 5 + np.random.default_rng(seed).integers(0, 5, n)).astype(np.uint8)
    path.write_bytes(data.tobytes())
    return torch.from_numpy(data).long()


def test_text_file_windows_are_its_bytes_cut_into_blocks_with_every_20th_the_test_part(tmp_path):
    seq_len = 15
    raw = _block_coded_text(tmp_path / "t.txt")
    source = open_data(str(tmp_path / "t.txt"), DataSettings(seq_len=seq_len, calib_images=32))
    train, test = source.training(), source.evaluation()
    # 45 whole blocks (the 100-byte tail is dropped); blocks 19 and 39 are the test part.
    assert (len(train[0]), len(test[0])) == ((43 * BLOCK - 1) // seq_len, (2 * BLOCK - 1) // seq_len)
    for inputs, targets in (train, test):
        assert inputs.shape[1:] == targets.shape[1:] == (seq_len,)
        assert inputs.dtype == targets.dtype == torch.int64
        assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs shifted by one
    test_blocks = set((_rows(test) // 5).unique().tolist())
    train_blocks = set((_rows(train) // 5).unique().tolist())
    assert test_blocks == {19, 39}
    assert train_blocks == set(range(45)) - {19, 39}  # no block in both parts, the tail in neither
    # Each part is exactly the windows of its blocks in text order: targets are the next bytes.
    blocks = raw[: 45 * BLOCK].view(45, BLOCK)
    is_test = torch.arange(45) % TEST_EVERY == TEST_EVERY - 1
    for part, mask in ((train, ~is_test), (test, is_test)):
        expected = _expected_windows(blocks[mask].flatten(), seq_len)
        assert torch.equal(_fingerprints(_rows(part)), _fingerprints(expected))


def test_text_source_reads_as_token_data_for_a_language_model(tmp_path):
    raw = _block_coded_text(tmp_path / "t.txt", blocks=21)
    source = open_data(str(tmp_path / "t.txt"), DataSettings(seq_len=12, calib_images=10))
    assert source.metric.name == "perplexity" and source.is_text
    assert source.input_dtype == torch.int64 and source.input_shape == (12,)
    assert source.classes == int(raw[: 21 * BLOCK].max()) + 1 < int(raw.max()) + 1  # the tail is dropped
    calib_x, calib_y = source.calibration()
    assert calib_x.shape == calib_y.shape == (10, 12)
    # The calibration pool is the start of the (shuffled) train part.
    assert torch.equal(calib_x, source.training()[0][:10]) and torch.equal(calib_y, source.training()[1][:10])
    assert torch.equal(source.calibration(3)[0], calib_x[:3])
    assert len(source.evaluation(5)[0]) == 5


def test_the_data_seed_decides_the_order_of_the_windows_not_which_they_are(tmp_path):
    _block_coded_text(tmp_path / "t.txt", blocks=21)
    spec = str(tmp_path / "t.txt")
    first = open_data(spec, DataSettings(seed=3, seq_len=9, calib_images=16))
    again = open_data(spec, DataSettings(seed=3, seq_len=9, calib_images=16))
    other = open_data(spec, DataSettings(seed=4, seq_len=9, calib_images=16))
    assert torch.equal(first.calibration()[0], again.calibration()[0])
    assert torch.equal(first.evaluation()[0], again.evaluation()[0])
    assert not torch.equal(first.calibration()[0], other.calibration()[0])
    assert not torch.equal(first.evaluation()[0], other.evaluation()[0])
    for part in ("training", "evaluation"):
        a, b = getattr(first, part)(), getattr(other, part)()
        assert torch.equal(_fingerprints(_rows(a)), _fingerprints(_rows(b)))


def test_a_stream_too_short_for_the_seq_len_is_a_one_line_error_naming_it(tmp_path):
    seq_len, need = 7, TEST_EVERY * (7 + 1)
    (tmp_path / "ok.txt").write_bytes((bytes(range(65, 91)) * 10)[:need])
    source = open_data(str(tmp_path / "ok.txt"), DataSettings(seq_len=seq_len))
    assert len(source.training()[0]) >= 1 and len(source.evaluation()[0]) == 1  # exactly enough: one test window
    (tmp_path / "short.txt").write_bytes(b"x" * (need - 1))
    source = open_data(str(tmp_path / "short.txt"), DataSettings(seq_len=seq_len))  # nothing is read yet
    with pytest.raises(EvoproxyError, match=rf"holds {need - 1} tokens; at least {need} .*--seq-len {seq_len}") as info:
        source.calibration()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"tokens": np.arange(400.0)}, r"whole-number ids \(an integer array\), got torch.float64"),
        ({"tokens": np.ones(400, bool)}, "whole-number ids"),
        ({"tokens": np.arange(400) - 3}, "token ids must be from 0 to 2147483647, found -3 to 396"),
        ({"tokens": np.full(400, 2**40)}, "token ids must be from 0"),
        ({"tokens": np.zeros((4, 5, 6), np.int64)}, r"1-D stream or \(N, T\) windows, got shape \(4, 5, 6\)"),
        ({"tokens": np.zeros(0, np.int64)}, r"got shape \(0,\)"),
        ({"tokens": np.array(["a"] * 400)}, "arrays must be numbers"),
        ({"tokens": np.arange(99)}, "holds 99 tokens; at least 100 are needed for windows of --seq-len 4"),
        ({"tokens": np.zeros((1, 9), np.int64)}, r"1 window\(s\); at least 2 are needed"),
        ({"tokens": np.zeros((9, 1), np.int64)}, "token windows need at least 2 tokens each"),
        ({"train_tokens": np.arange(400)}, "give `tokens`, or `train_tokens` with `test_tokens`"),
        ({"train_tokens": np.arange(3), "test_tokens": np.arange(40)}, "the train part holds no window of --seq-len 4"),
        ({"train_tokens": np.arange(40), "test_tokens": np.arange(3)}, "the test part holds no window of --seq-len 4"),
        ({"train_tokens": np.arange(40), "test_tokens": np.arange(40.0)}, "test_tokens: tokens must be whole-number"),
    ],
)
def test_bad_token_arrays_are_one_line_errors(tmp_path, content, message):
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(EvoproxyError, match=message) as info:
        open_data(str(tmp_path / "bad.npz"), DataSettings(seq_len=4)).calibration()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_unsigned_token_arrays_as_tokenizers_save_them_are_read(tmp_path, dtype):
    np.savez(tmp_path / "u.npz", tokens=(np.arange(400) % 300).astype(dtype))
    source = open_data(str(tmp_path / "u.npz"), DataSettings(seq_len=4))
    assert source.calibration()[0].dtype == torch.int64 and source.classes == 300


def test_an_npz_with_test_tokens_but_no_train_tokens_says_what_token_data_needs(tmp_path):
    np.savez(tmp_path / "bad.npz", test_tokens=np.arange(400))
    with pytest.raises(EvoproxyError, match="train_tokens"):
        open_data(str(tmp_path / "bad.npz"), DataSettings(seq_len=4)).calibration()


def test_an_npz_without_token_arrays_is_not_read_as_tokens(tmp_path):
    np.savez(tmp_path / "none.npz", ids=np.arange(400))
    with pytest.raises(EvoproxyError, match="lacks images and labels") as info:
        open_data(str(tmp_path / "none.npz"), DataSettings(seq_len=4)).calibration()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("n, n_test", [(2, 1), (20, 1), (39, 1), (40, 2), (41, 2)])
def test_npz_windows_use_t_minus_1_tokens_and_keep_the_last_twentieth_for_test(tmp_path, n, n_test):
    t = 9
    tokens = np.arange(n * t).reshape(n, t)  # row i holds i·9 … i·9 + 8: a row is known by its first id
    np.savez(tmp_path / "w.npz", tokens=tokens)
    source = open_data(str(tmp_path / "w.npz"), DataSettings(seq_len=4, calib_images=100))  # seq_len is not used
    assert source.input_shape == (t - 1,) and source.is_text
    train, test = source.training(), source.evaluation()
    assert (len(train[0]), len(test[0])) == (n - n_test, n_test)
    for inputs, targets in (train, test):
        rows = torch.as_tensor(tokens)[inputs[:, 0] // t]
        assert torch.equal(inputs, rows[:, :-1]) and torch.equal(targets, rows[:, 1:])
    assert sorted((test[0][:, 0] // t).tolist()) == list(range(n - n_test, n))  # the last rows, not shuffled in
    assert source.classes == n * t


def test_given_train_and_test_token_parts_are_used_as_they_are(tmp_path):
    train_stream = np.arange(60) % 50  # 1-D: cut into windows of seq_len + 1, no block left out
    test_windows = np.arange(18).reshape(3, 6) + 100  # (N, T): used as they are, T − 1 each
    np.savez(tmp_path / "p.npz", train_tokens=train_stream, test_tokens=test_windows)
    source = open_data(str(tmp_path / "p.npz"), DataSettings(seq_len=4))
    expected = _expected_windows(torch.as_tensor(train_stream), 4)
    assert len(expected) == (60 - 1) // 4
    assert torch.equal(_fingerprints(_rows(source.training())), _fingerprints(expected))
    test_x, test_y = source.evaluation()
    assert test_x.shape == (3, 5)
    assert torch.equal(_fingerprints(_rows((test_x, test_y))), _fingerprints(torch.as_tensor(test_windows)))
    assert source.classes == 118


class SmallVocabLM(nn.Module):
    """A language model with a vocabulary of 100: (N, T) ids to (N, T, 100) logits."""

    def __init__(self, pool: bool = False):
        super().__init__()
        self.embed, self.head, self.pool = nn.Embedding(100, 8), nn.Linear(8, 100), pool

    def forward(self, tokens):
        out = self.head(self.embed(tokens))
        return out.mean(1) if self.pool else out


def _token_npz(path, high, n=400):
    np.savez(path, tokens=np.random.default_rng(0).integers(0, high, n))
    return open_data(str(path), DataSettings(seq_len=8))


def test_token_ids_beyond_the_vocabulary_are_refused_before_the_embedding_fails(tmp_path):
    source = _token_npz(tmp_path / "d.npz", 201)
    top = source.classes - 1
    assert top > 100
    model = SmallVocabLM()
    with pytest.raises(IndexError):  # what running the model on the data itself would do
        model(source.calibration(2)[0])
    model.train()
    with pytest.raises(EvoproxyError, match=rf"token ids up to {top}, beyond the model's vocabulary of 100") as info:
        source.check_classes(model)
    assert "\n" not in str(info.value) and model.training  # the model's mode is given back
    _token_npz(tmp_path / "fits.npz", 100).check_classes(model)  # ids 0 … 99 fit: no error
    torch.manual_seed(0)
    lm = TinyLM(dim=32, blocks=1, heads=2, hidden=64, context=16)
    source.check_classes(lm)  # bytes fit TinyLM's 256
    with pytest.raises(EvoproxyError, match="beyond the model's vocabulary of 256"):
        _token_npz(tmp_path / "wide.npz", 300).check_classes(lm)


def test_a_model_without_per_token_logits_is_refused_for_token_data(tmp_path):
    source = _token_npz(tmp_path / "d.npz", 50)
    with pytest.raises(EvoproxyError, match=r"shape \(1, 100\) for tokens of shape \(1, 8\).*\(batch, T, vocabulary\)"):
        source.check_classes(SmallVocabLM(pool=True))


@pytest.fixture(scope="module")
def kjv():
    """The shipped text, its bytes and its source with the shipped model's windows of 256 tokens."""
    return corpus_bytes().long(), open_data("kjv", DataSettings(seq_len=256))


def test_shipped_text_is_cut_into_15359_train_and_799_test_windows_of_its_blocks(kjv):
    raw, source = kjv
    train, test = source.training(), source.evaluation()
    assert (len(train[0]), len(test[0])) == (15359, 799)
    assert source.is_text and source.input_shape == (256,) and source.input_dtype == torch.int64
    assert len(source.calibration()[0]) == DataSettings().calib_images
    n_blocks = len(raw) // BLOCK
    blocks = raw[: n_blocks * BLOCK].view(n_blocks, BLOCK)
    is_test = torch.arange(n_blocks) % TEST_EVERY == TEST_EVERY - 1
    train_prints, test_prints = _fingerprints(_rows(train)), _fingerprints(_rows(test))
    assert torch.equal(train_prints, _fingerprints(_expected_windows(blocks[~is_test].flatten(), 256)))
    assert torch.equal(test_prints, _fingerprints(_expected_windows(blocks[is_test].flatten(), 256)))
    assert not set(train_prints.tolist()) & set(test_prints.tolist())  # no window of the test part is trained on
    assert source.classes == int(raw.max()) + 1 <= 128  # plain ASCII


def test_the_shipped_language_model_is_measured_on_the_shipped_text(kjv):
    _, source = kjv
    assert default_data("tinylm-kjv") == "kjv" and default_data("default") == "fmnist"
    assert default_data("pkg.mod:fn") == "fmnist"
    spec = MODELS["tinylm-kjv"]
    assert spec.data == "kjv" and spec.input_shape == source.input_shape
    torch.manual_seed(0)
    model = spec.build()
    layers = layer_registry(model, spec.input_shape, input_dtype=source.input_dtype)
    assert len(layers) == 4 * 6 + 1 and layers[-1].name == "head"
    assert layers[0].name == "blocks.0.attn.q" and layers[0].macs == 256 * 256 * 256
    source.check_classes(model)  # bytes fit the vocabulary of 256
