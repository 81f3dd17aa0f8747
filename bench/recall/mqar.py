"""Multi-query associative recall (MQAR) data, as in Arora et al. 2023
(Zoology), written from the task's description.

A sequence of length T holds P key-value pairs, then a query region:

    k_1 v_1 k_2 v_2 ... k_P v_P | 0 0 k_7 0 k_2 0 0 k_5 ...
                                  ^ query region: Q of the P keys, each once,
                                    at random distinct positions; 0 elsewhere

Keys come from the first half of the vocabulary (tokens 1 .. vocab/2 - 1,
distinct within a sequence), values from the second half (vocab/2 .. vocab-1,
drawn with replacement). Token 0 is the filler. The target at a query
position is the value paired with that key earlier in the sequence (the model
reads the key and must emit its value at the same position); every other
position's target is IGNORE, so the loss and the accuracy count query
positions only.
"""
import numpy as np

IGNORE = -100


def check_setting(T, pairs, vocab, queries=None):
    q = pairs if queries is None else queries
    if vocab < 4 or vocab % 2:
        raise ValueError("vocab must be even and >= 4, got %d" % vocab)
    if pairs < 1 or pairs > vocab // 2 - 1:
        raise ValueError("pairs=%d: must be in 1..%d (distinct keys from vocab/2 - 1 tokens)" % (pairs, vocab // 2 - 1))
    if q < 1 or q > pairs:
        raise ValueError("queries=%d must be in 1..pairs=%d" % (q, pairs))
    if 2 * pairs + q > T:
        raise ValueError("T=%d too short for %d pairs and %d queries (needs 2P + Q <= T)" % (T, pairs, q))


def mqar_batch(rng, n, T, pairs, vocab, queries=None):
    """n sequences of length T with `pairs` key-value pairs each and `queries`
    queries (default: every key once). rng: a numpy Generator. Returns
    (inputs int64 [n, T], targets int64 [n, T] with IGNORE off the queries)."""
    P = int(pairs)
    Q = P if queries is None else int(queries)
    check_setting(T, P, vocab, Q)
    half = vocab // 2
    # P distinct keys per sequence from 1 .. half-1, values from half .. vocab-1
    keys = np.argsort(rng.random((n, half - 1)), axis=1)[:, :P] + 1
    vals = rng.integers(half, vocab, size=(n, P))
    x = np.zeros((n, T), dtype=np.int64)
    y = np.full((n, T), IGNORE, dtype=np.int64)
    x[:, 0:2 * P:2] = keys
    x[:, 1:2 * P:2] = vals
    # which pairs are queried (a random order of the P pairs, first Q of them)
    which = np.argsort(rng.random((n, P)), axis=1)[:, :Q]
    # where: Q distinct positions in the query region 2P .. T-1
    region = T - 2 * P
    pos = np.argsort(rng.random((n, region)), axis=1)[:, :Q] + 2 * P
    rows = np.arange(n)[:, None]
    x[rows, pos] = np.take_along_axis(keys, which, axis=1)
    y[rows, pos] = np.take_along_axis(vals, which, axis=1)
    return x, y


def mqar_mixture(rng, n, T, pair_list, vocab):
    """n sequences whose number of pairs is drawn uniformly from pair_list
    (each example its own); every key is queried once."""
    P = rng.choice(np.asarray(pair_list), size=n)
    x = np.empty((n, T), dtype=np.int64)
    y = np.empty((n, T), dtype=np.int64)
    for p in np.unique(P):
        idx = np.nonzero(P == p)[0]
        x[idx], y[idx] = mqar_batch(rng, len(idx), T, int(p), vocab)
    return x, y
