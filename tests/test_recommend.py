"""Recommendation: interaction tables checked and split, the families, the metrics, the top-k graph against the
numpy scorer, the front doors (Python, CLI, REST, KServe v2) and their errors; MovieLens 100K end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from tests.helpers import free_port, post, start_server, stop_server

import tandem
from tandem.data.interactions import InteractionSpec, read_interactions, split_interactions
from tandem.errors import ConfigError, DataError, TargetError
from tandem.learners.recommenders import RECOMMEND_FAMILIES, make_recommender
from tandem.study.ranking import held_out_by_user, mask_seen, ranking_metrics, top_k
from tandem.study.recommend import RecommendConfig, evaluate, recommend_graph, run_recommend_study

DATA = __import__("pathlib").Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def taste_table(users: int = 80, items: int = 40, per_user: int = 12, seed: int = 0) -> pa.Table:
    """Two tastes: even users mostly take items 0..19, odd users items 20..39; times increase per user."""
    rng = np.random.default_rng(seed)
    rows = {"user_id": [], "item_id": [], "rating": [], "ts": []}
    for u in range(users):
        home = 0 if u % 2 == 0 else items // 2
        pool = np.arange(home, home + items // 2)
        picks = rng.choice(pool, per_user, replace=False)
        for j, i in enumerate(picks):
            rows["user_id"].append(u + 1)
            rows["item_id"].append(int(i) + 100)
            rows["rating"].append(int(rng.integers(3, 6)))
            rows["ts"].append(1_000_000 + 1000 * j + u)
    return pa.table(rows)


@pytest.fixture(scope="module")
def taste_model(tmp_path_factory):
    home = tmp_path_factory.mktemp("rec")
    path = home / "ratings.csv"
    pcsv.write_csv(taste_table(), path)
    model = tandem.train(str(path), task="recommend", user="user_id", item="item_id", time_column="ts",
                         time_limit=10, home=home, name="taste", k=5)
    return home, path, model


# -- the data -----------------------------------------------------------------------------------------------
def test_the_quality_gate_learns_the_shape_of_interactions():
    table = pa.table({"u": ["1", "2", "2", "b", "2", None, "7"], "i": ["x", "y", "y", "x", "z", "x", "solo"],
                      "t": [1.0, 2.0, 3.0, 4.0, 4e12, 5.0, 6.0]})
    data = read_interactions(table, InteractionSpec("u", "i", time="t"), now=1e9)
    checks = {f.check: f for f in data.findings}
    assert checks["missing_values"].message.startswith("1 of 7 interactions lack")
    assert checks["future_timestamps"].severity == "warning" and "row 5" in checks["future_timestamps"].message
    assert checks["mixed_id_types"].column == "u"  # "1", "2", "7" and "b": read as text
    assert checks["duplicate_pairs"].message.startswith("1 interactions repeat")
    assert "3 of 4 users have one interaction" in checks["single_interaction_users"].message
    report = data.quality_report().to_dict()
    assert report["counts"] == {"error": 0, "warning": 3, "info": 3} and report["rows"] == 7
    assert [f["severity"] for f in report["findings"]][:3] == ["warning"] * 3
    assert data.user_id_type == "string" and len(data) == 5  # (2, y) merged; the row without a user left out
    assert data.n_items == 4 and data.item_ids == ["x", "y", "z", "solo"]


def test_a_rating_threshold_keeps_the_liked_interactions_as_positives():
    table = pa.table({"u": [1, 1, 2, 2], "i": [1, 2, 1, 3], "r": [5, 2, 4, 1]})
    data = read_interactions(table, InteractionSpec("u", "i", rating="r", min_rating=4))
    assert len(data) == 2 and set(data.weight) == {1.0} and data.user_id_type == "int"
    with pytest.raises(DataError, match="no usable interactions rated >= 6 in column 'r'"):
        read_interactions(table, InteractionSpec("u", "i", rating="r", min_rating=6))


@pytest.mark.parametrize("table, spec, error, message", [
    (pa.table({"user": [1], "item": [2]}), InteractionSpec("usr", "item"), TargetError,
     "user column 'usr' not found in interaction data; did you mean 'user'"),
    (pa.table({"user": [1, 2], "item": [2, 3], "r": ["5", "lots"]}), InteractionSpec("user", "item", rating="r"),
     DataError, "column 'r' row 2: 'lots' is not a number"),
    (pa.table({"user": [1.0, 2.5], "item": [2, 3]}), InteractionSpec("user", "item"), DataError,
     "column 'user' row 2: id 2.5 is not a whole number"),
    (pa.table({"user": [1], "item": [2]}), InteractionSpec("user", "item", min_rating=4), ConfigError,
     "--min-rating needs --rating"),
    (pa.table({"user": [1], "item": [2], "t": ["soon"]}), InteractionSpec("user", "item", time="t"), DataError,
     "column 't' holds values that are neither numbers"),
    (pa.table({"user": [[1]], "item": [2]}), InteractionSpec("user", "item"), DataError,
     "column 'user' holds list<item: int64>: expected integer or text ids"),
])
def test_an_unusable_interaction_table_is_a_one_line_error(table, spec, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_interactions(table, spec)


def test_no_user_s_later_interactions_are_trained_on():
    data = read_interactions(taste_table(), InteractionSpec("user_id", "item_id", time="ts"))
    train, held = split_interactions(data, "time")
    assert len(train) + len(held) == len(data) and not set(train) & set(held)
    for u in range(data.n_users):
        seen, later = data.time[train][data.user[train] == u], data.time[held][data.user[held] == u]
        assert len(later) == 2  # 20% of 12
        assert seen.max() < later.min()  # everything trained on came before what is scored
    train, held = split_interactions(data, "global_time")
    assert data.time[train].max() < data.time[held].min()
    train, held = split_interactions(data, "random", seed=1)
    assert np.bincount(data.user[held]).tolist() == [2] * data.n_users  # each user's share, drawn at random


def test_users_with_one_interaction_stay_in_training():
    table = pa.table({"u": [1, 2, 2, 2], "i": [1, 1, 2, 3], "t": [1, 1, 2, 3]})
    data = read_interactions(table, InteractionSpec("u", "i", time="t"))
    train, held = split_interactions(data, "time")
    assert data.user[held].tolist() == [1] and data.time[held].tolist() == [3.0]
    assert sorted(data.user[train].tolist()) == [0, 1, 1]


# -- metrics --------------------------------------------------------------------------------------------------
def test_ranking_metrics_by_hand():
    recommended = np.array([[3, 1, 2], [0, 1, 2]])
    relevant = [np.array([1, 2]), np.array([4])]
    popularity = np.array([0.5, 0.1, 0.2, 0.4, 0.0])
    m = ranking_metrics(recommended, relevant, 3, popularity, n_items=5)
    # user 1: hits at ranks 2 and 3; user 2: none
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    assert m["ndcg@3"] == pytest.approx((dcg / (1 + 1 / np.log2(3)) + 0) / 2)
    assert m["recall@3"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0) / 2)
    assert m["coverage@3"] == pytest.approx(4 / 5)
    assert m["popularity@3"] == pytest.approx(np.mean([0.4, 0.1, 0.2, 0.5, 0.1, 0.2]))
    assert top_k(np.array([[0.1, 0.5, 0.5, -np.inf]], np.float32), 3).tolist() == [[1, 2, 0]]  # ties: lower first


# -- families and the graph ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", RECOMMEND_FAMILIES)
def test_the_graph_s_top_k_equals_the_numpy_scorer_s(family):
    data = read_interactions(taste_table(), InteractionSpec("user_id", "item_id", time="ts"))
    model = make_recommender(family, {"factors": 8, "iterations": 5} if family == "als" else {}).fit(data.matrix())
    popularity = make_recommender("popularity").fit(data.matrix())
    graph = recommend_graph(model, popularity, data)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    users = np.arange(data.n_users)
    k = 7
    for exclude in (True, False):
        native = model.scores(users)
        if exclude:
            native = mask_seen(native, data.matrix(), users)
        order = top_k(native, k)
        feeds = {"user": np.array([str(u) for u in data.user_ids], dtype=object), "k": np.array([k]),
                 "exclude_seen": np.array([exclude])}
        items, scores, known, from_features = sess.run(None, feeds)
        assert known.all() and not from_features.any()
        np.testing.assert_allclose(scores, np.take_along_axis(native, order, axis=1), atol=1e-5)
        expected = np.array(data.item_ids)[order]
        agree = (items == expected).all(axis=1)
        # where the order differs, it is between equal scores (float rounding of a tie)
        for row in np.flatnonzero(~agree):
            np.testing.assert_allclose(np.sort(scores[row]), np.sort(np.take_along_axis(native, order, 1)[row]),
                                       atol=1e-5)
        assert agree.mean() >= 0.95
        if exclude:  # nothing a user had comes back
            had = data.matrix().toarray() > 0
            index = {item: i for i, item in enumerate(data.item_ids)}
            assert not any(had[u, index[i]] for u in users for i in items[u])


def test_a_blend_s_graph_equals_its_numpy_scores():
    data = read_interactions(taste_table(), InteractionSpec("user_id", "item_id", time="ts"))
    blend = make_recommender("blend", {"members": [{"family": "ease", "params": {"l2": 50.0}, "weight": 0.7},
                                                   {"family": "als", "params": {"factors": 8, "iterations": 5},
                                                    "weight": 0.3}]}).fit(data.matrix())
    graph = recommend_graph(blend, make_recommender("popularity").fit(data.matrix()), data)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    users = np.arange(data.n_users)
    native = mask_seen(blend.scores(users), data.matrix(), users)
    order = top_k(native, 5)
    items, scores, _, _ = sess.run(None, {"user": np.array([str(u) for u in data.user_ids], dtype=object),
                                          "k": np.array([5]), "exclude_seen": np.array([True])})
    np.testing.assert_allclose(scores, np.take_along_axis(native, order, axis=1), atol=1e-4)
    assert (items == np.array(data.item_ids)[order]).mean() >= 0.95
    ease_only = make_recommender("ease", {"l2": 50.0}).fit(data.matrix())
    assert not np.allclose(blend.scores(users), ease_only.scores(users))  # both members count


def test_every_family_learns_the_two_tastes_better_than_popularity():
    data = read_interactions(taste_table(per_user=14), InteractionSpec("user_id", "item_id", time="ts"))
    train, held = split_interactions(data, "time")
    X = data.matrix(train)
    users, relevant = held_out_by_user(data.user[held], data.item[held])
    shares = make_recommender("popularity").fit(X).row()
    scores = {}
    for family in RECOMMEND_FAMILIES:
        params = {"factors": 8, "iterations": 10, "alpha": 5.0} if family == "als" else {"l2": 10.0} \
            if family == "ease" else {}
        scores[family] = evaluate(make_recommender(family, params).fit(X), X, users, relevant, 5, shares)["ndcg@5"]
    for family in ("item_knn", "ease", "als"):
        assert scores[family] > scores["popularity"] + 0.05, scores


def test_the_study_refits_the_best_on_every_interaction_and_honours_the_time_limit():
    data = read_interactions(taste_table(), InteractionSpec("user_id", "item_id", time="ts"))
    import time

    started = time.monotonic()
    result = run_recommend_study(data, RecommendConfig(time_limit=5, k=5), started=started)
    assert time.monotonic() - started < 5
    assert result.best.metrics["ndcg@5"] == max(t.metrics["ndcg@5"] for t in result.trials)
    assert result.model.X.nnz == len(data)  # the refit saw the held-out interactions too
    with pytest.raises(ConfigError, match="no recommendation family can run on this data: two_tower left out: it "
                                          "needs a users or an items feature table"):
        run_recommend_study(data, RecommendConfig(families=["two_tower"]))
    with pytest.raises(ConfigError, match="unknown recommendation family 'svd'"):
        run_recommend_study(data, RecommendConfig(families=["svd"]))
    with pytest.raises(ConfigError, match="split 'time' needs a time column"):
        run_recommend_study(read_interactions(taste_table(), InteractionSpec("user_id", "item_id")),
                            RecommendConfig(split="time"))


# -- the front doors ----------------------------------------------------------------------------------------
def test_a_known_user_gets_unseen_items_of_their_taste_and_an_unknown_user_the_popular_ones(taste_model):
    _, _, model = taste_model
    assert model.task == "recommend" and model.manifest["parity"]["max_abs_diff"] <= 1e-5
    footprint = model.manifest["footprint"]
    assert footprint["train"]["energy_kwh"] > 0 and footprint["inference"]["predictions"] == 1000
    answer = model.recommend(2, 5)  # user 2 (odd index 1 -> items 120..139)
    assert answer["known"] and len(answer["items"]) == 5 and "note" not in answer
    assert all(120 <= i < 140 for i in answer["items"])
    had = set(taste_table().to_pandas().query("user_id == 2")["item_id"])
    assert not had & set(answer["items"])
    assert set(model.recommend(2, 5, exclude_seen=False)["items"]) & had  # what they had ranks high when kept
    stranger = model.recommend(99999, 3)
    assert not stranger["known"] and stranger["note"] == "unknown user: the most popular items"
    counts = taste_table().to_pandas()["item_id"].value_counts()
    assert counts[stranger["items"][0]] == counts.max()
    both = model.recommend([2, 99999], 3)
    assert [a["known"] for a in both] == [True, False]
    # more than the user has left: only real items come back
    assert len(model.recommend(2, 40)["items"]) == 40 - len(had)


@pytest.mark.parametrize("user, k, message", [
    ("abc", 5, "field 'user' is str 'abc': expected an integer user id"),
    (True, 5, "field 'user' is bool True: expected an integer user id"),
    (2, 0, "field 'k' is int 0: expected an integer from 1 to 40"),
    (2, 10**9, "field 'k' is int 1000000000: expected an integer from 1 to 40"),
    (2, 2.5, "field 'k' is float 2.5"),
    ([], 5, "field 'user' is an empty list"),
])
def test_bad_requests_name_the_field(taste_model, user, k, message):
    with pytest.raises(DataError, match=message):
        taste_model[2].recommend(user, k)


def test_a_recommender_is_not_a_predictor(taste_model):
    with pytest.raises(DataError, match=r"recommends items: ask recommend\(user, k\)"):
        taste_model[2].predict({"user_id": 2})


def test_the_cli_trains_predicts_top_k_per_user_and_errors_in_one_line(taste_model, tmp_path):
    home, ratings, _ = taste_model
    env = {"TANDEM_HOME": str(home)}

    def cli(*args):
        import os

        return subprocess.run([sys.executable, "-m", "tandem.cli", *args], capture_output=True, text=True,
                              env=dict(os.environ, **env), timeout=300)

    proc = cli("train", str(ratings), "--task", "recommend", "--user", "user_id", "--item", "item_id",
               "--time-column", "ts", "--rating", "rating", "--min-rating", "4", "--time-limit", "5", "--name", "cli")
    assert proc.returncode == 0, proc.stderr
    assert "task=recommend" in proc.stdout
    proc = cli("check", str(ratings), "--task", "recommend", "--user", "user_id", "--item", "item_id", "--json")
    assert proc.returncode == 0, proc.stderr
    gate = json.loads(proc.stdout)
    assert gate["rows"] == 960 and gate["target"] == "item_id" and gate["counts"]["error"] == 0
    users = tmp_path / "users.csv"
    users.write_text("user_id\n2\n3\n424242\n")
    out = tmp_path / "top.csv"
    proc = cli("predict", "cli", str(users), "-o", str(out), "--k", "4")
    assert proc.returncode == 0, proc.stderr
    top = pcsv.read_csv(out).to_pylist()
    assert len(top) == 12 and [r["rank"] for r in top[:4]] == [1, 2, 3, 4]
    assert [r["known"] for r in top[::4]] == [True, True, False]
    for args, message in [
        (("train", str(ratings), "--task", "recommend", "--user", "usr", "--item", "item_id"),
         "user column 'usr' not found"),
        (("train", str(ratings), "--task", "recommend", "--user", "user_id"), "needs the user column and the item"),
        (("train", str(ratings), "--task", "recommend", "--user", "user_id", "--item", "item_id", "--k", "0"),
         "--k"),
        (("predict", "cli", str(users), "-o", str(tmp_path / "x.csv"), "--k", "0"), "--k"),
        (("predict", "cli", str(users), "-o", str(tmp_path / "x.csv"), "--k", "100000"), "field 'k'"),
    ]:
        proc = cli(*args)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"user_id,item_id\n1,2\n\x00\xff,\"unterminated\n")
    proc = cli("train", str(bad), "--task", "recommend", "--user", "user_id", "--item", "item_id")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    halves = tmp_path / "halves.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user_id": [2.0, 2.5]}), halves)
    proc = cli("predict", "cli", str(halves), "-o", str(tmp_path / "z.csv"))
    assert proc.returncode != 0 and "column 'user_id' row 2 is float 2.5: expected an integer user id" in proc.stderr
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("user_id\n2\nabc\n")
    proc = cli("predict", "cli", str(wrong), "-o", str(tmp_path / "y.csv"))
    assert proc.returncode != 0 and "user_id" in proc.stderr and "abc" in proc.stderr
    assert not (tmp_path / "y.csv").exists()


def test_the_server_recommends_over_rest_and_v2(taste_model):
    home, _, _ = taste_model
    port = free_port()
    proc = start_server(home, port, ref="taste")
    try:
        status, body = post(port, "/v1/models/taste/recommend", {"user": 2, "k": 3})
        assert status == 200 and body["known"] and len(body["items"]) == 3 and body["version"] == 1
        status, body = post(port, "/v1/models/taste/recommend", {"users": [2, 31337], "k": 2})
        assert status == 200 and [a["known"] for a in body["recommendations"]] == [True, False]
        assert body["recommendations"][1]["note"] == "unknown user: the most popular items"
        for request, code, message in [
            ({"user": "two"}, 422, "field 'user' is str 'two': expected an integer user id"),
            ({"user": 2, "k": 0}, 422, "field 'k' is int 0"),
            ({"user": 2, "k": 10**12}, 422, "field 'k'"),
            ({"users": [2, 3.5]}, 422, "field 'users[1]' is float 3.5"),
            ({"users": []}, 400, "field 'users'"),
            ({"user": 2, "users": [2]}, 400, "body: expected"),
            ({"user": 2, "exclude_seen": "yes"}, 422, "field 'exclude_seen'"),
            ({"user": 2, "top": 3}, 400, "field 'top' is not known"),
            ({"user": [[2]]}, 422, "field 'user' is list [[2]]: expected an integer user id"),
            ({"users": [{"id": 2}]}, 422, "field 'users[0]' is dict"),
            ({"users": list(range(10_001))}, 413, "over the limit"),
        ]:
            status, body = post(port, "/v1/models/taste/recommend", request)
            assert status == code and message in body["error"], (request, status, body)
        status, body = post(port, "/v1/models/taste/predict", {"instances": [{"user_id": 2}]})
        assert status == 400 and "/v1/models/taste/recommend" in body["error"]
        status, body = post(port, "/v2/models/taste/infer", {
            "inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [2, 31337]}],
            "parameters": {"k": 3}})
        assert status == 200
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["items"]["shape"] == [2, 3] and outputs["known"]["data"] == [True, False]
        rest = post(port, "/v1/models/taste/recommend", {"user": 2, "k": 3})[1]
        assert outputs["items"]["data"][:3] == rest["items"]
        status, body = post(port, "/v2/models/taste/infer", {
            "inputs": [{"name": "user", "shape": [1], "datatype": "INT64", "data": [2]}]})
        assert status == 400 and "expected one input named 'user_id'" in body["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/taste", timeout=5) as resp:
            meta = json.loads(resp.read())
        assert meta["inputs"] == [{"name": "user_id", "datatype": "INT64", "shape": [-1]}]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'route="recommend",code="200"' in metrics
    finally:
        stop_server(proc)


# -- real data ------------------------------------------------------------------------------------------------
def test_movielens_beats_popularity_on_each_user_s_latest_interactions(tmp_path):
    raw = np.loadtxt(DATA / "movielens_100k" / "u.data", dtype=np.int64)
    table = pa.table({"user_id": raw[:, 0], "item_id": raw[:, 1], "rating": raw[:, 2], "ts": raw[:, 3]})
    data = read_interactions(table, InteractionSpec("user_id", "item_id", "rating", 4, "ts"))
    train, test = split_interactions(data, "time")
    rows = np.sort(train)
    pcsv.write_csv(pa.table({"user_id": np.array(data.user_ids)[data.user[rows]],
                             "item_id": np.array(data.item_ids)[data.item[rows]], "ts": data.time[rows]}),
                   tmp_path / "train.csv")
    model = tandem.train(str(tmp_path / "train.csv"), task="recommend", user="user_id", item="item_id",
                         time_column="ts", time_limit=15, home=tmp_path, name="ml")
    users, relevant = held_out_by_user(data.user[test], data.item[test])
    index = {item: i for i, item in enumerate(data.item_ids)}
    answers = model.recommend([data.user_ids[u] for u in users], 10)
    recommended = np.array([[index[i] for i in a["items"]] for a in answers])
    X = data.matrix(train)
    shares = np.asarray((X > 0).sum(axis=0)).reshape(-1) / X.shape[0]
    ours = ranking_metrics(recommended, relevant, 10, shares, data.n_items)
    popular = top_k(mask_seen(np.tile(shares.astype(np.float32), (len(users), 1)), X, users), 10)
    baseline = ranking_metrics(popular, relevant, 10, shares, data.n_items)
    assert ours["ndcg@10"] > 1.5 * baseline["ndcg@10"]
    assert ours["coverage@10"] > baseline["coverage@10"]
    assert model.manifest["recommend"]["users"] == 942
    report = (model.path / "report.html").read_text()
    assert "NDCG@10 against catalogue coverage@10" in report and "<svg" in report


# -- feature tables, cold start, drift, optimize ---------------------------------------------------------------
def test_new_users_of_the_users_table_are_answered_from_their_features(tmp_path):
    table = taste_table(users=80, per_user=12).to_pandas()
    rng = np.random.default_rng(3)
    users = pa.table({"user_id": np.arange(1, 101), "side": np.where(np.arange(100) % 2 == 0, "left", "right"),
                      "age": rng.integers(18, 70, 100), "name": [f"person {i}" for i in range(100)]})
    pcsv.write_csv(pa.Table.from_pandas(table, preserve_index=False), tmp_path / "ratings.csv")
    pcsv.write_csv(users, tmp_path / "users.csv")
    model = tandem.train(str(tmp_path / "ratings.csv"), task="recommend", user="user_id", item="item_id",
                         time_column="ts", time_limit=30, home=tmp_path, name="cold",
                         user_features=str(tmp_path / "users.csv"), k=5)
    info = model.manifest["recommend"]
    assert info["users_from_features"] == 20 and info["cold_start_validation"]["ndcg@5"] > \
        info["cold_start_validation"]["popularity_ndcg@5"]
    for user in (81, 82):  # never interacted; 81 is "left" (items 100..119), 82 "right" (120..139)
        answer = model.recommend(user, 5)
        assert not answer["known"] and answer["note"] == "new user: recommended from the users table's features"
        home = range(100, 120) if user % 2 else range(120, 140)
        assert sum(i in home for i in answer["items"]) >= 4, answer
    assert model.recommend(5000, 3)["note"] == "unknown user: the most popular items"
    assert any(f["model"] == "two_tower" for f in model.leaderboard())


def test_a_feature_table_without_usable_columns_is_a_one_line_error(tmp_path):
    pcsv.write_csv(taste_table(), tmp_path / "ratings.csv")
    pcsv.write_csv(pa.table({"user_id": [1, 2], "name": ["a", "b"]}), tmp_path / "users.csv")
    with pytest.raises(DataError, match="has no usable feature column beside 'user_id'"):
        tandem.train(str(tmp_path / "ratings.csv"), task="recommend", user="user_id", item="item_id",
                     time_limit=5, home=tmp_path, user_features=pa.table({"user_id": [1, 2], "x": [3, 3]}))
    with pytest.raises(TargetError, match="user id column 'user_id' not found"):
        tandem.train(str(tmp_path / "ratings.csv"), task="recommend", user="user_id", item="item_id",
                     time_limit=5, home=tmp_path, user_features=pa.table({"uid": [1, 2], "x": [3, 4]}))


def test_drift_reports_unknown_users_and_items(taste_model, tmp_path):
    _, _, model = taste_model
    same = taste_table(seed=5)
    report = model.drift(same)
    assert report["kind"] == "interactions" and report["moved"] == []
    strangers = pa.table({"user_id": list(range(500, 540)) + [2] * 10, "item_id": [100] * 40 + [999] * 10})
    report = model.drift(strangers)
    features = {f["feature"]: f for f in report["features"]}
    assert features["user_id"]["new_categories"]["share"] == pytest.approx(0.8)
    assert features["item_id"]["new_categories"]["share"] == pytest.approx(0.2)
    assert {"user_id", "item_id"} <= set(report["moved"])


def test_optimize_says_what_it_is_for(taste_model):
    from tandem.optimize.run import optimize

    home, path, _ = taste_model
    with pytest.raises(ConfigError, match="recommends: optimize's methods"):
        optimize("taste", str(path), home=home)
