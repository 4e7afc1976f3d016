import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from curation.distill import (
    DistillConfig,
    DistilledSet,
    ExpertConfig,
    MatchingConfig,
    StudentSpec,
    StudentTraining,
    choose_rows,
    compact_labels,
    distill,
    evaluate_students,
    match_trajectories,
    matching_loss,
    read_distilled,
    read_ranking,
    remove_structure,
    run_distill,
    trajectory,
    write_distilled,
)
from curation.errors import CurationError
from curation.evaluate import EvalConfig, evaluate_subset, soft_cross_entropy
from curation.networks import ConvNet, declared_shape, image_shape
from curation.pool import load_pool
from curation.proxies.classifier import ProxySpec, WarmupConfig, warmup


def _blobs(n: int, seed: int, d: int = 6, classes: int = 3):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((classes, d)).astype(np.float32) * 2
    y = np.arange(n) % classes
    return (centers[y] + rng.standard_normal((n, d)).astype(np.float32)), y.astype(np.int64)


def test_soft_cross_entropy_is_cross_entropy_on_one_hot_and_kl_up_to_a_constant():
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    one_hot = nn.functional.one_hot(labels, 5).float()
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot),
                               nn.functional.cross_entropy(logits, labels, reduction="none"))
    q = torch.softmax(torch.randn(7, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    kl = nn.functional.kl_div(torch.log_softmax(logits, 1), q, reduction="none").sum(1)
    entropy = -(q * q.log()).sum(1)
    torch.testing.assert_close(soft_cross_entropy(logits, q), kl + entropy)


def test_students_on_one_hot_soft_labels_match_students_on_hard_labels():
    x, y = _blobs(30, 0)
    tx, ty = _blobs(300, 1)
    config = EvalConfig(ProxySpec("linear"), seeds=(0, 1))
    hard = evaluate_subset(x, y, tx, ty, 3, config)
    soft = evaluate_subset(x, np.eye(3, dtype=np.float32)[y], tx, ty, 3, config)
    np.testing.assert_allclose(soft.accuracies, hard.accuracies, atol=1 / 300)
    with pytest.raises(CurationError, match=r"soft labels must have shape \(30, 3\)"):
        evaluate_subset(x, np.ones((30, 4)), tx, ty, 3, config)


def test_expert_trajectory_starts_at_the_initialization(tmp_path):
    x, y = _blobs(60, 0)
    spec = ProxySpec("mlp", 8)
    proxy = warmup(x, y, 3, tmp_path, spec, WarmupConfig(fraction=1.0, epochs=3, checkpoints=3,
                                                         seed=5, initial_checkpoint=True))
    assert [c.epoch for c in proxy.checkpoints] == [0, 1, 2, 3]
    assert [c.step for c in proxy.checkpoints] == [0, 4, 8, 12]  # 60 rows / batch 16
    initial = spec.build(6, 3, seed=5).state_dict()
    params = trajectory(proxy)
    for name, value in initial.items():
        torch.testing.assert_close(params[0][name], value)
    assert not torch.equal(params[0]["0.weight"], params[1]["0.weight"])
    moments = proxy.load_moments(proxy.checkpoints[0])
    assert all(not m.any() for m in moments.values())
    assert load_file(proxy.checkpoints[3].model_path).keys() == initial.keys()


def test_compact_labels_truncate_to_top_k_and_store_float16():
    q = np.array([[0.5, 0.2, 0.2, 0.1], [0.05, 0.05, 0.1, 0.8]], dtype=np.float32)
    full = compact_labels(q)
    assert full.dtype == np.float16 and np.allclose(full, q, atol=1e-3)
    top2 = compact_labels(q, top_k=2).astype(np.float32)
    # Ties (0.2, 0.2) go to the lower class index; kept entries are renormalized.
    np.testing.assert_allclose(top2, [[0.5 / 0.7, 0.2 / 0.7, 0, 0], [0, 0, 0.1 / 0.9, 0.8 / 0.9]],
                               atol=1e-3)


def test_distilled_set_round_trips_through_storage(tmp_path):
    rng = np.random.default_rng(0)
    distilled = DistilledSet(
        np.array(["tm-1", "tm-2", "tm-3"], dtype=object), np.array(["a", "b", "c"], dtype=object),
        rng.standard_normal((3, 5)).astype(np.float32), np.array([0, 1, 2]),
        compact_labels(rng.dirichlet(np.ones(4), size=3)), {"config": {"per_class": 1}})
    path = write_distilled(tmp_path / "d.parquet", distilled)
    back = read_distilled(path)
    assert list(back.ids) == list(distilled.ids)
    assert list(back.source_ids) == list(distilled.source_ids)
    assert back.inputs.dtype == np.float32 and np.array_equal(back.inputs, distilled.inputs)
    assert np.array_equal(back.labels, distilled.labels)
    assert back.soft_labels.dtype == np.float16
    assert np.array_equal(back.soft_labels, distilled.soft_labels)
    assert back.info == distilled.info
    schema = pq.read_schema(path)
    assert schema.field("soft_label").type.value_type == pa.float16()
    # A distilled set is a pool in the data contract: students and selectors can read it.
    assert load_pool(path).features.shape == (3, 5)


def test_choose_rows_random_is_seeded_and_ranked_takes_the_top_of_each_class():
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    a, b = choose_rows(labels, 2, seed=3), choose_rows(labels, 2, seed=3)
    assert np.array_equal(a, b) and list(labels[a]) == [0, 0, 1, 1, 2, 2]
    ranked = np.array([5, 4, 7, 1, 0, 6, 2, 3])
    assert list(choose_rows(labels, 1, ranked=ranked)) == [4, 5, 7]
    assert list(choose_rows(labels, 2, ranked=ranked)) == [4, 0, 5, 1, 7, 6]


@pytest.mark.parametrize("kwargs, message", [
    ({"per_class": 0}, "distill 'per_class': Input should be greater than or equal to 1"),
    ({"expert_epoch": 11}, "'expert_epoch' 11 is outside the expert trajectory"),
    ({"expert_epoch": -1}, "outside the expert trajectory"),
    ({"temperature": 0.0}, "distill 'temperature': Input should be greater than 0"),
    ({"labels": "fuzzy"}, "distill 'labels': Input should be 'soft', 'hard' or 'shuffled'"),
    ({"method": "tm", "matching": MatchingConfig(max_start_epoch=8, expert_epochs=5)},
     "reaches epoch 13"),
])
def test_bad_settings_fail_before_work(kwargs, message):
    with pytest.raises(CurationError, match=message):
        DistillConfig(**kwargs)


def test_bad_settings_against_the_data_fail_with_the_class(tmp_path):
    x, y = _blobs(12, 0)  # 4 examples per class
    ids = np.array([f"e{i}" for i in range(12)], dtype=object)
    with pytest.raises(CurationError, match="class 0 has only 4 examples.*per_class=5"):
        distill(x, y, ids, 3, DistillConfig(per_class=5), tmp_path, "d")
    with pytest.raises(CurationError, match="only 1 examples of class 1"):
        distill(x, y, ids, 3, DistillConfig(per_class=2), tmp_path, "d",
                ranked=np.array([0, 3, 1, 2, 5]))
    with pytest.raises(CurationError, match="'top_k' 4 exceeds the number of classes"):
        distill(x, y, ids, 3, DistillConfig(per_class=1, top_k=4), tmp_path, "d")
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_selection_ranking_follows_the_rank_column(tmp_path):
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    path = tmp_path / "sel.parquet"
    pq.write_table(pa.table({"id": ["c", "a", "d"], "rank": [1, 2, 0]}), path)
    assert list(read_ranking(path, ids)) == [3, 2, 0]
    pq.write_table(pa.table({"id": ["c", "zz"]}), path)
    with pytest.raises(CurationError, match="1 ids are not in the pool, e.g. 'zz'"):
        read_ranking(path, ids)


def _tiny_trajectory(tmp_path):
    x, y = _blobs(90, 0)
    spec = ProxySpec("linear")
    proxy = warmup(x, y, 3, tmp_path, spec, WarmupConfig(fraction=1.0, epochs=4, checkpoints=4,
                                                         lr=1e-2, initial_checkpoint=True))
    return x, y, spec, trajectory(proxy)


def test_matching_loss_is_zero_when_the_student_already_lands_on_the_target(tmp_path):
    x, y, spec, traj = _tiny_trajectory(tmp_path)
    model = spec.build(6, 3)
    q = torch.eye(3)[torch.from_numpy(y[:6])]
    inputs = torch.from_numpy(x[:6])
    zero_lr = torch.tensor(0.0)
    assert float(matching_loss(model, traj[1], traj[1], inputs, q, zero_lr, 3)) == 0.0
    assert float(matching_loss(model, traj[0], traj[2], inputs, q, zero_lr, 3)) == pytest.approx(1.0)


def test_adam_matching_steps_land_where_torch_adam_does():
    # The unrolled adam student must be the students' trainer, or the learned set is tuned for
    # another optimizer than the one that evaluates it.
    x, y = _blobs(12, 0)
    spec = StudentSpec(kind="convnet", width=4, depth=1, shape=(1, 2, 3))
    model = spec.build(6, 3, seed=0)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    inputs, q = torch.from_numpy(x), torch.eye(3)[torch.from_numpy(y)] * 0.7 + 0.1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(4):
        optimizer.zero_grad()
        soft_cross_entropy(model(inputs), q).mean().backward()
        optimizer.step()
    landed = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lr = torch.tensor(0.05)
    assert float(matching_loss(model, start, landed, inputs, q, lr, 4,
                               adam_weight_decay=0.01)) < 1e-8
    assert float(matching_loss(model, start, landed, inputs, q, lr, 4)) > 1e-2  # sgd differs


def test_adam_matching_keeps_the_students_lr_and_lowers_the_loss(tmp_path):
    x, y, spec, traj = _tiny_trajectory(tmp_path)
    rows = choose_rows(y, 2, seed=0)
    q = np.eye(3, dtype=np.float32)[y[rows]] * 0.8 + 0.2 / 3
    config = MatchingConfig(iterations=40, syn_steps=10, expert_epochs=2, max_start_epoch=0,
                            lr_inputs=0.03, optimizer="adam")
    result = match_trajectories(x[rows], q, [traj], spec, config, learn_labels=True, seed=1,
                                training=StudentTraining(lr=1e-2))
    assert result.lr == pytest.approx(1e-2) and result.initial_lr == 1e-2
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:10])


