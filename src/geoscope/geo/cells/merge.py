"""Merging small cells into their neighbours: the second half of the adaptive and admin rules."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return int(root)


def merge_small(xyz: np.ndarray, counts: np.ndarray, min_points: int, max_points: int,
                groups: np.ndarray | None = None) -> np.ndarray:
    """Merge items with fewer than ``min_points`` into nearby items; return a label per item.

    Items are visited from the smallest count up. An item whose merged cell still holds fewer than
    ``min_points`` joins the cell of the nearest other item (by centre, ``xyz`` unit vectors) whose
    cell can take it without going over ``max_points``; if no cell has room, the nearest cell takes
    it anyway. With ``groups``, items only merge within their group (country); a group whose total is
    below ``min_points`` ends as one cell. Labels are 0..k-1, in order of first item.
    """
    n = len(counts)
    uf = _UnionFind(n)
    total = counts.astype(np.int64).copy()  # valid at roots
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) < 2 or counts[members].min() >= min_points:
            continue
        tree = cKDTree(xyz[members])
        for local in np.argsort(counts[members], kind="stable"):
            item = int(members[local])
            root = uf.find(item)
            if total[root] >= min_points:
                continue
            k = min(len(members), 16)
            while True:
                _, nbr = tree.query(xyz[item], k=k)
                nbr = np.atleast_1d(nbr)
                roots = [uf.find(int(members[j])) for j in nbr]
                others = [r for r in roots if r != root]
                fits = [r for r in others if total[r] + total[root] <= max_points]
                if fits or k >= len(members):
                    break
                k = min(len(members), k * 4)
            if not others:  # everything in the group is already one cell
                break
            target = fits[0] if fits else others[0]
            uf.parent[root] = target
            total[target] += total[root]
    final = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    _, first, labels = np.unique(final, return_index=True, return_inverse=True)
    # relabel in order of first appearance, so labels follow the input order
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[labels]
