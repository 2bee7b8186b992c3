import re

import numpy as np
import pandas as pd
import pytest

from hpa_ray.core.config import load_config
from hpa_ray.core.images import InputError
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.folds.stratify import balance_table, main, make_folds, read_label_matrix, write_folds


@pytest.fixture(scope="module")
def real_labels(shared_data):
    return read_label_matrix(shared_data / "train.csv")


def test_real_label_file_every_image_once_every_class_within_10_percent(real_labels):
    ids, y = real_labels
    assert len(ids) == 21806
    cfg = FoldsConfig(n_folds=5, seed=0)
    folds = make_folds(y, cfg)
    assert folds.shape == (len(ids),) and set(folds) == set(range(5))
    table = balance_table(y, folds, 5)
    watched = table[table.positives >= 50]
    assert len(watched) >= 15
    assert watched.max_deviation.max() <= 0.10, watched[["name", "max_deviation"]]


def test_other_seeds_differ_and_stay_balanced(real_labels):
    _, y = real_labels
    a, b = make_folds(y, FoldsConfig(seed=1)), make_folds(y, FoldsConfig(seed=2))
    assert (a != b).mean() > 0.5
    assert np.array_equal(a, make_folds(y, FoldsConfig(seed=1))), "same seed, same folds"
    table = balance_table(y, b, 5)
    assert table[table.positives >= 50].max_deviation.max() <= 0.10


def test_cli_writes_folds_balance_and_config(shared_data, tmp_path, capsys):
    out = tmp_path / "f" / "folds.csv"
    assert main(["--labels", str(shared_data / "train.csv"), "--n-folds", "4", "--out", str(out)]) == 0
    folds = pd.read_csv(out)
    assert list(folds.columns) == ["image_id", "fold"] and folds.image_id.is_unique
    assert len(folds) == 21806 and set(folds.fold) == {0, 1, 2, 3}
    balance = pd.read_csv(tmp_path / "f" / "folds_balance.csv")
    assert {"fold_0", "fold_3", "max_deviation", "name"} <= set(balance.columns)
    assert (tmp_path / "f" / "folds_config.yaml").exists()
    assert "worst deviation over classes with >= 50 positives: " in capsys.readouterr().out


def test_a_small_label_file_reports_the_classes_present_not_nan(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"ID": [f"img-{i}" for i in range(12)], "Label": ["0|5", "0", "16", "16|0", "5", "2"] * 2}).to_csv(
        labels, index=False)  # fmt: skip
    assert main(["--labels", str(labels), "--n-folds", "3", "--out", str(tmp_path / "folds.csv")]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "no class has 50 positives; worst deviation over the 4 classes present (at most 6 positives): " in line
    assert "nan" not in line


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("ID,Labels\na,1\n", "lacks column"),
        ("ID,Label\na,1\nb,19\n", "line 3: label '19'"),
        # Every unusable row at once; labels joined another tool's way are told the separator.
        (
            "ID,Label\na,0 1\nb,2\nc,\nd,3;4\n",
            "3 row(s) with unusable labels: line 2: label '0 1' is not an integer "
            "0-18 (labels are separated by '|', e.g. 0|1); line 4: empty label; line 5: label '3;4'",
        ),
        ("ID,Label\n" + "".join(f"i{k},x\n" for k in range(7)), "line 6: label 'x' is not an integer 0-18; and 2 more"),
        ("Id,Target\na,0 1\n", "found ['Id', 'Target'] (Id,Target is the 2018 HPA competition's format: 28 classes"),
        ("id,label\na,1\n", "(names are case-sensitive: rename id to ID, label to Label)"),
        ("ID,Label\na,1\na,2\n", "with different labels"),
        ("ID,Label\na,1\n".encode("utf-16"), "is not UTF-8 text (it is UTF-16"),  # Excel's "Unicode text"
        (b"PAR1\x15\x04\x15\x80\x80\x01", "is not UTF-8 text (it is a Parquet file)"),  # a cells file given
        ("ID,Label\na,1\nb,2,3\n", "cannot be read as a CSV: Expected 2 fields in line 3, saw 3"),
        ('ID,Label\n"a,1\n', "cannot be read as a CSV: EOF inside string"),
    ],
)
def test_bad_label_files(tmp_path, content, message, capsys):
    path = tmp_path / "labels.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=re.escape(message)):
        read_label_matrix(path)
    assert main(["--labels", str(path), "--out", str(tmp_path / "f.csv")]) == 2
    assert message.split(":")[0] in capsys.readouterr().err


def test_too_few_images(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("ID,Label\na,1\nb,2\n")
    with pytest.raises(InputError, match="cannot make 5 folds"):
        make_folds(read_label_matrix(path)[1], FoldsConfig())


def test_an_id_repeated_with_the_same_labels_counts_once(tmp_path, capsys):
    path = tmp_path / "labels.csv"
    path.write_text("ID,Label\na,1|2\nb,3\na,2|1\n")
    ids, y = read_label_matrix(path)
    assert ids == ["a", "b"] and y[0, [1, 2]].tolist() == [1, 1] and y.sum() == 3
    assert "listed more than once with the same labels" in capsys.readouterr().err


def test_write_folds_is_the_stage_as_a_library_function(tmp_path):
    """What the CLI and the demo call: the folds CSV, its balance table and config beside it,
    the same folds as make_folds on the same labels."""
    labels = tmp_path / "labels.csv"
    labels.write_text("ID,Label\n" + "".join(f"i{k},{k % 5}|{(k * 7) % 19}\n" for k in range(60)))
    result = write_folds(labels, tmp_path / "out" / "folds.csv", FoldsConfig(n_folds=3, seed=2))
    on_disk = pd.read_csv(tmp_path / "out" / "folds.csv")
    assert on_disk.equals(result.folds) and sorted(on_disk.fold.unique()) == [0, 1, 2]
    assert list(on_disk.fold) == list(make_folds(read_label_matrix(labels)[1], FoldsConfig(n_folds=3, seed=2)))
    assert (tmp_path / "out" / "folds_balance.csv").exists() and result.balance_csv.endswith("folds_balance.csv")
    assert load_config(FoldsConfig, tmp_path / "out" / "folds_config.yaml") == FoldsConfig(n_folds=3, seed=2)