def test_trajectory_matching_loss_decreases_and_is_reproducible(tmp_path):
    x, y, spec, traj = _tiny_trajectory(tmp_path)
    rows = choose_rows(y, 2, seed=0)
    q = np.eye(3, dtype=np.float32)[y[rows]] * 0.8 + 0.2 / 3
    config = MatchingConfig(iterations=60, syn_steps=10, expert_epochs=2, max_start_epoch=2,
                            lr_inputs=0.03)
    first = match_trajectories(x[rows], q, [traj], spec, config, learn_labels=True, seed=1)
    assert np.mean(first.losses[-10:]) < 0.5 * np.mean(first.losses[:10])
    assert not np.allclose(first.inputs, x[rows])
    np.testing.assert_allclose(first.soft_labels.sum(1), 1.0, rtol=1e-5)
    second = match_trajectories(x[rows], q, [traj], spec, config, learn_labels=True, seed=1)
    assert np.array_equal(first.inputs, second.inputs) and first.losses == second.losses


def test_run_distill_writes_the_set_its_evaluation_and_a_grid(tmp_path, digits_splits):
    pool, test = load_pool(digits_splits.pool), load_pool(digits_splits.test, role="test")
    outputs = {}
    for labels in ("hard", "soft"):
        config = DistillConfig(per_class=3, labels=labels,
                               expert=ExpertConfig(epochs=4, lr=1e-2, batch_size=32))
        outputs[labels] = run_distill(pool, test, config, tmp_path / labels, tmp_path / "work",
                                      eval_seeds=(0, 1))
    soft = outputs["soft"]
    table = pq.read_table(soft.distilled)
    assert table.column_names[:4] == ["id", "features", "label", "soft_label"]
    assert table.num_rows == 30 and sorted(table.column("label").to_pylist()) == sorted(
        list(range(10)) * 3)
    evaluation = json.loads(soft.evaluation.read_text())
    assert evaluation["seeds"] == [0, 1] and len(evaluation["test_accuracies"]) == 2
    assert evaluation["test_accuracy_mean"] == pytest.approx(soft.result.mean)
    assert evaluation["storage"]["label_bytes"] > 0 and evaluation["storage"]["input_bytes"] > 0
    # float16 labels of 10 classes vs float32 inputs of 64 pixels, 30 rows
    assert (evaluation["storage"]["label_bytes_raw"], evaluation["storage"]["input_bytes_raw"]) \
        == (30 * 10 * 2, 30 * 64 * 4)
    assert 0.5 < evaluation["teacher_test_accuracy"] <= 1
    lineage = json.loads(soft.lineage.read_text())
    assert lineage["pool_id"] == pool.content_hash and len(lineage["experts"][0]) == 5
    assert soft.grid is not None and soft.grid.stat().st_size > 1000  # 8x8 digits
    hard = read_distilled(outputs["hard"].distilled)
    assert set(np.unique(hard.soft_labels)) == {0.0, 1.0} and not lineage["selection"]
    # Same real examples (same seed), so only the labels differ; soft labels carry more.
    assert list(hard.source_ids) == list(read_distilled(soft.distilled).source_ids)
    assert soft.result.mean > outputs["hard"].result.mean


