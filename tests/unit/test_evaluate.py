"""Tests of helpers.evaluate on a tiny random Qwen3 model and a tokenizer built here."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import helpers.evaluate as ev
from helpers import stats
from helpers.data import load_problems
from helpers.profiles import load_profile
from helpers.prompting import build_prompt
from tests.builders import make_adapter, make_model, make_tokenizer

GSM8K_TEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "test.jsonl"
PROMPTS = [
    "Question: Ann has 3 apples.\nAnswer:",
    "Question: Tom buys 4 boxes of 12 pens and gives 5 pens to each of his 3 friends. How many are left?\nAnswer:",
    "Question: 7 cats\nAnswer:",
    "Question: A farm has 20 cows and sells half of them, then buys 6 more.\nAnswer:",
    "Question: x\nAnswer:",
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    texts = [
        build_prompt(p["question"]) + " " + p["solution"] for p in load_problems("generated", "train", n=60)
    ]
    return make_tokenizer(320, texts)


def _model(tokenizer, seed: int = 0) -> torch.nn.Module:
    # untied: test_stops_at_eos edits one lm_head row and must leave the embeddings alone
    return make_model(len(tokenizer), seed=seed, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def model(tokenizer):
    return _model(tokenizer)


def test_greedy_is_deterministic(model, tokenizer):
    first = ev.generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=2, progress=False)
    second = ev.generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=2, progress=False)
    assert first == second
    assert len(first) == len(PROMPTS) and all(isinstance(t, str) and t for t in first)


def test_batched_equals_unbatched(model, tokenizer):
    one_by_one = [ev.generate(model, tokenizer, [p], 12, batch_size=1, progress=False)[0] for p in PROMPTS]
    for batch_size in (2, 5):
        assert ev.generate(model, tokenizer, PROMPTS, 12, batch_size=batch_size, progress=False) == one_by_one
    assert tokenizer.padding_side == "right"  # restored after generation


def _manual_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    """Reference decoding: full forward each step, argmax, stop before EOS."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def test_stops_at_eos(tokenizer):
    model = _model(tokenizer, seed=1)
    free = _manual_greedy(model, tokenizer, PROMPTS[0], 6)
    assert len(free) == 6
    # Make EOS win where the 4th token would (its logit row, scaled up, under EOS's id).
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = 10.0 * model.lm_head.weight[free[3]]
    expected = _manual_greedy(model, tokenizer, PROMPTS[0], 6)
    assert len(expected) < 4  # EOS now fires early
    # Batched with longer-running prompts: the short row must carry no padding or later text.
    texts = ev.generate(model, tokenizer, PROMPTS[:3], max_new_tokens=6, batch_size=3, progress=False)
    assert texts[0] == tokenizer.decode(expected)
    assert texts[1:] == [tokenizer.decode(_manual_greedy(model, tokenizer, p, 6)) for p in PROMPTS[1:3]]


def test_progress_bar(model, tokenizer, capsys):
    ev.generate(model, tokenizer, PROMPTS[:4], max_new_tokens=2, batch_size=2, desc="evalbar")
    err = capsys.readouterr().err
    assert "evalbar" in err and "2/2" in err
    ev.generate(model, tokenizer, PROMPTS[:4], max_new_tokens=2, batch_size=2, desc="evalbar", progress=False)
    assert "evalbar" not in capsys.readouterr().err


def test_backend_choice_and_errors(model, tokenizer):
    assert ev._resolve_backend("auto", model) == "hf"
    with pytest.raises(ev.EvaluationError, match="backend must be one of"):
        ev.generate(model, tokenizer, PROMPTS, 2, 2, backend="sglang")
    with pytest.raises(ev.EvaluationError, match="vllm"):
        ev.generate(model, tokenizer, PROMPTS, 2, 2, backend="vllm")
    with pytest.raises(ev.EvaluationError, match="list of strings"):
        ev.generate(model, tokenizer, PROMPTS[0], 2, 2)
    with pytest.raises(ev.EvaluationError, match="positive"):
        ev.generate(model, tokenizer, PROMPTS, 0, 2)
    with pytest.raises(ev.EvaluationError, match="empty"):
        ev.evaluate_model(model, tokenizer, [], 2, 2)
    with pytest.raises(ev.EvaluationError, match="problem 1 .*answer"):
        ev.evaluate_model(model, tokenizer, [{"question": "a", "answer": "1"}, {"question": "b"}], 2, 2)
    assert ev.generate(model, tokenizer, [], 2, 2) == []


