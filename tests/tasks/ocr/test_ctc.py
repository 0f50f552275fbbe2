"""CTC decoding against hand-made logits (greedy and beam), against TensorFlow's beam search,
and CER / WER against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.tasks.ocr.ctc import beam_decode, cer, greedy_decode, wer

CHARSET = list("ab")  # logits index: 0 blank, 1 'a', 2 'b'


def _logits(paths):
    """One-hot-ish log-probabilities from per-timestep probability rows."""
    return np.log(np.asarray(paths, np.float64) + 1e-12)[None]


def test_greedy_collapses_repeats_and_drops_blanks():
    # best path: a a - a b b -  ->  "aab"
    rows = np.full((7, 3), 0.05)
    for t, k in enumerate([1, 1, 0, 1, 2, 2, 0]):
        rows[t, k] = 0.9
    ((text, conf),) = greedy_decode(_logits(rows), CHARSET)
    assert text == "aab" and len(conf) == 3
    assert all(c == pytest.approx(0.9 / 1.0, abs=0.001) for c in conf)


def test_beam_finds_the_likelier_text_that_greedy_misses():
    # Two timesteps. Greedy picks blank, blank -> "". But "a" has probability
    # P(a,-) + P(-,a) + P(a,a) = .4*.6 + .6*.4 + .4*.4 = 0.64 > P("") = .36
    rows = np.array([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]])
    assert greedy_decode(_logits(rows), CHARSET)[0][0] == ""
    ((text, logp),) = beam_decode(_logits(rows), CHARSET, beam_width=4)
    assert text == "a" and np.exp(logp) == pytest.approx(0.64, abs=1e-6)


def test_beam_keeps_a_blank_separated_repeat():
    rows = np.full((3, 3), 0.01)
    for t, k in enumerate([1, 0, 1]):
        rows[t, k] = 0.98
    assert beam_decode(_logits(rows), CHARSET)[0][0] == "aa"
    assert greedy_decode(_logits(rows), CHARSET)[0][0] == "aa"


def test_beam_agrees_with_tensorflow_on_random_logits():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 12, 4)).astype(np.float32) * 2.0
    ours = [t for t, _ in beam_decode(logits, list("xyz"), beam_width=16)]
    # TF's decoder uses the LAST class as blank: move ours (index 0) there
    moved = np.concatenate([logits[..., 1:], logits[..., :1]], axis=-1)
    decoded, _ = tf.nn.ctc_beam_search_decoder(
        tf.transpose(tf.nn.log_softmax(moved), [1, 0, 2]), [12] * 6, beam_width=16, top_paths=1
    )
    dense = tf.sparse.to_dense(decoded[0], default_value=-1).numpy()
    theirs = ["".join("xyz"[k] for k in row if k >= 0) for row in dense]
    assert ours == theirs


def test_cer_and_wer_by_hand():
    refs = ["hello world", "abc"]
    hyps = ["helo world", "abd"]
    # char edits: 1 (drop l) + 1 (c->d) over 11 + 3 chars
    assert cer(refs, hyps) == pytest.approx(2 / 14)
    # word edits: 1 (helo) + 1 (abd) over 2 + 1 words
    assert wer(refs, hyps) == pytest.approx(2 / 3)
    assert cer(["", ""], ["x", ""]) is None
    assert cer(["ab"], ["ab"]) == 0.0
