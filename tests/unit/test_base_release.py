"""The shipped tiny base: committed manifest, copy-instead-of-pretrain, clear errors, `make base`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import base_models, base_release, make_base, pipeline
from helpers.cache import REPO_ROOT, stable_hash
from helpers.profiles import load_profile

SHIPPED = REPO_ROOT / "data" / "base" / "tiny"


class Pretrained(Exception):
    """Raised by the stand-in for pretraining: proves base_stage tried to pretrain."""


def _no_pretraining(*args, **kwargs):
    raise Pretrained


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A smoke base written by the make-base entry point into a tmp release root."""
    root = tmp_path_factory.mktemp("release")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WSG_RUNS", str(tmp_path_factory.mktemp("runs")))
        assert make_base.main(["--profile", "smoke", "--out", str(root / "smoke")]) == 0
    return root


@pytest.fixture
def shipped(release, tmp_path, monkeypatch) -> Path:
    """A private copy of the release root, set as the one base_stage reads, with fresh runs."""
    root = tmp_path / "release"
    shutil.copytree(release, root)
    monkeypatch.setenv("WSG_BASE_RELEASE", str(root))
    monkeypatch.setenv("WSG_RUNS", str(tmp_path / "runs"))
    return root / "smoke"


def test_committed_manifest_matches_committed_files():
    manifest = base_release.verify(SHIPPED)
    assert set(manifest["files"]) == set(base_release.file_hashes(SHIPPED))
    assert {"student/model.safetensors", "teacher/model.safetensors", "pretrain_log.json"} <= set(
        manifest["files"]
    )


def test_committed_manifest_key_is_the_tiny_profile_base_key():
    manifest = base_release.read_manifest(SHIPPED)
    key = stable_hash(pipeline.source_base_inputs(load_profile("tiny")))
    assert manifest["key"] == key, (
        "the tiny profile or the base generator changed since data/base/tiny was built: run `make base`"
    )


def test_make_base_writes_a_verifiable_folder(release):
    folder = release / "smoke"
    manifest = base_release.verify(folder)
    assert manifest["key"] == stable_hash(pipeline.source_base_inputs(load_profile("smoke")))
    assert manifest["threads"] == base_release.THREADS
    assert not [p for p in release.iterdir() if p.name.startswith(".")], "scratch folder left behind"


def test_base_stage_copies_a_matching_shipped_base(shipped, monkeypatch):
    monkeypatch.setattr(base_models, "build_tiny_base", _no_pretraining)
    profile = load_profile("smoke")
    folder = pipeline.base_stage(profile)
    manifest = base_release.read_manifest(shipped)
    got = base_release.file_hashes(folder)
    assert {k: v for k, v in got.items() if k != "base.json"} == {
        k: v for k, v in manifest["files"].items() if k != "base.json"
    }
    origin = json.loads((folder / "base.json").read_text())["origin"]
    assert origin["source"] == "shipped"
    assert origin["manifest_sha256"] == base_release.manifest_sha(shipped)
    assert pipeline._base_inputs(profile)["shipped"] == base_release.manifest_sha(shipped)


def test_base_stage_pretrains_when_the_shipped_key_differs(shipped, monkeypatch):
    manifest = base_release.read_manifest(shipped)
    (shipped / base_release.MANIFEST).write_text(json.dumps({**manifest, "key": "0" * 12}))
    monkeypatch.setattr(base_models, "build_tiny_base", _no_pretraining)
    profile = load_profile("smoke")
    assert "shipped" not in pipeline._base_inputs(profile)
    with pytest.raises(Pretrained):
        pipeline.base_stage(profile)


def test_a_corrupt_shipped_file_is_a_clear_error(shipped, monkeypatch):
    monkeypatch.setattr(base_models, "build_tiny_base", _no_pretraining)
    (shipped / "student" / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(base_release.BaseReleaseError) as err:
        pipeline.base_stage(load_profile("smoke"))
    text = str(err.value)
    assert "student/model.safetensors" in text and "git checkout" in text and "make base" in text
    assert not list((Path(pipeline.run_root(load_profile("smoke")))).glob("base-*")), "half-built stage"


def test_make_base_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert make_base.main(["--profile", "smoke", "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert "refusing" in capsys.readouterr().err
