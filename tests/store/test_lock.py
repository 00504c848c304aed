"""The data directory's lock: one holder at a time, the holder named, released by release() and by death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from edged.store.lock import LOCK_NAME, DataDirLocked, lock_data_dir


def test_a_second_lock_is_refused_with_the_holder_named(tmp_path):
    held = lock_data_dir(tmp_path / "data")
    with pytest.raises(DataDirLocked) as refused:
        lock_data_dir(tmp_path / "data")
    assert f"pid {os.getpid()}" in refused.value.message and str(tmp_path / "data") in refused.value.message
    assert refused.value.status == 409 and refused.value.code == "data_dir_locked"
    held.release()
    lock_data_dir(tmp_path / "data").release()  # free again


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    program = ("import sys, time; from pathlib import Path; from edged.store.lock import lock_data_dir; "
               "lock_data_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", program, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    with pytest.raises(DataDirLocked, match=f"pid {holder.pid}"):
        lock_data_dir(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock_data_dir(tmp_path).release()
    assert (tmp_path / LOCK_NAME).is_file()


def test_the_lock_is_not_inherited_by_child_processes(tmp_path):
    """A worker outliving its daemon must not keep the next daemon out."""
    lock = lock_data_dir(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"],
                             close_fds=False, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"  # exec'd: inherited fds are final
        lock.release()
        lock_data_dir(tmp_path).release()  # refused if the child held an inherited descriptor
    finally:
        child.kill()
        child.wait()