def _fake_generate(answer_for):
    """A stand-in for `generate` that answers each prompt from a table keyed by prompt text."""

    def fake(model, tokenizer, prompts, max_new_tokens, batch_size, backend="auto", **kwargs):
        return [answer_for[p] for p in prompts]

    return fake


def test_gold_solutions_score_one(monkeypatch, tokenizer):
    problems = load_problems("generated", "test", n=12, seed=5)
    gold = {build_prompt(p["question"], tokenizer): p["solution"] for p in problems}
    monkeypatch.setattr(ev, "generate", _fake_generate(gold))
    result = ev.evaluate_model(None, tokenizer, problems, max_new_tokens=8, batch_size=4)
    assert result["summary"]["accuracy"] == 1.0
    assert result["summary"]["ci_high"] == 1.0 and result["summary"]["ci_low"] < 1.0
    assert [r["extracted"] for r in result["rows"]] == [p["answer"] for p in problems]


def test_summary_equals_recount(monkeypatch, tokenizer):
    problems = load_problems("generated", "test", n=7, seed=9)
    # Gold for every third problem, a wrong number otherwise, nothing numeric for one.
    answers = {}
    for i, p in enumerate(problems):
        text = p["solution"] if i % 3 == 0 else f"so it is\n#### {int(p['answer']) + 1}"
        answers[build_prompt(p["question"], tokenizer)] = "no idea" if i == 4 else text
    monkeypatch.setattr(ev, "generate", _fake_generate(answers))
    result = ev.evaluate_model(None, tokenizer, problems, max_new_tokens=8, batch_size=4)
    rows, summary = result["rows"], result["summary"]
    assert [r["id"] for r in rows] == [p["id"] for p in problems]
    assert [r["correct"] for r in rows] == [i % 3 == 0 for i in range(7)]
    assert rows[4]["extracted"] is None
    assert summary["n"] == 7 and summary["correct"] == 3
    assert summary["accuracy"] == pytest.approx(3 / 7)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(stats.wilson_interval(3, 7))


@pytest.mark.skipif(not GSM8K_TEST.is_file(), reason="shared GSM8K copy not present")
def test_gsm8k_end_to_end(model, tokenizer):
    profile = load_profile("smoke")
    data = dataclasses.replace(
        profile.data, eval_source="gsm8k", eval_path=str(GSM8K_TEST), n_eval_problems=5
    )
    problems = ev.load_eval_set(dataclasses.replace(profile, data=data))
    raw = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:5]]
    assert [p["question"] for p in problems] == [r["question"].strip() for r in raw]
    # References come from the text after `####` (commas removed).
    assert [p["answer"] for p in problems] == [
        re.search(r"####\s*(.+)$", r["answer"]).group(1).replace(",", "").strip() for r in raw
    ]
    result = ev.evaluate_model(model, tokenizer, problems, max_new_tokens=6, batch_size=5, progress=False)
    rows = result["rows"]
    assert len(rows) == 5
    assert [r["reference"] for r in rows] == [p["answer"] for p in problems]
    assert all(set(r) == {"id", "question", "reference", "completion", "extracted", "correct"} for r in rows)
    assert result["summary"]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 5)


def test_load_eval_set_profiles_and_boxed_jsonl(tmp_path, tokenizer, monkeypatch):
    smoke = load_profile("smoke")
    problems = ev.load_eval_set(smoke)
    assert len(problems) == smoke.data.n_eval_problems
    train_questions = {
        p["question"] for p in load_problems("generated", "train", n=200, seed=smoke.data.seed)
    }
    assert not train_questions & {p["question"] for p in problems}  # held out
    aime = tmp_path / "aime26.jsonl"
    aime.write_text(
        json.dumps({"question": "Find the sum of 30 and 40.", "answer": "\\boxed{70}"})
        + "\n"
        + json.dumps({"problem": "Find 6 times 7.", "answer": "42"})
        + "\n"
    )
    problems = ev.load_eval_set(smoke, source=str(aime))
    assert [p["answer"] for p in problems] == ["70", "42"]
    completions = {
        build_prompt(p["question"], tokenizer): c
        for p, c in zip(problems, ["\\boxed{70}", "43"], strict=True)
    }
    monkeypatch.setattr(ev, "generate", _fake_generate(completions))
    result = ev.evaluate_model(None, tokenizer, problems, 8, 2)
    assert [r["correct"] for r in result["rows"]] == [True, False]


