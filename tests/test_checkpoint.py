"""Checkpoints: ArchSpec beside the weights, atomic writes, weights_only reads, one-sentence errors."""

import errno
import os
import pickle

import pytest
import torch

from search_spaces import ArchSpec, build_model, resnet_spec
from trainers import CheckpointError, load_checkpoint, save_checkpoint
from trainers.atomic import DiskFullError


def small_model():
    return build_model(resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.125))


def test_round_trip_carries_the_spec_so_the_net_can_be_rebuilt(tmp_path):
    model = small_model()
    save_checkpoint(tmp_path / "m.ckpt", model, extra={"epoch": 3})
    payload = load_checkpoint(tmp_path / "m.ckpt")
    rebuilt = build_model(ArchSpec.from_json(payload["arch_spec"]))
    rebuilt.load_state_dict(payload["state_dict"], strict=True)
    assert payload["extra"] == {"epoch": 3}
    for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_truncated_file_is_one_clear_sentence(tmp_path):
    save_checkpoint(tmp_path / "m.ckpt", small_model())
    data = (tmp_path / "m.ckpt").read_bytes()
    (tmp_path / "m.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is not a readable resnas checkpoint .*; delete it and rerun"):
        load_checkpoint(tmp_path / "m.ckpt")


def test_pickled_code_is_refused_by_weights_only(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(tmp_path / "evil.ckpt", "wb") as handle:
        pickle.dump({"format": "resnas-checkpoint", "evil": Payload()}, handle)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()


def test_foreign_torch_file_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a resnas checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope.ckpt does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "m.ckpt", small_model(), extra={"epoch": 1})
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DiskFullError, match="free disk space and rerun"):
        save_checkpoint(tmp_path / "m.ckpt", small_model(), extra={"epoch": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert load_checkpoint(tmp_path / "m.ckpt")["extra"] == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temp file left behind
