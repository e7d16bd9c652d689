import zipfile

import pytest
import torch

from helpers.configs import SHARED_DATA, make_model
from pbexp.data.vocab import Vocab
from pbexp.errors import ConfigError, DataError
from pbexp.models.embeddings import load_pretrained, read_vectors

GLOVE = "the 0.1 0.2 0.3\ncat -1 0 1.5\ndog 2 2 2\n"


def test_small_glove_file_copies_found_rows_and_keeps_others(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text(GLOVE)
    vocab = Vocab(["cat", "zebra", "the"])
    emb = torch.nn.Embedding(3, 3)
    before = emb.weight[1].clone()
    assert load_pretrained(emb, vocab, path) == 2
    assert torch.allclose(emb.weight[0], torch.tensor([-1.0, 0.0, 1.5]))
    assert torch.allclose(emb.weight[2], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(emb.weight[1], before)
    assert emb.weight.requires_grad


def test_no_vocabulary_word_in_the_file_warns(tmp_path, caplog):
    path = tmp_path / "g.txt"
    path.write_text(GLOVE)
    emb = torch.nn.Embedding(2, 3)
    before = emb.weight.clone()
    with caplog.at_level("WARNING"):
        assert load_pretrained(emb, Vocab(["Katze", "Hund"]), path) == 0
    assert torch.equal(emb.weight, before)
    assert any("none of the 2 vocabulary words" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_zip_and_freeze(tmp_path):
    path = tmp_path / "g.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("g.txt", GLOVE)
    emb = torch.nn.Embedding(2, 3)
    assert load_pretrained(emb, Vocab(["dog", "cat"]), path, freeze=True) == 2
    assert not emb.weight.requires_grad and emb.weight[0].tolist() == [2, 2, 2]


@pytest.mark.parametrize(
    "content,error,match",
    [
        ("the 1 2 3\ncat 1 2\n", DataError, "line 2: 2 numbers"),
        ("the 1 2 x\n", DataError, "not a number"),
        ("lonely\n", DataError, "line 1"),
    ],
)
def test_malformed_glove_is_a_clear_error(tmp_path, content, error, match):
    path = tmp_path / "g.txt"
    path.write_text(content)
    with pytest.raises(error, match=match):
        read_vectors(path)


def test_wrong_dimension_and_missing_file(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text(GLOVE)
    with pytest.raises(ConfigError, match="model.emb_size=3"):
        load_pretrained(torch.nn.Embedding(2, 5), Vocab(["the", "cat"]), path)
    with pytest.raises(ConfigError, match="model.pretrained"):
        load_pretrained(torch.nn.Embedding(2, 3), Vocab(["the", "cat"]), tmp_path / "missing.txt")


GLOVE_ZIP = SHARED_DATA / "glove" / "glove.6B.50d.10k.zip"


@pytest.mark.skipif(not GLOVE_ZIP.exists(), reason="real GloVe file not found")
def test_real_glove_50d_on_ptb_vocab():
    from pbexp.data.ptb import load_ptb

    vocab = load_ptb(SHARED_DATA, download=False).vocab
    model = make_model("lstm", vocab_size=len(vocab), emb_size=50, hidden_size=50, num_layers=1)
    found = load_pretrained(model.embedding, vocab, GLOVE_ZIP)
    assert found == 6790  # of PTB's 9,999 train word types (data README), <eos> is not in GloVe
    vectors, dim = read_vectors(GLOVE_ZIP, {"the"})
    assert dim == 50 and torch.equal(model.embedding.weight[vocab["the"]].detach(), vectors["the"])