def test_evaluate_adapter_matches_in_memory(tmp_path, tokenizer):
    from peft import PeftModel

    problems = load_problems("generated", "test", n=4, seed=3)
    base_dir = tmp_path / "base"
    _model(tokenizer, seed=2).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    adapters = {}
    for seed in (10, 11):
        adapters[f"a{seed}"] = tmp_path / f"a{seed}"
        make_adapter(_model(tokenizer, seed=2), seed=seed).save_pretrained(adapters[f"a{seed}"])

    def in_memory(adapter):
        model = AutoModelForCausalLM.from_pretrained(base_dir)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        return ev.evaluate_model(model, tokenizer, problems, 10, 4, progress=False)["rows"]

    out = tmp_path / "eval" / "a10.json"
    single = ev.evaluate_adapter(base_dir, adapters["a10"], problems, 10, 4, out_path=out, progress=False)
    assert single["rows"] == in_memory(adapters["a10"])
    assert json.loads(out.read_text())["summary"] == single["summary"]
    # One base for several adapters: unloading between them must leave the next one a clean base.
    several = ev.evaluate_adapters(
        base_dir, {"base": None, **adapters}, problems, 10, 4, out_dir=tmp_path / "all", progress=False
    )
    assert several["base"]["rows"] == in_memory(None)
    assert several["a11"]["rows"] == in_memory(adapters["a11"])
    assert several["a10"]["rows"] == single["rows"]
    assert several["a10"]["rows"] != several["base"]["rows"]
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a10.json", "a11.json", "base.json"]
    with pytest.raises(ev.EvaluationError, match="adapter_config.json"):
        ev.evaluate_adapter(base_dir, tmp_path, problems, 2, 2)


def test_compare_methods_and_reexport():
    assert ev.mcnemar is stats.mcnemar

    def result(ids, correct):
        rows = [{"id": i, "correct": c} for i, c in zip(ids, correct, strict=True)]
        return {"rows": rows, "summary": ev.summarize(rows)}

    ids = [f"p{i}" for i in range(8)]
    a = [True] * 6 + [False] * 2
    b = [False] * 6 + [True] * 2
    # Rows in another order must still be matched by id.
    out = ev.compare_methods({"sft": result(ids, a), "dpo": result(ids[::-1], b[::-1])})
    assert out["accuracy"] == {"sft": 0.75, "dpo": 0.25}
    assert out["ci"]["sft"] == pytest.approx(list(stats.wilson_interval(6, 8)))
    assert (out["mcnemar"]["b"]["sft"]["dpo"], out["mcnemar"]["c"]["sft"]["dpo"]) == (6, 2)
    assert out["mcnemar_p"] == {"sft-dpo": pytest.approx(stats.mcnemar(a, b)[2])}
    assert out["mcnemar_p_holm"]["sft-dpo"] == out["mcnemar_p"]["sft-dpo"]  # one pair: nothing to correct
    with pytest.raises(ev.EvaluationError, match="other problems"):
        ev.compare_methods({"sft": result(ids, a), "dpo": result(ids[:4], b[:4])})