def test_distill_is_reproducible_and_tm_rows_are_new_examples(tmp_path, digits_splits):
    pool = load_pool(digits_splits.pool)
    config = DistillConfig(per_class=1, method="tm", expert=ExpertConfig(epochs=3),
                           matching=MatchingConfig(iterations=5, syn_steps=5, expert_epochs=2,
                                                   max_start_epoch=1))
    runs = [distill(pool.features, pool.labels, pool.ids, 10, config, tmp_path, "digits")
            for _ in range(2)]
    assert np.array_equal(runs[0].inputs, runs[1].inputs)
    assert np.array_equal(runs[0].soft_labels, runs[1].soft_labels)
    assert list(runs[0].ids) == list(runs[1].ids) and runs[0].ids[0].startswith("tm-")
    assert set(runs[0].source_ids) <= set(pool.ids)
    assert runs[0].info["matching"]["lr"] > 0


def test_experts_can_train_on_the_selection_only(tmp_path, digits_splits):
    pool = load_pool(digits_splits.pool)
    ranked = np.arange(0, len(pool), 2)
    config = DistillConfig(per_class=1, expert_data="selection", expert=ExpertConfig(epochs=2))
    distilled = distill(pool.features, pool.labels, pool.ids, 10, config, tmp_path, "digits",
                        ranked=ranked)
    pool_expert = distill(pool.features, pool.labels, pool.ids, 10,
                          DistillConfig(per_class=1, expert=ExpertConfig(epochs=2)), tmp_path,
                          "digits", ranked=ranked)
    assert distilled.info["expert_dirs"] != pool_expert.info["expert_dirs"]
    assert list(distilled.source_ids) == list(pool_expert.source_ids)
    assert not np.array_equal(distilled.soft_labels, pool_expert.soft_labels)
    with pytest.raises(CurationError, match="'expert_data' = 'selection' needs a selection"):
        distill(pool.features, pool.labels, pool.ids, 10, config, tmp_path, "digits")


