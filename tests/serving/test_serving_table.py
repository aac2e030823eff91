"""The published serving table (serving/serving_table.py): exact id lookup, quantized scores that
keep every user's best hour of the week, and the service's answers from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.serving.serving_table import MAX_ID_BYTES, ServingTable, quantize, write_serving_table


def _table(ids, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(ids)
    zones = np.array(["Europe/Berlin", "America/New_York", "Asia/Tokyo"])
    t = pd.DataFrame({"timezone": zones[rng.integers(0, 3, n)],
                      "timezone_source": np.where(rng.random(n) < 0.8, "users_table", "default"),
                      "source": np.where(rng.random(n) < 0.7, "model", "prior"),
                      "confidence": rng.random(n)}, index=pd.Index(ids, name="user_id"))
    scores = rng.beta(2, 8, size=(n, 168)).astype(np.float32)
    return t, scores


def _write(tmp_path, ids, seed: int = 0):
    t, scores = _table(ids, seed)
    priors = {"UTC": (np.full(168, 0.1), "prior", 0.0), "Asia/Tokyo": (np.linspace(0, 0.2, 168), "prior", 0.0)}
    report = write_serving_table(tmp_path / "serving", t, scores, model_version="7", as_of=pd.Timestamp("2026-04-13", tz="UTC"),
                                 priors=priors)
    return ServingTable(tmp_path / "serving"), t, scores, report


def test_quantized_codes_keep_every_users_best_hour_of_the_week_and_of_each_day():
    rng = np.random.default_rng(1)
    t = rng.beta(2, 8, size=(5_000, 168))
    t[:50] = 0.2  # constant users
    t[50:100, 10] = t[50:100, 11] = t[50:100].max(axis=1) + 1e-9  # a near tie at the top
    t[100:150] = np.round(t[100:150], 2)  # coarse values: many exact ties
    q = quantize(t.astype(np.float32))
    rows = np.arange(len(t))
    d = q.values(rows, np.broadcast_to(np.arange(168), t.shape))
    t32 = t.astype(np.float32)
    np.testing.assert_array_equal(d.argmax(axis=1), t32.argmax(axis=1))
    np.testing.assert_array_equal(d.reshape(-1, 7, 24).argmax(axis=2), t32.reshape(-1, 7, 24).argmax(axis=2))
    step = q.step.astype(np.float64)[:, None]
    assert (np.abs(d - t) <= step * 2.01 + 1e-7).all()  # within half a step; at most two where a best is kept apart
    assert (q.step[:50] == 0).all() and np.allclose(d[:50], 0.2)
    assert q.codes.dtype == np.uint8 and q.codes.nbytes == t.size


def test_ids_are_found_exactly_and_unknown_ones_are_not(tmp_path):
    ids = [f"u{i}" for i in range(2_000)] + ["zoë@example.com", "Ω", "a b"]
    served, t, scores, _ = _write(tmp_path, ids)
    asked = ["u1", "u10", "u1999", "zoë@example.com", "Ω", "a b", "u2000", "u", "", "u1 ", "x" * (MAX_ID_BYTES + 5), "u1\0"]
    rows = served.rows_of(asked)
    assert (rows[6:] == -1).all()
    found = served.user_ids()[rows[:6]]
    assert list(found) == asked[:6]
    # each found row carries that user's columns and scores
    for u, r in zip(asked[:6], rows[:6]):
        assert served.zones[served.zone_codes[r]] == t.loc[u, "timezone"]
        assert bool(served.zone_from_table[r]) == (t.loc[u, "timezone_source"] == "users_table")
        assert served.sources[served.source_codes[r]] == t.loc[u, "source"]
        assert served.confidence[r] == pytest.approx(t.loc[u, "confidence"], rel=1e-6)
        got = served.quantized.values(np.array([r]), np.arange(168)[None, :])[0]
        want = scores[t.index.get_loc(u)]
        assert np.abs(got - want).max() <= float(served.quantized.step[r]) * 2.01 + 1e-7
        assert got.argmax() == want.argmax()


def test_long_ids_are_kept_as_digests_and_still_found(tmp_path):
    ids = [f"customer-{i}-" + "x" * 80 for i in range(300)]
    served, _, _, _ = _write(tmp_path, ids)
    assert served.meta["id_kind"] == "digest" and served.keys.dtype == np.dtype("S16")
    rows = served.rows_of(ids[::7] + ["customer-1-"])
    assert (rows[:-1] >= 0).all() and len(set(rows[:-1])) == len(ids[::7]) and rows[-1] == -1
    with pytest.raises(ValueError, match="digests"):
        served.user_ids()
    # a Scorer on it still lists its users (from the snapshot's features) and finds them all
    from sendtime.serving.scoring import Scorer

    (tmp_path / "features").mkdir()
    pd.DataFrame({"user_id": ids}).to_parquet(tmp_path / "features" / "user_features.parquet")
    scorer = Scorer(model=None, model_version="7", input_columns=[], features=None, served=served)
    assert sorted(scorer.user_ids()) == sorted(ids)
    cold, req = scorer.users(list(scorer.user_ids()))
    assert cold is None and not req.cold.any()


def test_repeated_ids_are_refused(tmp_path):
    t, scores = _table(["a", "b", "a"])
    with pytest.raises(ValueError, match="repeated"):
        write_serving_table(tmp_path / "s", t, scores, model_version="1", as_of=pd.Timestamp("2026-01-01", tz="UTC"), priors={})


def test_the_report_measures_what_the_codes_change(tmp_path):
    served, _, _, report = _write(tmp_path, [f"u{i}" for i in range(3_000)])
    assert report["week_best_same"] == 1.0
    assert report["day_best_same"] == 1.0 and report["day_max_p_lost"] == 0.0
    assert 0 < report["max_abs_error"] <= float(np.max(served.quantized.step)) * 2.01
    assert served.meta["quantization"] == report
    prior = served.prior_scores()
    assert set(prior) == {"UTC", "Asia/Tokyo"} and prior["UTC"][1] == "prior"
    np.testing.assert_allclose(prior["Asia/Tokyo"][0], np.linspace(0, 0.2, 168), atol=1e-7)


def test_a_short_table_file_is_refused(tmp_path):
    served, _, _, _ = _write(tmp_path, [f"u{i}" for i in range(100)])
    np.save(served.folder / "confidence.npy", np.zeros(99, dtype=np.float32))
    with pytest.raises(ValueError, match="confidence.npy has 99 rows"):
        ServingTable(served.folder)


def test_served_scorer_answers_like_the_float_table(trained):
    """The service's Scorer (serving table only, no features read) against the nightly's own
    (features and float table): the same users, zones and sources; hours within one step."""
    from dataclasses import replace

    from sendtime.serving.model_store import load_scorer
    from sendtime.serving.scoring import WindowRules

    settings, _ = trained
    served, _ = load_scorer(settings)
    full, _ = load_scorer(replace(settings, use_score_table=False))
    full.table = np.load(settings.published_dir / (settings.published_dir / "CURRENT").read_text().strip() / "scores.npy")
    assert served.served is not None and served.features is None and full.served is None
    assert served.n_users == full.n_users and served.as_of == full.as_of
    ids = list(full.user_ids()[::13]) + ["nobody-1", "nobody-2"]
    zones = [None] * (len(ids) - 1) + ["Asia/Tokyo"]
    rules = WindowRules(pd.Timestamp("2026-04-14T00:00Z"), pd.Timestamp("2026-04-17T00:00Z"), quiet=(22 * 60, 7 * 60))
    a, b = served.grid(ids, zones, rules), full.grid(ids, zones, rules)
    for k in ("timezone", "timezone_source", "source"):
        np.testing.assert_array_equal(getattr(a.info, k), getattr(b.info, k))
    np.testing.assert_allclose(a.info.confidence, b.info.confidence, rtol=1e-6)
    np.testing.assert_array_equal(a.allowed, b.allowed)
    step = np.append(served.served.quantized.step[served.users(ids[:-2])[1].row], [0, 0])[:, None]
    assert (np.abs(a.p - b.p) <= 2.01 * step + 1e-6).all()
    pick_a = np.where(a.allowed, a.p, -np.inf).argmax(1)
    pick_b = np.where(b.allowed, b.p, -np.inf).argmax(1)
    lost = b.p[np.arange(len(ids)), pick_b] - b.p[np.arange(len(ids)), pick_a]
    assert (lost <= 3 * step[:, 0] + 1e-6).all() and np.mean(pick_a == pick_b) > 0.9
    # the forest was never needed: not loaded; a zone without a published answer loads it once
    from sendtime.serving.model_store import DeferredModel

    assert isinstance(served.model, DeferredModel) and not served.model.loaded
    published = served.cold_priors(["Asia/Tokyo"]).scores[0]
    served.__dict__["_cold_priors"].pop("Asia/Tokyo")
    again = served.cold_priors(["Asia/Tokyo"]).scores[0]
    assert served.model.loaded and served.model.get() is served.model.get()
    assert np.abs(again - published).max() <= 1e-6


def test_tiny_tables_and_a_fixed_hash(tmp_path):
    from sendtime.serving.serving_table import key_hash

    for n in (1, 2, 5):
        ids = [f"id-{i}" for i in range(n)]
        served, _, _, _ = _write(tmp_path / str(n), ids)
        rows = served.rows_of(ids + ["id-9"])
        assert sorted(rows[:-1]) == list(range(n)) and rows[-1] == -1
    # the hash is part of the published format (format 2): pinned, so a change cannot go unnoticed
    assert int(key_hash(np.array([b"u000001"], dtype="S7"))[0]) == 2765802867044499470
    assert len({int(x) for x in key_hash(np.array([b"a", b"b", b"ab", b"ba"], dtype="S2"))}) == 4


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_a_released_map_leaves_the_resident_set_and_keeps_its_data(tmp_path):
    """The nightly's 10M-user float table (6.7 GB) is written and read through a map: released,
    its pages leave this process's resident memory and the data stays in the file."""
    from sendtime.features.mapped import release

    n = 100_000  # 64 MiB of float32
    mm = np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype=np.float32, shape=(n, 168))
    before = _rss_file_kib()
    mm[:] = np.arange(168, dtype=np.float32)
    touched = _rss_file_kib()
    release(mm)
    after = _rss_file_kib()
    assert touched - before > 50_000 and after - before < 5_000, (before, touched, after)
    ro = np.load(tmp_path / "t.npy", mmap_mode="r")
    assert float(ro[:, 7].sum()) == 7.0 * n
    release(ro)
    assert _rss_file_kib() - before < 5_000
    release(np.zeros(3))  # an array in memory: nothing to do