def test_vllm_path_with_a_stand_in_engine(tmp_path, tokenizer, monkeypatch):
    """The vLLM route's plumbing (engine options, LoRA requests, greedy params, our token ids),
    checked against a stand-in `vllm` module, since vLLM needs a GPU."""
    import sys
    import types

    calls = []

    class LLM:
        def __init__(self, model, **kwargs):
            self.model, self.kwargs = model, kwargs
            calls.append(("init", model, kwargs))

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            calls.append(("generate", prompts, params, lora_request))
            # Echo the prompt length as the answer, so order and token ids can be checked.
            return [
                types.SimpleNamespace(
                    outputs=[types.SimpleNamespace(text=f"#### {len(p['prompt_token_ids'])}")]
                )
                for p in prompts
            ]

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLM
    vllm.SamplingParams = lambda **kwargs: kwargs
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda name, lora_id, path: (name, lora_id, path)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    base_dir, adapter = tmp_path / "base", tmp_path / "adapter"
    tokenizer.save_pretrained(base_dir)
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    problems = load_problems("generated", "test", n=3, seed=1)
    results = ev.evaluate_adapters(base_dir, {"base": None, "lora": adapter}, problems, 7, 2, progress=False)

    ids = [tokenizer(build_prompt(p["question"]), add_special_tokens=False)["input_ids"] for p in problems]
    (_, model, options), first, second = calls
    assert model == str(base_dir)
    assert options["enable_lora"] and options["max_lora_rank"] == 8  # r=4 rounds up to a vLLM slot
    assert options["max_model_len"] == max(map(len, ids)) + 7
    assert first[1] == [{"prompt_token_ids": x} for x in ids]
    assert first[2]["temperature"] == 0.0 and first[2]["max_tokens"] == 7
    assert first[3] is None and second[3] == ("adapter-2", 2, str(adapter))
    assert [r["completion"] for r in results["lora"]["rows"]] == [f"#### {len(x)}" for x in ids]
    assert results["lora"]["config"]["adapter_dir"] == str(adapter)


# --- symbolic answers, the chat instruction, extra evaluation sets (issue 10 items 3 and 7) ---

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AIME = FIXTURES / "aime_sample.jsonl"


def test_chat_prompt_asks_for_boxed_and_tiny_prompt_is_unchanged(tokenizer):
    import copy

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    prompt = build_prompt("  What is 2 + 3?  ", chat)
    assert "What is 2 + 3?" in prompt and "\\boxed{}" in prompt and prompt.endswith("<|assistant|>")
    assert build_prompt("  What is 2 + 3?  ", tokenizer) == "Question: What is 2 + 3?\nAnswer:"
    assert build_prompt("What is 2 + 3?") == "Question: What is 2 + 3?\nAnswer:"


def test_grade_completions_on_symbolic_answers():
    rows = [json.loads(line) for line in (FIXTURES / "deepscaler_sample.jsonl").read_text().splitlines()]
    problems = load_problems(str(FIXTURES / "deepscaler_sample.jsonl"), "test")[:3]
    completions = [rows[0]["completions"][0]["text"], rows[1]["completions"][2]["text"], "no idea"]
    graded = ev.grade_completions(problems, completions)["rows"]
    assert [r["correct"] for r in graded] == [True, False, False]
    # The table shows the answer as compared: LaTeX as written, not the first digit in it.
    assert [r["extracted"] for r in graded] == ["\\dfrac{\\sqrt3}{2}", "2\\sqrt{3}", None]


def _clopper_pearson(k: int, n: int, alpha: float = 0.05) -> list[float]:
    """The exact interval from beta quantiles (Clopper and Pearson 1934), independent of binomtest."""
    from scipy.stats import beta

    low = 0.0 if k == 0 else beta.ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else beta.ppf(1 - alpha / 2, k + 1, n - k)
    return [float(low), float(high)]


def test_compare_methods_with_exact_intervals():
    def result(correct):
        rows = [{"id": f"p{i}", "correct": c} for i, c in enumerate(correct)]
        return {"rows": rows, "summary": ev.summarize(rows)}

    a, b = [True] * 3 + [False] * 27, [True] * 12 + [False] * 18  # 30 problems, as AIME 2026
    out = ev.compare_methods({"base": result(a), "sft": result(b)}, interval="exact")
    assert out["interval"] == "exact"
    assert out["ci"]["base"] == pytest.approx(_clopper_pearson(3, 30), rel=1e-6)
    assert out["ci"]["sft"] == pytest.approx(_clopper_pearson(12, 30), rel=1e-6)
    assert out["ci"]["base"] != pytest.approx(list(stats.wilson_interval(3, 30)), rel=1e-3)
    assert out["mcnemar_p"]["base-sft"] == pytest.approx(stats.mcnemar(a, b)[2])
    assert ev.compare_methods({"base": result(a), "sft": result(b)})["interval"] == "wilson"
    with pytest.raises(ev.EvaluationError, match="interval"):
        ev.compare_methods({"base": result(a), "sft": result(b)}, interval="normal")
    table = ev.accuracy_table(out)
    assert list(table.index) == ["base", "sft"] and "95% CI (exact)" in table.columns


