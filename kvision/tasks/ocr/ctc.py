"""CTC decoding outside the graph (NumPy) and the text metrics.

The model's output is ``char_logits`` float ``[B, T, K + 1]``: per timestep, logits over the
CTC blank (index 0) and the charset's ``K`` characters (index ``i + 1`` is ``charset[i]``).

- :func:`greedy_decode`: best path, repeats collapsed, blanks dropped (Graves et al., ICML 2006).
- :func:`beam_decode`: CTC prefix beam search without a language model (Hannun et al., 2014,
  "First-Pass Large Vocabulary Continuous Speech Recognition using Bi-Directional Recurrent
  DNNs", section 3.1): exact prefix probabilities, ``beam_width`` best prefixes kept per step.
- :func:`cer` / :func:`wer`: edit distance (``rapidfuzz.distance.Levenshtein``) summed over lines
  divided by the reference characters / words summed over lines, as ICDAR and jiwer report.
"""

from __future__ import annotations

import numpy as np

BLANK = 0


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def greedy_decode(logits, charset) -> list[tuple[str, list[float]]]:
    """``[(text, per-character confidence)]`` per line of ``logits`` ``[B, T, K + 1]``: the
    confidence of a character is the highest softmax probability over the timesteps of its run."""
    logp = _log_softmax(np.asarray(logits))
    best = logp.argmax(-1)
    out = []
    for path, lp in zip(best, logp, strict=True):
        chars, conf, prev = [], [], BLANK
        for t, k in enumerate(path):
            p = float(np.exp(lp[t, k]))
            if k != BLANK and k != prev:
                chars.append(charset[k - 1])
                conf.append(p)
            elif k != BLANK and k == prev and conf:
                conf[-1] = max(conf[-1], p)
            prev = k
        out.append(("".join(chars), [round(c, 4) for c in conf]))
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    m = max(a, b)
    return m + float(np.log(np.exp(a - m) + np.exp(b - m)))


def beam_decode(logits, charset, beam_width: int = 8) -> list[tuple[str, float]]:
    """``[(text, log probability of the text)]`` per line by CTC prefix beam search (module
    docstring) over ``logits`` ``[B, T, K + 1]``.

    Raises:
        ValueError: ``beam_width`` < 1.
    """
    if beam_width < 1:
        raise ValueError(f"`beam_width` should be >= 1. Received: {beam_width}")
    logp = _log_softmax(np.asarray(logits))
    results = []
    for lp in logp:
        # prefix -> (log p ending in blank, log p ending in its last character)
        beams = {(): (0.0, -np.inf)}
        for t in range(lp.shape[0]):
            nxt: dict[tuple, tuple[float, float]] = {}

            def add(prefix, blank=-np.inf, char=-np.inf, nxt=nxt):
                b, c = nxt.get(prefix, (-np.inf, -np.inf))
                nxt[prefix] = (_logsumexp(b, blank), _logsumexp(c, char))

            for prefix, (pb, pc) in beams.items():
                total = _logsumexp(pb, pc)
                add(prefix, blank=total + lp[t, BLANK])
                for k in range(1, lp.shape[1]):
                    p = lp[t, k]
                    if prefix and prefix[-1] == k:
                        add(prefix, char=pc + p)  # a repeat without a blank between: same char
                        add(prefix + (k,), char=pb + p)  # a blank separated them: a new char
                    else:
                        add(prefix + (k,), char=total + p)
            ranked = sorted(nxt.items(), key=lambda kv: -_logsumexp(*kv[1]))
            beams = dict(ranked[:beam_width])
        prefix, (pb, pc) = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))
        results.append(("".join(charset[k - 1] for k in prefix), _logsumexp(pb, pc)))
    return results


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance of two strings (rapidfuzz)."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b))


def cer(references, hypotheses) -> float | None:
    """Character error rate: total edit distance / total reference characters (None if the
    references have no character)."""
    chars = sum(len(r) for r in references)
    if not chars:
        return None
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True)) / chars


def wer(references, hypotheses) -> float | None:
    """Word error rate: word-level edit distance / total reference words (None if none)."""
    from rapidfuzz.distance import Levenshtein

    words = sum(len(r.split()) for r in references)
    if not words:
        return None
    total = sum(
        Levenshtein.distance(r.split(), h.split())
        for r, h in zip(references, hypotheses, strict=True)
    )
    return total / words
