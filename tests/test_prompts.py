"""Golden tests of the prompt: the strings (no model) and the token ids (tiny tokenizer)."""

from __future__ import annotations

import pytest

from qwen3_rerank import prompts

OFFICIAL_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
OFFICIAL_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def official_format_instruction(instruction, query, doc):
    # Verbatim from the Qwen3-Reranker model card.
    if instruction is None:
        instruction = "Given a web search query, retrieve relevant passages that answer the query"
    output = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(  # noqa: UP032 (verbatim)
        instruction=instruction, query=query, doc=doc
    )
    return output


def test_constants_are_the_model_cards():
    assert prompts.SYSTEM_PREFIX == OFFICIAL_PREFIX
    assert prompts.ASSISTANT_SUFFIX == OFFICIAL_SUFFIX
    assert prompts.DEFAULT_INSTRUCTION == "Given a web search query, retrieve relevant passages that answer the query"


@pytest.mark.parametrize("instruction", [None, "Find the passage that defines the term"])
@pytest.mark.parametrize(
    "query,doc", [("what is BM25?", "BM25 is a ranking function."), ("", ""), ("q\n", " leading space\n\ntrail ")]
)
def test_format_pair_matches_model_card(instruction, query, doc):
    expected = OFFICIAL_PREFIX + official_format_instruction(instruction, query, doc) + OFFICIAL_SUFFIX
    assert prompts.format_pair(query, doc, instruction) == expected
    assert prompts.format_query(query, instruction) + prompts.format_document(doc) == official_format_instruction(
        instruction, query, doc
    )


def test_golden_token_ids(tiny_tokenizer):
    # Ids of the real Qwen3 vocabulary (the tiny model uses the real tokenizer).
    assert tiny_tokenizer.encode_template(prompts.SYSTEM_PREFIX)[:5] == [151644, 8948, 198, 60256, 3425]
    assert tiny_tokenizer.encode_template(prompts.ASSISTANT_SUFFIX) == [
        151645,
        198,
        151644,
        77091,
        198,
        151667,
        271,
        151668,
        271,
    ]
    assert tiny_tokenizer.token_id("yes") == 9693
    assert tiny_tokenizer.token_id("no") == 2152
    assert tiny_tokenizer.encode_plain([prompts.DOCUMENT_HEADER]) == [[75692, 26818]]


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model):
    from qwen3_rerank import Qwen3Tokenizer

    return Qwen3Tokenizer.from_pretrained(tiny_model)
