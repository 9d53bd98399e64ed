"""The Qwen3-Reranker prompt, as data plus pure functions.

The official model card formats every (query, document) pair as::

    SYSTEM_PREFIX
    + "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}"
    + ASSISTANT_SUFFIX

and reads the answer from the logits of the last token: ``P(yes) = softmax([no, yes])[1]``.
The constants below are that template, character for character. Everything else in the library
(token-exact truncation, every engine, the remote client) is built from them, so a change here is
the only way the prompt can change.

Example:
    >>> from qwen3_rerank import prompts
    >>> text = prompts.format_pair("what is BM25?", "BM25 is a ranking function.")
    >>> text.startswith(prompts.SYSTEM_PREFIX) and text.endswith(prompts.ASSISTANT_SUFFIX)
    True
"""

from __future__ import annotations

__all__ = [
    "ASSISTANT_SUFFIX",
    "DEFAULT_INSTRUCTION",
    "DOCUMENT_HEADER",
    "NO_TOKEN",
    "SYSTEM_PREFIX",
    "YES_TOKEN",
    "format_document",
    "format_pair",
    "format_query",
]

SYSTEM_PREFIX = (
    "<|im_start|>system\n"
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
"""Everything before the instruction: the system turn and the opening of the user turn."""

ASSISTANT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
"""Everything after the document: closes the user turn and opens an assistant turn with an empty
thinking block, so that the next token the model would emit is the answer."""

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
"""The model card's default task instruction."""

DOCUMENT_HEADER = "<Document>:"
"""The label that opens the document part (followed by one space and the document)."""

YES_TOKEN = "yes"
NO_TOKEN = "no"


def format_query(query: str, instruction: str | None = None) -> str:
    """The instruction and query part of the user turn, newline-terminated.

    Args:
        query: The search query.
        instruction: The task instruction; ``None`` means :data:`DEFAULT_INSTRUCTION`.

    Example:
        >>> format_query("q", "Find it")
        '<Instruct>: Find it\\n<Query>: q\\n'
    """
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n"


def format_document(document: str) -> str:
    """The document part of the user turn.

    Example:
        >>> format_document("d")
        '<Document>: d'
    """
    return f"{DOCUMENT_HEADER} {document}"


def format_pair(query: str, document: str, instruction: str | None = None) -> str:
    """The complete prompt for one pair, exactly as the model card builds it.

    Only for display, debugging and servers that take text: engines are fed token ids built
    from the same parts (see :class:`qwen3_rerank.PairEncoder`), which is what makes truncation
    keep the template intact and keeps user text from being read as control tokens.
    """
    return SYSTEM_PREFIX + format_query(query, instruction) + format_document(document) + ASSISTANT_SUFFIX
