"""`python -m helpers.geometry ... --html`: one self-contained page, written atomically, that renders."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import report_html
from helpers.geometry import main
from tests.browser import headless_chromium, needs_chromium

MODULES = [
    f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
]
IMG = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def write_adapter(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in MODULES:
        d_out = 8 if name.endswith(("k_proj", "v_proj")) else 16
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(4, 16, generator=gen)
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(d_out, 4, generator=gen)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "base_model_name_or_path": "org/base"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("html")
    adapters = [str(write_adapter(root / n, s)) for s, n in enumerate(("sft", "rft", "dpo"))]
    out = root / "out" / "report.html"
    code = main([*adapters, "--k", "3", "--html", str(out), "--json", str(root / "report.json")])
    return {"code": code, "path": out, "text": out.read_text(), "root": root, "adapters": adapters}


def test_the_page_holds_every_figure_and_the_table(page):
    assert page["code"] == 0
    text = page["text"]
    images = IMG.findall(text)
    titles = [t for t, _ in images]
    for wanted in (
        "Cosine of the updates",
        "Principal angles",
        "Orthogonal fraction by layer",
        "Effective rank",
    ):
        assert wanted in titles
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((page["root"] / "report.json").read_text())
    report["per_method"] = {n: report["per_method"][n] for n in report["methods"]}  # JSON sorted the keys
    from helpers.geometry_table import report_table

    assert html.escape(report_table(report)) in text  # the same text table the CLI prints
    assert "span(b|a)" in text and "topk(b|a)" in text and "direction" in text


def test_the_page_is_self_contained(page):
    text = page["text"]
    assert "http://" not in text and "https://" not in text and "<script" not in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith("data:") for s in sources)
    assert sorted(p.name for p in page["path"].parent.iterdir()) == ["report.html"]  # no side files


def test_written_atomically(tmp_path, monkeypatch):
    """A run that dies while building leaves the old page as it was and no temporary file."""
    adapters = [str(write_adapter(tmp_path / n, s)) for s, n in enumerate(("a", "b"))]
    out = tmp_path / "report.html"
    out.write_text("the previous report")
    calls = {"n": 0}
    real = report_html.figure_png

    def dies_on_the_third(fig):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed while drawing")
        return real(fig)

    monkeypatch.setattr(report_html, "figure_png", dies_on_the_third)
    with pytest.raises(RuntimeError, match="killed"):
        main([*adapters, "--html", str(out)])
    assert out.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "report.html"]
    # and the file itself goes in by one rename of a finished temporary sibling
    renames = []
    import helpers.cache as cache

    real_replace = cache.os.replace

    def spy(src, dst):
        renames.append((Path(src).name, Path(dst), Path(src).read_text()[-8:]))
        real_replace(src, dst)

    monkeypatch.setattr(report_html, "figure_png", real)
    monkeypatch.setattr(cache.os, "replace", spy)
    assert main([*adapters, "--html", str(out)]) == 0
    assert len(renames) == 1 and renames[0][1] == out and renames[0][2] == "</html>\n"


def test_a_folder_is_no_report_file(tmp_path, capsys):
    adapters = [str(write_adapter(tmp_path / n, s)) for s, n in enumerate(("a", "b"))]
    assert main([*adapters, "--html", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a folder" in err and "Traceback" not in err


@needs_chromium
def test_the_page_renders_in_headless_chromium(page):
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium()
    try:
        driver.get(page["path"].as_uri())
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        assert driver.execute_script("return document.querySelector('h1').textContent").startswith(
            "Weight-space"
        )
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        assert len(images) == len(IMG.findall(page["text"])) >= 5
        assert all(ok for _, ok in images), images
        table = driver.execute_script("return document.getElementById('table').textContent")
        assert "cosine" in table and "sft" in table
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))"
        )
        assert fetched == []  # nothing loaded from outside the file
        shot = page["root"] / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