def test_extra_sets_scored_per_file_content(tmp_path, tokenizer, monkeypatch):
    """evaluate_extra_sets runs the real evaluation stage on saved adapters (training replaced):
    every model on every set, exact intervals, and a cache keyed by the file's content."""
    from helpers import pipeline

    base_dir = tmp_path / "base"
    _model(tokenizer, seed=2).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    runs = {}
    for name, seed in (("sft", 10), ("dpo", 11)):
        runs[name] = tmp_path / name
        make_adapter(_model(tokenizer, seed=2), seed=seed).save_pretrained(runs[name])
    monkeypatch.setenv("WSG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(pipeline, "adapters", lambda profile, names=None, replicate=0: dict(runs))
    monkeypatch.setattr(pipeline, "student_dir", lambda profile: str(base_dir))
    scored = []  # the problem ids of every set actually evaluated (a cache hit evaluates nothing)
    real = ev.evaluate_adapters
    monkeypatch.setattr(
        ev,
        "evaluate_adapters",
        lambda b, a, problems, *x, **k: (
            scored.append([p["id"] for p in problems]) or real(b, a, problems, *x, **k)
        ),
    )
    aime = tmp_path / "aime.jsonl"
    aime.write_bytes(AIME.read_bytes())
    smoke = load_profile("smoke")
    assert smoke.data.extra_eval_paths == () and ev.evaluate_extra_sets(smoke) == {}
    with_aime = dataclasses.replace(
        smoke, data=dataclasses.replace(smoke.data, extra_eval_paths=(str(aime),))
    )
    assert pipeline._problems_inputs(with_aime) == pipeline._problems_inputs(smoke)  # nothing retrains

    report = ev.evaluate_extra_sets(with_aime)["aime"]
    ids = [json.loads(line)["id"] for line in AIME.read_text().splitlines()]
    # one evaluation per model (base, sft, dpo: helpers.eval_stages)
    assert scored == [ids] * 3 and report["path"] == str(aime) and report["interval"] == "exact"
    assert set(report["accuracy"]) == {"base", "sft", "dpo"}
    for name, summary in report["summary"].items():
        assert summary["n"] == len(ids)
        assert report["ci"][name] == pytest.approx(_clopper_pearson(summary["correct"], len(ids)), rel=1e-6)
    assert set(report["mcnemar_p"]) == {"base-sft", "base-dpo", "sft-dpo"}

    moved = tmp_path / "elsewhere" / "aime.jsonl"  # the same content under another path: a cache hit
    moved.parent.mkdir()
    moved.write_bytes(AIME.read_bytes())
    assert ev.evaluate_extra_sets(with_aime, [str(moved)])["aime"]["accuracy"] == report["accuracy"]
    other = tmp_path / "other.jsonl"
    other.write_text(
        json.dumps({"question": "Ann has 3 pens and buys 4 more. How many?", "answer": "7"}) + "\n"
    )
    both = dataclasses.replace(
        smoke, data=dataclasses.replace(smoke.data, extra_eval_paths=(str(aime), str(other)))
    )
    assert list(ev.evaluate_extra_sets(both)) == ["aime", "other"]
    assert len(scored) == 6  # only the new set was scored: adding a set leaves the others cached
    aime.write_text("\n".join(AIME.read_text().splitlines()[:3]) + "\n")  # edited in place
    assert ev.evaluate_extra_sets(with_aime)["aime"]["summary"]["base"]["n"] == 3
    assert scored[-1] == ids[:3]

    assert ev.extra_eval_path("tests/fixtures/aime_sample.jsonl") == AIME  # relative to the repository
    with pytest.raises(ev.EvaluationError, match=r"extra_eval_paths: nope\.jsonl does not exist"):
        ev.evaluate_extra_sets(smoke, ["nope.jsonl"])
