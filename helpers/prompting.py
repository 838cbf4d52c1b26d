"""How a question becomes a prompt, and a solution a completion, for every model.

Tiny models see plain text (`Question: ...\nAnswer:` then ` <solution>` and EOS);
chat models (the `paper` profile) get their chat template with a step-by-step
instruction that asks for the final answer in `\\boxed{}`. Training, rollouts, evaluation
and connectivity all go through here, so the same text reaches the model at every stage.
"""

from __future__ import annotations

from typing import Any

# The instruction Qwen's math models and the study's verifier expect: the answer in \boxed{}, which
# the grader reads first after a `####` line (helpers.data.is_correct also takes "The answer is").
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def uses_chat_template(tokenizer: Any) -> bool:
    """Chat models carry a template; the tiny tokenizer does not."""
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(question: str, tokenizer: Any = None) -> str:
    """The prompt text for one question."""
    question = question.strip()
    if tokenizer is not None and uses_chat_template(tokenizer):
        messages = [{"role": "user", "content": f"{question}\n\n{INSTRUCTION}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def build_completion(solution: str, tokenizer: Any = None) -> str:
    """The completion text for a worked solution (EOS is appended at tokenisation)."""
    solution = solution.strip()
    if tokenizer is not None and uses_chat_template(tokenizer):
        return solution
    return " " + solution


def tokenize_pair(tokenizer: Any, prompt: str, completion: str, max_length: int) -> dict[str, Any]:
    """Token ids of prompt + completion + EOS, a mask that is 1 on completion tokens, and what was cut.

    Prompt and completion are tokenised separately so the boundary is exact. The prompt
    is never cut: a model must always see its question. When the pair is too long, the
    completion is cut from the right (the row then has no EOS and `truncated` is True);
    when the prompt alone leaves no room for one completion token, the row is `dropped`
    (empty ids) and the caller leaves it out.
    """
    if max_length < 2:
        raise ValueError(
            f"max_length must be at least 2 (a prompt token and a completion token), got {max_length}"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    room = max_length - len(prompt_ids)
    if room < 1:
        return {"input_ids": [], "completion_mask": [], "truncated": False, "dropped": True}
    truncated = len(completion_ids) > room
    completion_ids = completion_ids[:room]
    return {
        "input_ids": prompt_ids + completion_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
        "truncated": truncated,
        "dropped": False,
    }
