"""The competition metric on hand-computed cases, and the submission checker."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hpa_ray.core.masks import encode_mask
from hpa_ray.core.schema import CLASS_NAMES, NUM_CLASSES
from hpa_ray.evaluate.score import EvaluateError, average_precision, evaluate, main, read_truth
from hpa_ray.predict.submission import SubmissionError, prediction_string, validate_submission, write_submission

H = W = 20


def _box(y0: int, x0: int, y1: int, x1: int) -> str:
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return encode_mask(mask)


A, B, C = _box(0, 0, 10, 10), _box(10, 10, 20, 20), _box(0, 10, 10, 20)  # three disjoint 10x10 cells
A_SHIFTED = _box(0, 2, 10, 12)  # IoU with A = 80 / 120 = 0.67 (a match)
A_FAR = _box(0, 4, 10, 14)  # IoU with A = 60 / 140 = 0.43 (no match)


def _hot(*classes: int) -> list[int]:
    v = [0] * NUM_CLASSES
    for c in classes:
        v[c] = 1
    return v


def _truth(cells: list[tuple[str, str, list[int]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"image_id": i, "cell_id": k, "image_height": H, "image_width": W, "mask_rle": m, "labels": lab}
            for k, (i, m, lab) in enumerate(cells)
        ]  # fmt: skip
    )


def _submission(rows: dict[str, list[tuple[int, float, str]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "ID": i,
                "ImageWidth": str(W),
                "ImageHeight": str(H),
                "PredictionString": " ".join(f"{c} {p} {m}" for c, p, m in triples),
            }
            for i, triples in rows.items()
        ]  # fmt: skip
    )


def _ap(result: dict, c: int) -> float | None:
    return result["per_class_ap"][CLASS_NAMES[c]]


TRUTH = _truth([("a", A, _hot(0)), ("a", B, _hot(0, 3)), ("b", C, _hot(3))])


def test_perfect_answer_scores_one():
    sub = _submission({"a": [(0, 0.9, A), (0, 0.8, B), (3, 0.7, B)], "b": [(3, 0.6, C)]})
    result = evaluate(sub, TRUTH)
    assert result["mAP"] == pytest.approx(1.0)
    assert _ap(result, 0) == 1.0 and _ap(result, 3) == 1.0
    assert _ap(result, 5) is None  # no true cell: not part of the mean
    assert result["true_cells"][CLASS_NAMES[0]] == 2 and result["predictions"] == 4


def test_all_wrong_scores_zero():
    # right cells, wrong classes; and right class on a mask that overlaps too little
    sub = _submission({"a": [(5, 0.9, A), (3, 0.9, A), (0, 0.8, A_FAR)], "b": [(0, 0.6, C)]})
    result = evaluate(sub, TRUTH)
    assert result["mAP"] == 0.0
    assert _ap(result, 5) is None


def test_iou_threshold_decides_a_match():
    truth = _truth([("a", A, _hot(0))])
    assert evaluate(_submission({"a": [(0, 0.5, A_SHIFTED)]}), truth)["mAP"] == 1.0
    assert evaluate(_submission({"a": [(0, 0.5, A_FAR)]}), truth)["mAP"] == 0.0


def test_duplicates_are_false_positives():
    # class 0: truth A, B. Ranked: A (TP), A again (FP: A is taken), B (TP)
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 → AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    sub = _submission({"a": [(0, 0.9, A), (0, 0.8, A), (0, 0.7, B)]})
    assert _ap(evaluate(sub, TRUTH), 0) == pytest.approx(5 / 6)


def test_confidence_order_halves_ap():
    truth = _truth([("a", A, _hot(0))])
    good_first = _submission({"a": [(0, 0.9, A), (0, 0.5, C)]})
    wrong_first = _submission({"a": [(0, 0.9, C), (0, 0.5, A)]})
    assert evaluate(good_first, truth)["mAP"] == pytest.approx(1.0)
    assert evaluate(wrong_first, truth)["mAP"] == pytest.approx(0.5)


def test_equal_confidences_do_not_follow_file_order():
    truth = _truth([("a", A, _hot(0)), ("b", C, _hot(3))])
    triples = {"a": [(0, 0.5, A), (0, 0.5, B), (0, 0.5, C)], "b": [(0, 0.5, A), (0, 0.5, C)]}
    forward = evaluate(_submission(triples), truth)
    backward = evaluate(_submission({k: v[::-1] for k, v in reversed(triples.items())}), truth)
    assert forward == backward


def test_class_without_truth_is_left_out_of_the_mean():
    sub = _submission({"a": [(0, 0.9, A), (0, 0.8, B), (7, 0.99, A)], "b": []})
    result = evaluate(sub, TRUTH)
    assert _ap(result, 7) is None
    assert _ap(result, 3) == 0.0  # true cells, no prediction
    assert result["mAP"] == pytest.approx(0.5)  # (1 + 0) / 2 classes with truth


def test_missed_image_and_predictions_on_an_image_without_cells():
    sub = _submission({"a": [(0, 0.9, A), (0, 0.8, B), (3, 0.7, B)], "z": [(3, 0.95, C)]})
    # class 3: FP on z (0.95), TP B (0.7), C in image b never predicted: precision .5 at recall .5
    result = evaluate(sub, TRUTH)
    assert _ap(result, 3) == pytest.approx(0.25)
    assert (result["images_without_rows"], result["rows_without_cells"]) == (1, 1)  # b, z


def test_a_submission_of_other_images_is_refused_and_partial_coverage_is_warned(tmp_path, capsys):
    with pytest.raises(EvaluateError, match=r"no image of the submission \(2, e.g. y\) has cells in the truth"):
        evaluate(_submission({"y": [(0, 0.9, A)], "z": []}), TRUTH)
    with pytest.raises(EvaluateError, match="the truth has no cell"):
        evaluate(_submission({"a": [(0, 0.9, A)]}), TRUTH.iloc[:0])
    assert evaluate(_submission({"a": [(0, 0.9, A)], "black": []}), TRUTH)["rows_without_cells"] == 0, "no prediction"
    TRUTH.to_parquet(tmp_path / "truth.parquet")
    write_submission(_submission({"a": [(0, 0.9, A)]}), tmp_path / "s.csv")
    assert main(["--submission", str(tmp_path / "s.csv"), "--truth", str(tmp_path / "truth.parquet")]) == 0
    assert "warning: 1 image(s) of the truth have no row" in capsys.readouterr().err


def test_average_precision_edge_cases():
    assert average_precision(np.array([], bool), 3) == 0.0
    assert average_precision(np.array([True, True]), 4) == pytest.approx(0.5)
    assert average_precision(np.array([False, True]), 1) == pytest.approx(0.5)


def test_truth_with_missing_columns_is_refused(tmp_path):
    TRUTH.drop(columns=["mask_rle"]).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(EvaluateError, match="lacks column.*mask_rle"):
        read_truth(tmp_path / "t.parquet")
    with pytest.raises(EvaluateError, match="does not exist"):
        read_truth(tmp_path / "none.parquet")


def test_evaluate_cli_prints_json(tmp_path, capsys):
    TRUTH.to_parquet(tmp_path / "truth.parquet")
    write_submission(
        _submission({"a": [(0, 0.9, A), (0, 0.8, B), (3, 0.7, B)], "b": [(3, 0.6, C)]}), tmp_path / "s.csv"
    )
    assert main(["--submission", str(tmp_path / "s.csv"), "--truth", str(tmp_path / "truth.parquet")]) == 0
    assert json.loads(capsys.readouterr().out)["mAP"] == pytest.approx(1.0)
    assert main(["--submission", str(tmp_path / "s.csv"), "--truth", str(tmp_path / "no.parquet")]) == 2
    capsys.readouterr()
    # the two files swapped: the Parquet is named as such, in one line
    assert main(["--submission", str(tmp_path / "truth.parquet"), "--truth", str(tmp_path / "s.csv")]) == 2
    said = capsys.readouterr().err
    assert "truth.parquet is not UTF-8 text (it is a Parquet file); a submission is a UTF-8 CSV" in said


# -- submission format ---------------------------------------------------------------------


def test_prediction_string_keeps_top_k_above_min_confidence():
    probs = np.zeros((2, NUM_CLASSES))
    probs[0, [1, 4, 9]] = [0.9, 0.5, 0.01]
    probs[1, 2] = 0.7
    text = prediction_string([A, B], probs, min_confidence=0.05, top_k=2)
    tokens = text.split()
    assert tokens[0::3] == ["1", "4", "2"]
    assert tokens[2::3] == [A, A, B]
    assert all(0 <= float(t) <= 1 for t in tokens[1::3])


@pytest.mark.parametrize(
    ("prediction", "message"),
    [
        (f"19 0.5 {A}", "triple 1: label '19'"),
        (f"0 0.5 {A} 3 1.5 {A}", "triple 2: confidence 1.5 is outside"),
        (f"0 abc {A}", "confidence 'abc'"),
        (f"0 0.5 {A} 2 0.4", "do not make label-confidence-mask triples"),
        ("0 0.5 eNoLCAgIMAEABJkBdQ==", "mask does not decode to 20x20"),
        ("0 0.5 !!notbase64", "mask does not decode"),
    ],
)
def test_validate_names_row_and_triple(tmp_path, prediction, message):
    rows = _submission({"ok": [(0, 0.5, A)], "bad": []})
    rows.loc[1, "PredictionString"] = prediction
    write_submission(rows, tmp_path / "s.csv")
    with pytest.raises(SubmissionError, match=f"row 3 \\(ID 'bad'\\).*{message}"):
        validate_submission(tmp_path / "s.csv")


def test_validate_accepts_a_good_file_and_checks_the_header(tmp_path):
    write_submission(_submission({"a": [(0, 0.5, A), (3, 0.25, B)], "b": []}), tmp_path / "s.csv")
    summary = validate_submission(tmp_path / "s.csv")
    assert (summary.rows, summary.triples, summary.empty_rows) == (2, 2, 1)
    (tmp_path / "h.csv").write_text("ID,Width,Height,PredictionString\na,1,1,\n")
    with pytest.raises(SubmissionError, match="header must be"):
        validate_submission(tmp_path / "h.csv")
    (tmp_path / "d.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\na,20,20,\na,20,20,\n")
    with pytest.raises(SubmissionError, match="'a' has more than one row"):
        validate_submission(tmp_path / "d.csv")


def test_validate_the_task_sample_submission(shared_data):
    summary = validate_submission(shared_data / "sample_submission.csv")
    assert summary.rows == 559 and summary.triples == 559
