"""The Qwen3-Reranker model card's transformers code, kept as written: the baseline.

Source: the "Transformers Usage" section of https://huggingface.co/Qwen/Qwen3-Reranker-0.6B
(identical for 4B and 8B). Only two things are added around it: the model path and dtype are
arguments (the card hard-codes the hub id and shows ``torch_dtype=torch.float16`` with
``flash_attention_2`` as an option; benchmarks use bfloat16 + SDPA, flash-attn is not installed
on the benchmark machine), and how the pairs are fed to ``process_inputs``/``compute_logits``:

* ``batch_size=0`` ("official-card"): the card's own usage, one call with all the pairs of one
  query (the card builds ``pairs`` for a query and its documents and scores them in one batch);
* ``batch_size=N`` ("official-bsN"): chunks of N pairs in input order, a tuned variant (smaller
  padded batches, far smaller full-vocabulary logits); 800 pairs do not fit in one call.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class OfficialReranker:
    def __init__(
        self,
        model_path: str,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: str = "cuda",
        batch_size: int = 16,
        max_length: int = 8192,
    ) -> None:
        # --- model card code starts (with model path / dtype / device as arguments) ---
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.max_length = max_length
        prefix = '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'  # noqa: E501 (verbatim)
        suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        self.prefix_tokens = self.tokenizer.encode(prefix, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(suffix, add_special_tokens=False)
        self.batch_size = batch_size

    @staticmethod
    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = "Given a web search query, retrieve relevant passages that answer the query"
        output = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(  # noqa: UP032 (as on the card)
            instruction=instruction, query=query, doc=doc
        )
        return output

    def process_inputs(self, pairs):
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)
        for key in inputs:
            inputs[key] = inputs[key].to(self.model.device)
        return inputs

    @torch.no_grad()
    def compute_logits(self, inputs, **kwargs):
        batch_scores = self.model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, self.token_true_id]
        false_vector = batch_scores[:, self.token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        scores = batch_scores[:, 1].exp().tolist()
        return scores

    # --- model card code ends ---

    def rerank_many(self, queries, documents, instruction=None):
        """Scores per query, in input order (one call per query, or chunks of ``batch_size``)."""
        if not self.batch_size:
            return [
                self.compute_logits(self.process_inputs([self.format_instruction(instruction, q, d) for d in docs]))
                for q, docs in zip(queries, documents, strict=True)
            ]
        pairs = [
            self.format_instruction(instruction, q, d) for q, docs in zip(queries, documents, strict=True) for d in docs
        ]
        scores = []
        for start in range(0, len(pairs), self.batch_size):
            scores.extend(self.compute_logits(self.process_inputs(pairs[start : start + self.batch_size])))
        out, k = [], 0
        for docs in documents:
            out.append(scores[k : k + len(docs)])
            k += len(docs)
        return out

    def close(self):
        del self.model
