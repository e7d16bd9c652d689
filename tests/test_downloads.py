"""The real download code (locate.download and the PTB / IMDB modules' use of it) against file:// URLs:
the file arrives whole through an atomic rename, and a bad checksum, a missing URL or a file that is
not the data is a clear DataError that leaves nothing behind. No network: the URLs point into tmp_path."""

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

import pbexp.data.imdb as imdb
import pbexp.data.ptb as ptb
from helpers.configs import load_dataset
from helpers.data import read_ptb_reference, tiny_reviews, write_archive, write_tiny_ptb, write_tree
from pbexp.data import locate
from pbexp.errors import DataError


@pytest.fixture(autouse=True)
def no_mirror(tmp_path, monkeypatch):
    """Only the file:// URL can supply data: no mirror, and caches under tmp_path."""
    monkeypatch.delenv(locate.MIRROR_ENV, raising=False)
    monkeypatch.setenv(locate.CACHE_ENV, str(tmp_path / "cache"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def payload(tmp_path) -> Path:
    """A file to download: a few MB of bytes that are not all alike (so a cut copy differs)."""
    src = tmp_path / "server" / "payload.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(3 << 20))
    return src


# --------------------------------------------------------------------------- locate.download


def test_download_arrives_whole_through_an_atomic_rename(tmp_path, payload, monkeypatch):
    dest = tmp_path / "data" / "sub" / "payload.bin"  # the folder does not exist yet
    renames = []
    real_replace = os.replace

    def watching_replace(src, dst):
        # At the rename: the whole file is already in a temp file beside dest (same file system, so the
        # rename is atomic), and dest is not there yet: nobody can see a half-written dest.
        renames.append(
            (Path(src).parent == Path(dst).parent, Path(src).read_bytes() == payload.read_bytes(), Path(dst).exists())
        )
        return real_replace(src, dst)

    monkeypatch.setattr(locate.os, "replace", watching_replace)
    got = locate.download(payload.as_uri(), dest, sha256=sha256(payload.read_bytes()))
    assert got == dest and dest.read_bytes() == payload.read_bytes()
    assert renames == [(True, True, False)]
    assert files_in(dest.parent) == ["payload.bin"]  # no temp file left


def test_download_without_a_checksum_is_taken_as_it_comes(tmp_path, payload):
    dest = tmp_path / "data" / "payload.bin"
    locate.download(payload.as_uri(), dest)
    assert dest.read_bytes() == payload.read_bytes() and files_in(dest.parent) == ["payload.bin"]


def test_download_with_a_wrong_checksum_is_an_error_and_leaves_nothing(tmp_path, payload):
    dest = tmp_path / "data" / "payload.bin"
    wrong = sha256(b"something else")
    with pytest.raises(DataError) as e:
        locate.download(payload.as_uri(), dest, sha256=wrong)
    msg = str(e.value)
    assert payload.as_uri() in msg and wrong in msg and sha256(payload.read_bytes()) in msg
    assert files_in(dest.parent) == []


def test_download_with_a_wrong_checksum_keeps_the_file_already_there(tmp_path, payload):
    dest = tmp_path / "data" / "payload.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"an earlier good copy")
    with pytest.raises(DataError, match="sha256"):
        locate.download(payload.as_uri(), dest, sha256=sha256(b"something else"))
    assert dest.read_bytes() == b"an earlier good copy" and files_in(dest.parent) == ["payload.bin"]


def test_download_of_a_missing_url_is_an_error_and_leaves_nothing(tmp_path):
    url = (tmp_path / "server" / "nothing-here.bin").as_uri()
    dest = tmp_path / "data" / "nothing-here.bin"
    with pytest.raises(DataError, match=f"could not download {url}"):
        locate.download(url, dest)
    assert files_in(dest.parent) == []


# --------------------------------------------------------------------------- PTB


def write_ptb_archive(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """simple-examples.tgz laid out as Mikolov's (./simple-examples/data/ptb.*.txt, plus files to ignore)."""
    folder = write_tiny_ptb(tmp_path / "corpus")
    contents = {name: (folder / name).read_bytes() for name in ptb.SHA256}
    archive = tmp_path / "server" / "simple-examples.tgz"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in {**contents, "ptb.char.train.txt": b"c a t\n", "README": b"RNNLM toolkit\n"}.items():
            info = tarfile.TarInfo(f"./simple-examples/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive, contents


def serve_ptb(tmp_path, monkeypatch, corrupt: str | None = None) -> dict[str, bytes]:
    """Point ptb's URL at a local archive and its checksums at its files (``corrupt``'s made wrong)."""
    archive, contents = write_ptb_archive(tmp_path)
    monkeypatch.setattr(ptb, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(
        ptb, "SHA256", {name: sha256(b"not this file" if name == corrupt else data) for name, data in contents.items()}
    )
    return contents


def test_ptb_download_extracts_the_three_checked_files(tmp_path, monkeypatch):
    contents = serve_ptb(tmp_path, monkeypatch)
    root = tmp_path / "root"
    data = ptb.load_ptb(root, download=True)
    assert files_in(root / "ptb") == sorted(contents)  # the three files and nothing else
    assert all((root / "ptb" / name).read_bytes() == body for name, body in contents.items())
    itos, ids = read_ptb_reference(tmp_path / "corpus")
    assert data.vocab.itos == itos
    assert all(getattr(data, split).tolist() == ids[split].tolist() for split in ids)
    monkeypatch.setattr(ptb, "ARCHIVE_URL", (tmp_path / "gone.tgz").as_uri())  # found locally now: no download
    assert ptb.load_ptb(root, download=True).vocab.itos == itos


@pytest.mark.parametrize("corrupt", list(ptb.SHA256))
def test_ptb_file_that_fails_its_checksum_is_an_error_and_never_written(tmp_path, monkeypatch, corrupt):
    contents = serve_ptb(tmp_path, monkeypatch, corrupt=corrupt)
    root = tmp_path / "root"
    with pytest.raises(DataError) as e:
        ptb.load_ptb(root, download=True)
    msg = str(e.value)
    assert "Penn Treebank data not found" in msg and "download failed" in msg
    assert corrupt in msg and "sha256" in msg
    assert corrupt not in files_in(root / "ptb")
    # Files checked before the bad one may stay (they are good), but never a set a later run would read.
    assert all((root / "ptb" / name).read_bytes() == contents[name] for name in files_in(root / "ptb"))
    with pytest.raises(DataError, match="Penn Treebank data not found"):
        ptb.load_ptb(root, download=False)


def test_ptb_archive_without_the_files_is_an_error(tmp_path, monkeypatch):
    bare = tmp_path / "server" / "other.tgz"
    bare.parent.mkdir()
    with tarfile.open(bare, "w:gz") as tar:
        info = tarfile.TarInfo("./simple-examples/data/README")
        tar.addfile(info, io.BytesIO(b""))
    monkeypatch.setattr(ptb, "ARCHIVE_URL", bare.as_uri())
    with pytest.raises(DataError, match="download failed.*ptb.train.txt"):
        ptb.load_ptb(tmp_path / "root", download=True)
    assert files_in(tmp_path / "root" / "ptb") == []


# --------------------------------------------------------------------------- IMDB


def test_imdb_download_arrives_and_loads(tmp_path, monkeypatch):
    archive = write_archive(write_tree(tmp_path / "src"), tmp_path / "server" / "aclImdb_v1.tar.gz")
    monkeypatch.setattr(imdb, "URL", archive.as_uri())
    root = tmp_path / "root"
    d = load_dataset("imdb", root=root, max_len=4)
    assert files_in(root / "imdb") == ["aclImdb_v1.tar.gz"]  # no temp file left
    assert (root / "imdb" / "aclImdb_v1.tar.gz").read_bytes() == archive.read_bytes()
    n_test = sum(len(items) for (split, _), items in tiny_reviews().items() if split == "test")
    assert len(d.test_y) == n_test


def test_imdb_download_that_is_not_an_archive_is_deleted(tmp_path, monkeypatch):
    page = tmp_path / "server" / "aclImdb_v1.tar.gz"
    page.parent.mkdir()
    page.write_bytes(b"<html>Service unavailable</html>")
    monkeypatch.setattr(imdb, "URL", page.as_uri())
    with pytest.raises(DataError, match="not a usable IMDB archive"):
        load_dataset("imdb", root=tmp_path / "root")
    assert files_in(tmp_path / "root" / "imdb") == []


def test_imdb_download_of_a_missing_url_says_where_to_put_the_data(tmp_path, monkeypatch):
    url = (tmp_path / "server" / "aclImdb_v1.tar.gz").as_uri()
    monkeypatch.setattr(imdb, "URL", url)
    with pytest.raises(DataError) as e:
        load_dataset("imdb", root=tmp_path / "root")
    msg = str(e.value)
    assert "IMDB data not found" in msg and f"could not download {url}" in msg
    assert str(tmp_path / "root" / "imdb") in msg
    assert files_in(tmp_path / "root" / "imdb") == []
