import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import CurationError
from curation.pool import features_table, load_pool


def _write(tmp_path, table, name="pool.parquet"):
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def _good_table(n=5):
    return features_table([f"e{i}" for i in range(n)], np.arange(n * 3).reshape(n, 3),
                          labels=np.arange(n) % 2)


def test_loads_features_pool(tmp_path):
    pool = load_pool(_write(tmp_path, _good_table()))
    assert len(pool) == 5 and pool.input_column == "features"
    assert pool.features.shape == (5, 3) and pool.features.dtype == np.float32
    assert list(pool.labels) == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.drop_columns(["id"]), "missing required column 'id'"),
    (lambda t: t.drop_columns(["label"]), "missing required column 'label'"),
    (lambda t: t.drop_columns(["features"]), "exactly one input column"),
    (lambda t: t.append_column("text", pa.array(["a"] * t.num_rows)), "exactly one input column"),
    (lambda t: t.set_column(0, "id", pa.array(["a", "b", "a", "c", "d"])), "duplicate values"),
    (lambda t: t.set_column(0, "id", pa.array(range(5))), "'id' must be strings"),
    (lambda t: t.set_column(2, "label", pa.array([0.5] * 5)), "'label' must be integers"),
    (lambda t: t.set_column(2, "label", pa.array([0, -1, 0, 1, 1])), "negative"),
])
def test_contract_violations_name_the_column(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(_good_table()))
    with pytest.raises(CurationError, match=message) as info:
        load_pool(path)
    assert str(path) in str(info.value)


def test_nan_features_are_rejected_with_row(tmp_path):
    features = np.ones((4, 2))
    features[2, 1] = np.nan
    path = _write(tmp_path, features_table(list("abcd"), features, labels=[0, 1, 0, 1]))
    with pytest.raises(CurationError, match="NaN or infinite values in 1 rows .first: row 2"):
        load_pool(path)


def test_ragged_features_are_rejected(tmp_path):
    table = pa.table({"id": ["a", "b"], "label": [0, 1],
                      "features": pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))})
    with pytest.raises(CurationError, match="one fixed, non-zero length"):
        load_pool(_write(tmp_path, table))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(CurationError, match="pool file not found"):
        load_pool(tmp_path / "nope.parquet")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(CurationError, match="unsupported format"):
        load_pool(tmp_path / "x.txt")


def test_label_optional_when_not_required(tmp_path):
    pool = load_pool(_write(tmp_path, _good_table().drop_columns(["label"])),
                     require_label=False)
    assert not pool.has_labels


def test_loads_datasets_directory_and_jsonl(tmp_path):
    import datasets

    rows = [{"id": f"t{i}", "text": f"document {i}", "label": i % 3} for i in range(6)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    from_disk = load_pool(tmp_path / "ds")
    assert from_disk.input_column == "text" and from_disk.texts[2] == "document 2"
    (tmp_path / "pool.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    from_json = load_pool(tmp_path / "pool.jsonl")
    assert from_json.content_hash == from_disk.content_hash


def test_content_hash_tracks_content(tmp_path):
    a = load_pool(_write(tmp_path, _good_table(), "a.parquet"))
    b = load_pool(_write(tmp_path, _good_table(), "b.parquet"))
    c = load_pool(_write(tmp_path, _good_table(6), "c.parquet"))
    assert a.content_hash == b.content_hash != c.content_hash


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.set_column(1, "features", pa.array([["1.5", "2", "3"]] * 5)),
     r"column 'features' must hold numbers \(list<float32>\)"),
    (lambda t: t.set_column(2, "label", pa.array([0, 1, 10**12, 0, 1])),
     "class indices 0..9999, found 1000000000000"),
    (lambda t: t.drop_columns(["features"]).append_column("text", pa.array([" ", ""] * 2 + [""])),
     "column 'text' is empty in every row"),
])
def test_values_outside_the_contract_name_the_column(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(_good_table()))
    with pytest.raises(CurationError, match=message):
        load_pool(path)


def test_a_split_must_match_its_pool(tmp_path):
    pool = load_pool(_write(tmp_path, _good_table(), "pool.parquet"))
    narrow = features_table(["t0", "t1"], np.ones((2, 2)), labels=[0, 1])
    with pytest.raises(CurationError, match="test features have width 2 but the pool's"):
        load_pool(_write(tmp_path, narrow, "narrow.parquet"), role="test", pool=pool)
    unseen = features_table(["t0", "t1"], np.ones((2, 3)), labels=[0, 4])
    with pytest.raises(CurationError, match=r"unseen.parquet: 1 target label\(s\) never occur.*: 4"):
        load_pool(_write(tmp_path, unseen, "unseen.parquet"), role="target", pool=pool)
    text = pa.table({"id": ["t0"], "label": [0], "text": ["a document"]})
    with pytest.raises(CurationError, match="the test input is 'text' but the pool's"):
        load_pool(_write(tmp_path, text, "text.parquet"), role="test", pool=pool)
    fits = features_table(["t0", "t1"], np.ones((2, 3)), labels=[1, 1])
    assert len(load_pool(_write(tmp_path, fits, "fits.parquet"), role="test", pool=pool)) == 2


def test_a_datasetdict_directory_names_its_splits(tmp_path):
    import datasets

    split = datasets.Dataset.from_dict({"id": ["a"], "label": [0], "text": ["x"]})
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(CurationError, match=r"splits \['train', 'validation'\]; give one .*dd/train"):
        load_pool(tmp_path / "dd")
    assert len(load_pool(tmp_path / "dd" / "train")) == 1
