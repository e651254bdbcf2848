"""Named, versioned prompt templates.

Every pipeline renders its prompt from the same family, so the only differences between
`base`, `finetuned`, `rag` and `rag_finetuned` are the two switches (adapter, retrieval):
`closed_book` when retrieval is off, `with_context` when it is on. A template's name and
version are recorded with every prediction; change the wording, bump the version.

Prompts go through the tokenizer's chat template when it has one (instruction-tuned
models), with the instruction as the system message (it replaces a model's default system
prompt, which would only add tokens), and through a plain "instruction, question,
Answer:" layout otherwise (base models).
"""

from __future__ import annotations

from dataclasses import dataclass

ABSTAIN = "I don't know"


@dataclass(frozen=True)
class Template:
    name: str
    version: str
    system: str  # the instruction, sent as the system message (replacing a model's default)
    user: str  # format string with {question} and, for retrieval, {context}

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


def format_context(passages: list[str]) -> str:
    return "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))


def render(tokenizer, template: Template, *, question: str, passages: list[str] | None = None) -> str:
    """The full prompt text up to where the model's answer starts."""
    user = template.user.format(question=question, context=format_context(passages or []))
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": template.system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{template.system}\n\n{user}\nAnswer:"


def continuation(prompt: str, text: str) -> str:
    """A scored continuation (a choice, a judge's reply word) as it follows `prompt`:
    straight after a chat template's assistant turn (which ends in a newline), after a
    space otherwise ("Answer: Paris"), as lm-evaluation-harness puts its target
    delimiter before a choice. Scoring "Answer:Paris" would ask a base model for a token
    it rarely sees."""
    return text if not prompt or prompt[-1].isspace() else " " + text


def answer_suffix(tokenizer) -> str:
    """What closes an answer in training targets: the chat turn's end token, else EOS."""
    return tokenizer.eos_token or ""


def template_for(*, retrieval: bool, task: str = "qa") -> Template:
    """The template of an item's task, with retrieved passages or without. For rewrite,
    extract and classify, retrieval brings the nearest worked examples."""
    names = TASK_TEMPLATES.get(task)
    if names is None:
        raise ValueError(f"no templates for task {task!r}; tasks: {', '.join(TASK_TEMPLATES)}")
    return TEMPLATES[names[1] if retrieval else names[0]]


TEMPLATES = {
    "closed_book": Template(
        name="closed_book",
        version="v1",
        system=f'Answer the question with a short phrase. If you do not know the answer, reply "{ABSTAIN}".',
        user="Question: {question}",
    ),
    "with_context": Template(
        name="with_context",
        version="v1",
        system=(
            "Answer the question with a short phrase, using the passages given. If they do not "
            f'contain the answer, reply "{ABSTAIN}".'
        ),
        user="Passages:\n{context}\n\nQuestion: {question}",
    ),
    "rewrite": Template(
        name="rewrite",
        version="v1",
        system="Rewrite the sentence in the style of the King James Bible (Early Modern English). Keep its meaning. "
        "Reply with the rewritten sentence only.",
        user="Sentence: {question}",
    ),
    "rewrite_examples": Template(
        name="rewrite_examples",
        version="v1",
        system="Rewrite the sentence in the style of the King James Bible (Early Modern English), as in the "
        "examples. Keep its meaning. Reply with the rewritten sentence only.",
        user="Examples:\n{context}\n\nSentence: {question}",
    ),
    "extract": Template(
        name="extract",
        version="v1",
        system="Extract the requested fields from the passage. Reply with one JSON object only.",
        user="{question}",
    ),
    "extract_examples": Template(
        name="extract_examples",
        version="v1",
        system="Extract the requested fields from the passage, as in the examples. Reply with one JSON object only.",
        user="Examples:\n{context}\n\n{question}",
    ),
    "classify": Template(
        name="classify",
        version="v1",
        system="Classify the passage. Reply with the label only.",
        user="{question}",
    ),
    "classify_examples": Template(
        name="classify_examples",
        version="v1",
        system="Classify the passage, as in the examples. Reply with the label only.",
        user="Examples:\n{context}\n\n{question}",
    ),
}

# task -> (template without retrieval, template with retrieval)
TASK_TEMPLATES = {
    "qa": ("closed_book", "with_context"),
    "term": ("closed_book", "with_context"),
    "definition": ("closed_book", "with_context"),
    "probe": ("closed_book", "with_context"),
    "rewrite": ("rewrite", "rewrite_examples"),
    "extract": ("extract", "extract_examples"),
    "classify": ("classify", "classify_examples"),
}
