"""The hour-aware forest scored over the 168-slot table, user by user, compiled.

scikit-learn's ``predict_proba`` walks one tree over every row, then the next tree: with a
table of a user's 168 slots for millions of users, each tree's nodes fall out of the cache
between rows of one user, and every tree writes a row-by-class probability array that is then
added up. Here the loop is turned around: for each user (in parallel), every tree walks that
user's 168 rows while the tree's upper nodes and the user's rows stay in the cache, and the
leaves' probabilities are added in place. Two things of the layout are used besides:

- a user's own columns are the same in all 168 rows, so a split on one sends all the rows of
  the user that reach it the same way: it is decided once, and the rows move on together (a
  split on a slot column divides them, without a branch per row);
- a user's rows are sorted once by the expected activity over the horizon (``act_24``); every
  division keeps that order, so a split on a column that rises with it (``p_struct``,
  ``act_rel``: checked per user) is a binary search.

The splits are scikit-learn's (float32 inputs against its float64 thresholds, as its trees
compare them), so the probabilities equal ``predict_proba``'s up to the order of a float sum.
"""

from __future__ import annotations

import numba
import numpy as np

_TREE_LEAF = -1
#: groups (users) each tree walks before the next tree, so the tree's nodes stay in the core's
#: cache while they are read again (on a 1M-user champion, 120 trees, 20,000 users scored three
#: times: 1 user 474k-585k rows/s, 16 users 587k-655k, 128 users 720k-827k, 256 users 694k-732k)
BLOCK_GROUPS = 128
#: one node in 16 bytes (a quarter of a cache line): the split's column (-1 at a leaf), its
#: threshold as the largest float32 at or below scikit-learn's float64 one (so ``x <= t`` says
#: the same for every float32 ``x``), and the first child (the second is next to it) or, at a
#: leaf, the leaf's row in the value array
NODE = np.dtype([("feature", np.int32), ("threshold", np.float32), ("child", np.int32), ("pad", np.int32)])


@numba.njit(parallel=True, cache=True, nogil=True)
def _forest_predict(XT, U, bounds, varies, pos, key, ordered, nodes, value, roots, block, out):  # pragma: no cover - compiled
    # XT: (varying columns, rows), each column's rows side by side; U: (groups, fixed columns);
    # column f of the model is XT[pos[f]] if varies[f] else U[:, pos[f]]. Groups are taken
    # ``block`` at a time, and each tree walks all of a block's groups before the next tree:
    # the tree's nodes stay in the core's cache while they are read again and again.
    n_groups = bounds.size - 1
    n_trees = roots.size
    n_feat = varies.size
    n_blocks = (n_groups + block - 1) // block
    for b in numba.prange(n_blocks):
        g0 = b * block
        g1 = min(n_groups, g0 + block)
        r0 = bounds[g0]
        rows = bounds[g1] - r0
        widest = 0
        for g in range(g0, g1):
            widest = max(widest, bounds[g + 1] - bounds[g])
        # each group's rows sorted by the key column; every split keeps each side in that
        # order, so a split on a column that rises with the key (checked here, per group) is a
        # binary search instead of a pass over the rows
        start = np.empty(rows, np.int64)
        sorted_by = np.zeros((g1 - g0, n_feat), np.bool_)
        vals = np.empty(widest, np.float32)
        for g in range(g0, g1):
            s = bounds[g]
            m = bounds[g + 1] - s
            o = s - r0
            if key >= 0:
                for j in range(m):
                    vals[j] = XT[pos[key], s + j]
                start[o:o + m] = np.argsort(vals[:m], kind="mergesort")
            else:
                for j in range(m):
                    start[o + j] = j
            for f in range(n_feat):
                if ordered[f] and varies[f]:
                    ok = True
                    c = pos[f]
                    for j in range(m - 1):
                        if XT[c, s + start[o + j]] > XT[c, s + start[o + j + 1]]:
                            ok = False
                            break
                    sorted_by[g - g0, f] = ok
        idx = np.empty(widest, np.int64)  # a group's rows, partitioned node by node
        tmp = np.empty(widest, np.int64)
        st_node = np.empty(64, np.int64)  # the walk's stack: (node, first row, end row)
        st_lo = np.empty(64, np.int64)
        st_hi = np.empty(64, np.int64)
        acc = np.zeros(rows, np.float64)
        for t in range(n_trees):
            for g in range(g0, g1):
                s = bounds[g]
                m = bounds[g + 1] - s
                o = s - r0
                for j in range(m):
                    idx[j] = start[o + j]
                st_node[0] = roots[t]
                st_lo[0] = 0
                st_hi[0] = m
                top = 1
                while top > 0:
                    top -= 1
                    k = st_node[top]
                    lo = st_lo[top]
                    hi = st_hi[top]
                    node = nodes[k]
                    while node.feature >= 0:
                        f = node.feature
                        thr = node.threshold
                        if not varies[f]:  # the same in every row of the group: one comparison for all
                            k = node.child + (U[g, pos[f]] > thr)
                            node = nodes[k]
                            continue
                        c = pos[f]
                        if sorted_by[g - g0, f]:  # the rows at or below the threshold come first
                            a = lo
                            z = hi
                            while a < z:
                                h = (a + z) // 2
                                if XT[c, s + idx[h]] > thr:
                                    z = h
                                else:
                                    a = h + 1
                            mid = a
                        else:  # split the rows without a branch per row: left ones stay, right ones aside
                            nl = 0
                            nr = 0
                            for j in range(lo, hi):
                                r = idx[j]
                                right = XT[c, s + r] > thr
                                tmp[nr] = r
                                idx[lo + nl] = r
                                nr += right
                                nl += 1 - right
                            for j in range(nr):
                                idx[lo + nl + j] = tmp[j]
                            mid = lo + nl
                        if mid > lo and mid < hi:  # walk the left part now, the right part later
                            st_node[top] = node.child + 1
                            st_lo[top] = mid
                            st_hi[top] = hi
                            top += 1
                            hi = mid
                            k = node.child
                        elif mid > lo:
                            k = node.child
                        else:
                            k = node.child + 1
                        node = nodes[k]
                    v = value[node.child]
                    for j in range(lo, hi):
                        acc[o + idx[j]] += v
        for j in range(rows):
            out[r0 + j] = acc[j] / n_trees


