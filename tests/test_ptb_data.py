import pytest
import torch

from helpers.configs import SHARED_DATA
from helpers.data import read_ptb_reference
from pbexp.data import locate
from pbexp.data.ptb import load_ptb
from pbexp.errors import DataError
from pbexp.training.tasks import LMTask, batchify


def test_vocab_from_train_in_first_appearance_order(tmp_path):
    d = tmp_path / "ptb"
    d.mkdir()
    (d / "ptb.train.txt").write_text(" b a c \n a b \n")
    (d / "ptb.valid.txt").write_text(" a \n")
    (d / "ptb.test.txt").write_text(" c b \n")
    data = load_ptb(tmp_path, download=False)
    assert data.vocab.itos == ["b", "a", "c", "<eos>"]
    assert data.train.tolist() == [0, 1, 2, 3, 1, 0, 3]
    assert data.valid.tolist() == [1, 3]
    assert data.test.tolist() == [2, 0, 3]


def test_batchify_columns_are_contiguous_text():
    stream = torch.arange(23)
    b = batchify(stream, 4)
    assert b.shape == (5, 4)  # 23 // 4 = 5 rows, tail of 3 dropped
    assert b[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert b[:, 3].tolist() == [15, 16, 17, 18, 19]


def test_bptt_windows_shift_targets_by_one(tiny_ptb):
    data = load_ptb(tiny_ptb, download=False)
    task = LMTask(data, batch_size=4, bptt=8, eval_batch_size=4)
    windows = list(task.windows(task.train))
    assert len(windows) == task.num_batches()
    assert all(x.shape == y.shape for x, y in windows)
    assert windows[0][0].shape == (8, 4)
    rows = task.train.size(0)
    assert sum(x.size(0) for x, _ in windows) == rows - 1  # every row but the last is an input once
    x0, y0 = windows[0]
    assert torch.equal(y0[:-1], x0[1:])
    assert torch.equal(y0, task.train[1:9])
    # Windows resume at a given batch index (used when resuming mid-epoch).
    assert torch.equal(list(task.windows(task.train, start=2))[0][0], windows[2][0])


def test_missing_data_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.delenv(locate.MIRROR_ENV, raising=False)
    with pytest.raises(DataError) as e:
        load_ptb(tmp_path / "nowhere", download=False)
    msg = str(e.value)
    assert "ptb.train.txt" in msg and str(tmp_path / "nowhere" / "ptb") in msg and locate.MIRROR_ENV in msg


def assert_is_the_corpus_in(data, folder):
    """The loader's vocabulary and tensors equal an independent read of ``folder``'s three files."""
    itos, ids = read_ptb_reference(folder)
    assert data.vocab.itos == itos
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(data, split), ids[split]), split


def test_mirror_is_used_when_root_is_empty(tmp_path, tiny_ptb, monkeypatch):
    monkeypatch.setenv(locate.MIRROR_ENV, str(tiny_ptb))
    data = load_ptb(tmp_path / "empty", download=False)
    assert_is_the_corpus_in(data, tiny_ptb / "ptb")


@pytest.mark.parametrize(
    "make_root,said",
    [
        (
            lambda d: (d / "ptb").mkdir(parents=True) or (d / "ptb" / "ptb.train.txt").write_text("a b\n") and d,
            "holds no ptb.valid.txt, ptb.test.txt",
        ),
        (lambda d: d.parent.mkdir(parents=True, exist_ok=True) or d.write_text("x") and d, "is a file, not a folder"),
    ],
)
def test_a_named_root_that_is_passed_over_is_reported(tmp_path, tiny_ptb, monkeypatch, caplog, make_root, said):
    root = make_root(tmp_path / "mine")
    monkeypatch.setenv("PBEXP_DATA_MIRROR", str(tiny_ptb))
    with caplog.at_level("WARNING", logger="pbexp"):
        data = load_ptb(root=str(root), download=False)
    assert_is_the_corpus_in(data, tiny_ptb / "ptb")  # the mirror's corpus, not the passed-over root's
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and said in warnings[0] and str(tiny_ptb) in warnings[0], warnings


def test_download_failure_falls_through_to_the_message(tmp_path, monkeypatch):
    monkeypatch.delenv(locate.MIRROR_ENV, raising=False)
    monkeypatch.setattr("pbexp.data.ptb.ARCHIVE_URL", "http://127.0.0.1:9/simple-examples.tgz")
    with pytest.raises(DataError, match="download failed"):
        load_ptb(tmp_path / "nowhere", download=True)


@pytest.mark.parametrize(
    "content,match", [("", "empty"), ("\n\n", "empty"), ("x" * 200 + "\n", "does not look like PTB")]
)
def test_empty_or_malformed_file_is_a_clear_error(tmp_path, tiny_ptb, content, match):
    (tiny_ptb / "ptb" / "ptb.train.txt").write_text(content)
    with pytest.raises(DataError, match=match):
        load_ptb(tiny_ptb, download=False)


def test_word_outside_train_vocab_is_reported_with_file_and_line(tiny_ptb):
    (tiny_ptb / "ptb" / "ptb.valid.txt").write_text(" the cat \n zebra \n")
    with pytest.raises(DataError, match=r"ptb.valid.txt line 2: word 'zebra'"):
        load_ptb(tiny_ptb, download=False)


def test_non_utf8_file_is_a_clear_error(tiny_ptb):
    (tiny_ptb / "ptb" / "ptb.test.txt").write_bytes(b"\xff\xfe bad \n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_ptb(tiny_ptb, download=False)


@pytest.mark.skipif(not (SHARED_DATA / "ptb" / "ptb.train.txt").exists(), reason="real PTB not found")
def test_real_ptb_counts_match_the_data_readme():
    data = load_ptb(SHARED_DATA, download=False)
    assert len(data.vocab) == 10000
    assert (len(data.train), len(data.valid), len(data.test)) == (929589, 73760, 82430)
