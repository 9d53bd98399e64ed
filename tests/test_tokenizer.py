"""Qwen3Tokenizer: the two halves, what a saved tokenizer.json may not change, sharing, bad text."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from tokenizers import Tokenizer as HFTokenizer

from qwen3_rerank import PairEncoder, Qwen3Tokenizer, Tokenizer, prompts
from qwen3_rerank._tokenizer import find_invalid_text

LONG = " ".join(f"word{i}" for i in range(200))


@pytest.fixture(scope="module")
def added_tokens(tiny_model):
    decoder = HFTokenizer.from_file(str(tiny_model / "tokenizer.json")).get_added_tokens_decoder()
    return {i: t.content for i, t in decoder.items()}


def _copy_model_tokenizer(tiny_model, directory, edit=None):
    directory.mkdir(parents=True, exist_ok=True)
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    if edit is not None:
        edit(spec)
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    return directory


def test_qwen3_tokenizer_satisfies_the_protocol(tiny_tokenizer):
    assert isinstance(tiny_tokenizer, Tokenizer)
    assert not isinstance(HFTokenizer.from_str(tiny_tokenizer._plain.to_str()), Tokenizer)  # no encode_plain
    PairEncoder(tiny_tokenizer)  # the encoder takes any Tokenizer


def test_control_ids_are_every_added_token(tiny_tokenizer, added_tokens):
    assert tiny_tokenizer.control_token_ids == frozenset(added_tokens)
    assert len(added_tokens) == 26
    non_special = {"<think>", "</think>", "<tool_call>", "</tool_call>"}
    assert non_special <= set(added_tokens.values())


def test_every_added_token_is_plain_text_in_user_text(tiny_tokenizer, added_tokens):
    texts = list(added_tokens.values())
    texts.append("".join(texts))
    texts.append(" x ".join(texts))
    for text, ids in zip(texts, tiny_tokenizer.encode_plain(texts), strict=True):
        assert not set(ids) & tiny_tokenizer.control_token_ids, text
        assert tiny_tokenizer.decode(ids) == text
    for i, token in added_tokens.items():  # the template half still knows them
        assert tiny_tokenizer.encode_template(token) == [i]


def test_saved_truncation_and_padding_never_apply(tiny_model, tiny_tokenizer, tmp_path):
    def edit(spec):
        spec["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
        spec["padding"] = {
            "strategy": {"Fixed": 512}, "direction": "Left", "pad_to_multiple_of": None,
            "pad_id": 151643, "pad_type_id": 0, "pad_token": "<|endoftext|>",
        }  # fmt: skip

    tok = Qwen3Tokenizer.from_pretrained(_copy_model_tokenizer(tiny_model, tmp_path / "t", edit))
    for text in (prompts.SYSTEM_PREFIX, prompts.ASSISTANT_SUFFIX, LONG):
        assert tok.encode_template(text) == tiny_tokenizer.encode_template(text)
    assert tok.encode_plain([LONG, "a"]) == tiny_tokenizer.encode_plain([LONG, "a"])
    assert len(tok.encode_plain(["a"])[0]) == 1


def test_from_tokenizer_copies_and_leaves_the_callers_tokenizer_alone(tiny_model, tiny_tokenizer):
    hf = HFTokenizer.from_file(str(tiny_model / "tokenizer.json"))
    hf.enable_truncation(4)
    before = hf.to_str()
    tok = Qwen3Tokenizer.from_tokenizer(hf)
    assert tok.encode_template(LONG) == tiny_tokenizer.encode_template(LONG)
    assert tok.encode_plain([prompts.SYSTEM_PREFIX]) == tiny_tokenizer.encode_plain([prompts.SYSTEM_PREFIX])
    assert tok.control_token_ids == tiny_tokenizer.control_token_ids
    assert hf.to_str() == before and hf.truncation["max_length"] == 4


def test_one_file_is_loaded_once_per_process_until_it_changes(tiny_model, tmp_path):
    directory = _copy_model_tokenizer(tiny_model, tmp_path / "t")
    a = Qwen3Tokenizer.from_pretrained(directory)
    b = Qwen3Tokenizer.from_pretrained(directory)
    assert a._full is b._full and a._plain is b._plain

    def add_token(spec):
        last = max(t["id"] for t in spec["added_tokens"])
        spec["added_tokens"].append(
            {
                "id": last + 1,
                "content": "<|new|>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }  # fmt: skip
        )

    file = directory / "tokenizer.json"
    stat = file.stat()
    _copy_model_tokenizer(tiny_model, directory, add_token)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    c = Qwen3Tokenizer.from_pretrained(directory)
    assert c._full is not a._full
    assert len(c.control_token_ids) == len(a.control_token_ids) + 1
    assert len(c.encode_template("<|new|>")) == 1
    assert not set(c.encode_plain(["<|new|>"])[0]) & c.control_token_ids
    shutil.rmtree(directory)


def test_find_invalid_text():
    assert find_invalid_text(["ok", "🙂 é 数据", ""]) is None
    assert find_invalid_text(["ok", "ab\ud800c", "\udfff"]) == (1, 2)
    assert find_invalid_text(["\ud83d\ude00"]) == (0, 0)  # a surrogate pair is two lone ones in a str


def test_lone_surrogate_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(
        ValueError, match=r"text 2 .*lone surrogate '\\udfff' at character 1 .*encode\('utf-8', 'replace'\)"
    ):
        tiny_tokenizer.encode_plain(["ok", "fine", "x\udfffy"])
    with pytest.raises(TypeError):  # other bad input keeps the tokenizer's own error
        tiny_tokenizer.encode_plain(["ok", 3])


@pytest.mark.parametrize("field", ["query", "document", "instruction"])
def test_lone_surrogate_through_the_reranker_is_a_value_error(fake_reranker, field):
    args = {"query": "q", "documents": ["a", "b"], "instruction": None}
    if field == "document":
        args["documents"] = ["a", "b\ud800"]
    else:
        args[field] = "q\ud800"
    with pytest.raises(ValueError, match="lone surrogate"):
        fake_reranker.rerank(**args)