def _float32_at_or_below(t: np.ndarray) -> np.ndarray:
    t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _pack_tree(tree, offset: int, value_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """One tree's nodes in breadth-first order, the two children of a node side by side."""
    left, right = tree.children_left, tree.children_right
    order = [0]
    new_id = {0: 0}
    for old in order:  # the list grows while it is walked: a breadth-first queue
        if left[old] != _TREE_LEAF:
            for c in (left[old], right[old]):
                new_id[int(c)] = len(order)
                order.append(int(c))
    order = np.asarray(order, dtype=np.int64)
    packed = np.zeros(len(order), dtype=NODE)
    is_leaf = left[order] == _TREE_LEAF
    counts = tree.value[order, 0, :].astype(np.float64)
    total = counts.sum(axis=1)
    values = counts[:, 1] / np.where(total == 0, 1.0, total)
    leaf_rank = np.cumsum(is_leaf) - 1
    packed["feature"] = np.where(is_leaf, -1, tree.feature[order])
    packed["threshold"] = np.where(is_leaf, 0.0, _float32_at_or_below(tree.threshold[order].astype(np.float64)))
    first_child = np.array([new_id.get(int(left[o]), 0) for o in order], dtype=np.int64)
    packed["child"] = np.where(is_leaf, value_offset + leaf_rank, offset + first_child)
    return packed, values[is_leaf]


class SlotForest:
    """A fitted binary ``Pipeline([("impute", SimpleImputer), ("forest", RandomForestClassifier)])``
    (the shape :func:`sendtime.training.model.make_pipeline` builds) as packed node arrays.

    ``predict(X)`` gives P(class 1) for a float32 matrix in the pipeline's column order; rows
    come in groups of ``group`` (a user's slots) that are scored together. Build one with
    :meth:`of`, which says None for any other model (the caller keeps ``predict_proba``)."""

    def __init__(self, statistics: np.ndarray, nodes: np.ndarray, value: np.ndarray, roots: np.ndarray) -> None:
        self.statistics, self.nodes, self.value, self.roots = statistics, nodes, value, roots

    @classmethod
    def of(cls, model) -> "SlotForest | None":
        steps = getattr(model, "named_steps", None)
        if steps is None or list(steps) != ["impute", "forest"]:
            return None
        imputer, forest = steps["impute"], steps["forest"]
        stats = np.asarray(getattr(imputer, "statistics_", np.zeros(0)), dtype=np.float64)
        if (getattr(imputer, "strategy", None) not in ("median", "mean") or np.isnan(stats).any()
                or not hasattr(forest, "estimators_") or len(getattr(forest, "classes_", [])) != 2
                or getattr(forest, "n_outputs_", 1) != 1 or stats.size != forest.n_features_in_):
            return None  # a dropped all-missing column, another estimator or task: not this layout
        nodes, values, roots = [], [], []
        offset = value_offset = 0
        for est in forest.estimators_:
            packed, leaf_values = _pack_tree(est.tree_, offset, value_offset)
            nodes.append(packed)
            values.append(leaf_values)
            roots.append(offset)
            offset += len(packed)
            value_offset += len(leaf_values)
        return cls(stats, np.concatenate(nodes), np.concatenate(values), np.asarray(roots, dtype=np.int64))

    def predict(self, X: np.ndarray, groups: int | np.ndarray = 168, varies: np.ndarray | None = None,
                key: int | None = None, ordered: np.ndarray | None = None) -> np.ndarray:
        """P(class 1) of each row of ``X`` (n, features), float64.

        ``groups``: rows come in groups of this many (a user's 168 slots), or an array of the
        first row of each group. ``varies`` (per column): False for a column that is the same
        in every row of a group (a user's own columns), whose splits are then decided once per
        group; default: every column may vary. ``key`` and ``ordered``: a column to sort each
        group's rows by, and the columns that may rise with it (checked per group); their splits
        become binary searches. Speed only: the result is the same with or without them."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.statistics.size:
            raise ValueError(f"SlotForest: expected (rows, {self.statistics.size}) inputs, got {X.shape}")
        varies = np.ones(X.shape[1], np.bool_) if varies is None else np.asarray(varies, np.bool_)
        bounds = self._bounds(len(X), groups)
        return self.predict_split(np.ascontiguousarray(X[:, varies].T), X[bounds[:-1]][:, ~varies], bounds[:-1],
                                  varies, key, ordered)

    def predict_split(self, XT: np.ndarray, U: np.ndarray, groups: int | np.ndarray, varies: np.ndarray,
                      key: int | None = None, ordered: np.ndarray | None = None) -> np.ndarray:
        """:meth:`predict` with the inputs as the 168-slot table holds them: ``XT`` (the varying
        columns, rows) float32, each column's rows side by side, and ``U`` (groups, the other
        columns), one row per group; the columns of each in the model's order. Nothing is
        repeated 168 times, and a column's rows are written as one block."""
        varies = np.asarray(varies, np.bool_)
        if varies.size != self.statistics.size:
            raise ValueError(f"SlotForest: varies has {varies.size} columns, the forest reads {self.statistics.size}")
        XT = np.ascontiguousarray(XT, dtype=np.float32)
        U = np.ascontiguousarray(U, dtype=np.float32)
        n = XT.shape[1] if XT.ndim == 2 else -1
        bounds = self._bounds(n, groups) if n >= 0 else None
        if (XT.ndim != 2 or XT.shape[0] != varies.sum() or U.ndim != 2 or U.shape[1] != (~varies).sum()
                or len(U) != len(bounds) - 1):
            raise ValueError(f"SlotForest: expected ({int(varies.sum())}, rows) and (groups, {int((~varies).sum())}) "
                             f"inputs, got {XT.shape} and {U.shape}")
        stats = self.statistics.astype(np.float32)
        XT, U = _imputed(XT, stats[varies][:, None]), _imputed(U, stats[~varies][None, :])
        pos = np.empty(varies.size, np.int64)
        pos[varies] = np.arange(varies.sum())
        pos[~varies] = np.arange((~varies).sum())
        out = np.empty(n, dtype=np.float64)
        if n:
            ordered = np.zeros(varies.size, np.bool_) if ordered is None else np.asarray(ordered, np.bool_)
            if key is not None and not varies[key]:
                key = None  # a column the same in every row does not order them
            _forest_predict(XT, U, bounds.astype(np.int64), varies, pos, -1 if key is None else int(key), ordered,
                            self.nodes, self.value, self.roots, BLOCK_GROUPS, out)
        return out

    @staticmethod
    def _bounds(n: int, groups: int | np.ndarray) -> np.ndarray:
        """The first row of each group, then ``n``."""
        if np.ndim(groups) == 0:
            return np.append(np.arange(0, n, max(int(groups), 1)), n).astype(np.int64)
        bounds = np.append(np.asarray(groups, np.int64), n)
        if (n and bounds[0] != 0) or (np.diff(bounds) <= 0).any():
            raise ValueError("SlotForest: groups must start at row 0 and increase")
        return bounds


def _imputed(a: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``a`` with its missing values replaced by the pipeline imputer's statistics (as the
    forest casts its input)."""
    missing = np.isnan(a)
    return np.where(missing, fill, a).astype(np.float32) if missing.any() else a