def test_image_shape_is_declared_or_a_square_and_refused_otherwise():
    assert image_shape(784) == (1, 28, 28) and image_shape(3 * 1024) == (3, 32, 32)
    assert image_shape(600, [20, 30]) == (1, 20, 30) and image_shape(600, (2, 10, 30)) == (2, 10, 30)
    with pytest.raises(CurationError, match="120 values per row are not a square image; declare"):
        image_shape(120)
    with pytest.raises(CurationError, match=r"image shape \[10, 10\] does not hold its 120"):
        image_shape(120, [10, 10])


def test_a_pool_declares_its_image_shape_in_the_parquet_metadata(tmp_path):
    from curation.pool import features_table

    table = features_table([f"e{i}" for i in range(4)], np.zeros((4, 6), np.float32),
                           np.arange(4) % 2)
    plain, shaped, bad = (tmp_path / f"{n}.parquet" for n in ("plain", "shaped", "bad"))
    pq.write_table(table, plain)
    pq.write_table(table.replace_schema_metadata({"shape": "[1, 2, 3]"}), shaped)
    pq.write_table(table.replace_schema_metadata({"shape": "2x3"}), bad)
    assert declared_shape(load_pool(plain)) is None
    assert declared_shape(load_pool(shaped)) == (1, 2, 3)
    with pytest.raises(CurationError, match="bad.parquet: schema metadata 'shape' must be a JSON"):
        declared_shape(load_pool(bad))


