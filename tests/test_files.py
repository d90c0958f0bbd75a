"""seedbed.files: the one reader of input files and the one writer of outputs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from seedbed import files
from seedbed.errors import ConfigError


def test_a_regular_file_is_read_whole(tmp_path):
    (tmp_path / "a.yaml").write_bytes(b"x: 1\n")
    assert files.read_bytes(tmp_path / "a.yaml", files.CONFIG) == b"x: 1\n"
    assert files.read_text(tmp_path / "a.yaml", files.CONFIG) == "x: 1\n"


def test_a_byte_order_mark_is_tolerated(tmp_path):
    (tmp_path / "a.yaml").write_bytes(b"\xef\xbb\xbfx: 1\n")
    assert files.read_text(tmp_path / "a.yaml", files.CONFIG) == "x: 1\n"


def test_a_fifo_is_refused_at_once_even_without_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    box: dict[str, Exception] = {}

    def read() -> None:
        try:
            files.read_bytes(tmp_path / "pipe", files.KEY)
        except ConfigError as e:
            box["e"] = e

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "read_bytes blocked on a FIFO"
    assert "named pipe (FIFO), not a regular file" in str(box["e"]) and box["e"].fix == files.KEY.fix


@pytest.mark.parametrize(("path", "words"), [("/dev/zero", "character device"), ("/dev/null", "character device")])
def test_devices_are_refused(path, words):
    with pytest.raises(ConfigError, match=words):
        files.read_bytes(path, files.MANIFEST)


def test_a_socket_is_refused_by_name(tmp_path):
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        with pytest.raises(ConfigError, match="socket, not a regular file"):
            files.read_bytes(tmp_path / "sock", files.CONFIG)


def test_a_file_over_its_kinds_cap_is_refused_without_reading_it(tmp_path):
    with open(tmp_path / "big", "wb") as f:
        f.truncate(2 * files.MiB)
    with pytest.raises(ConfigError, match=r"is 2.0 MiB; a config file may be at most 1.0 MiB") as e:
        files.read_bytes(tmp_path / "big", files.CONFIG)
    assert e.value.exit_code == 2 and e.value.fix


def test_a_smaller_cap_can_be_asked_for(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 2000)
    with pytest.raises(ConfigError, match="at most 1000 bytes"):
        files.read_bytes(tmp_path / "f", files.CONFIG, limit=1000)


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a folder"),
])
def test_missing_files_and_folders_are_named(tmp_path, make, words):
    make(tmp_path / "x")
    with pytest.raises(ConfigError, match=words):
        files.read_bytes(tmp_path / "x", files.CONFIG)


def test_a_path_through_a_file_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        files.read_bytes(tmp_path / "f" / "x", files.CONFIG)


def test_text_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        files.read_text(tmp_path / "f", files.CONFIG)


def test_home_is_expanded_and_an_unknown_user_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert files.expand("~/x") == tmp_path / "x"
    with pytest.raises(ConfigError, match="there is no user 'nosuchuser'") as e:
        files.expand("~nosuchuser/x")
    assert "in full" in e.value.fix
    with pytest.raises(ConfigError, match="empty path"):
        files.expand("")


# --------------------------------------------------------------------------- outputs


def test_an_output_replaces_a_regular_file_atomically(tmp_path):
    (tmp_path / "out").write_text("old")
    files.write_file(tmp_path / "out", "new", "bundle")
    assert (tmp_path / "out").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporary file left behind"


def test_an_output_may_refuse_to_overwrite(tmp_path):
    (tmp_path / "out").write_text("old")
    with pytest.raises(ConfigError, match="already exists") as e:
        files.check_output(tmp_path / "out", "key", overwrite=False)
    assert "--force" in e.value.fix


def test_a_key_file_is_written_0600(tmp_path):
    files.write_file(tmp_path / "k", "secret", "key", mode=0o600)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def test_a_character_device_is_written_in_place_never_replaced(tmp_path):
    target = files.check_output("/dev/null", "archive")
    assert target.stream
    files.write_output(target, b"data")
    assert Path("/dev/null").is_char_device()


def test_a_fifo_without_a_reader_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    target = files.check_output(tmp_path / "pipe", "archive")
    assert target.stream
    with pytest.raises(ConfigError, match="no program is reading"):
        files.write_output(target, b"x")


def test_a_fifo_with_a_reader_receives_the_data(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    got: list[bytes] = []
    fd = os.open(tmp_path / "pipe", os.O_RDONLY | os.O_NONBLOCK)
    try:
        files.write_file(tmp_path / "pipe", b"hello", "archive")
        got.append(os.read(fd, 100))
    finally:
        os.close(fd)
    assert got == [b"hello"] and (tmp_path / "pipe").is_fifo()


def test_dev_fd_outputs_are_streamed(tmp_path):
    r, w = os.pipe()
    try:
        target = files.check_output(f"/dev/fd/{w}", "archive")
        assert target.stream
    finally:
        os.close(r)
        os.close(w)


def test_a_symlink_to_a_file_is_followed_and_kept(tmp_path):
    (tmp_path / "real").write_text("old")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    files.write_file(tmp_path / "link", "new", "bundle")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real").read_text() == "new"


@pytest.mark.parametrize(("rel", "words"), [
    ("dir", "is a folder"),
    ("missing/out", "does not exist"),
    ("file/out", "is a file, not a folder"),
])
def test_bad_output_paths_are_refused_before_the_work(tmp_path, rel, words):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=words) as e:
        files.check_output(tmp_path / rel, "archive")
    assert e.value.fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="not writable"):
        files.check_output(tmp_path / "ro" / "out", "archive")
    with pytest.raises(ConfigError, match="not writable"):
        files.check_output_dir(tmp_path / "ro" / "sub", "--out")


def test_an_output_folder_may_be_missing_but_not_a_file(tmp_path):
    assert files.check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        files.check_output_dir(tmp_path / "f", "--out")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        files.check_output_dir(tmp_path / "f" / "sub", "--out")