def test_convnet_takes_flat_rows_and_its_training_is_seeded():
    net = ConvNet((1, 8, 8), 3, width=4, depth=2)
    assert net(torch.zeros(5, 64)).shape == (5, 3)
    with pytest.raises(CurationError, match="8x8 images are too small"):
        ConvNet((1, 8, 8), 3, width=4, depth=4)
    x, y = _blobs(30, 0, d=64)
    spec, training = StudentSpec("convnet", width=4), StudentTraining(steps=20, batch_size=16)
    runs = [evaluate_students(x, y, x, y, 3, spec, training, (0, 1)) for _ in range(2)]
    assert runs[0].accuracies == runs[1].accuracies and min(runs[0].accuracies) > 0.6


def test_remove_structure_keeps_the_top_entry_and_each_rows_values():
    q = np.random.default_rng(0).dirichlet(np.ones(10), size=20).astype(np.float32)
    shuffled = remove_structure(q, seed=3)
    assert np.array_equal(shuffled.argmax(1), q.argmax(1))
    assert np.array_equal(np.sort(shuffled, axis=1), np.sort(q, axis=1))
    assert not np.array_equal(shuffled, q)
    assert np.array_equal(remove_structure(q, seed=3), shuffled)


def test_convnet_distills_image_pools_and_refuses_non_images(tmp_path, digits_splits):
    pool, test = load_pool(digits_splits.pool), load_pool(digits_splits.test, role="test")
    config = DistillConfig(per_class=2, model=StudentSpec("convnet", width=8),
                           student=StudentTraining(steps=40), method="tm",
                           expert=ExpertConfig(epochs=3, lr=1e-2, batch_size=32),
                           matching=MatchingConfig(iterations=4, syn_steps=4, expert_epochs=2,
                                                   max_start_epoch=1))
    out = run_distill(pool, test, config, tmp_path / "tm", tmp_path / "work", eval_seeds=(0,))
    lineage = json.loads(out.lineage.read_text())
    assert lineage["config"]["model"]["shape"] == [1, 8, 8]  # 64 digits pixels, inferred
    assert out.record["model"] == "convnet" and out.result.mean > 0.2 and out.grid is not None
    assert out.record["teacher_test_accuracy"] > 0.5
    # Epoch 0 is the random initialization: its soft labels are near uniform.
    random_teacher = distill(pool.features, pool.labels, pool.ids, 10,
                             replace(config, method="real", expert_epoch=0), tmp_path / "work",
                             pool.content_hash)
    assert random_teacher.training_targets().max() < 0.5
    shuffled = distill(pool.features, pool.labels, pool.ids, 10,
                       replace(config, method="real", labels="shuffled"), tmp_path / "work",
                       pool.content_hash)
    assert shuffled.info["expert_dirs"] == lineage["expert_dirs"]  # the cached convnet expert
    with pytest.raises(CurationError, match="63 values per row are not a square image"):
        distill(pool.features[:, :63], pool.labels, pool.ids, 10, config, tmp_path, "x")
