"""Model cards state the data, the results with intervals, and the limits."""

from xraylib import model_card


def test_model_card_content_and_synthetic_warning(tmp_path, monkeypatch):
    summary = {"synthetic": True, "source": "synthetic", "root": "data/raw/synthetic/chest_xray",
               "classes": ["NORMAL", "PNEUMONIA"], "per_split": {"train": 10, "val": 2, "test": 3}, "patients": 9}
    results = {"headline": {"roc_auc": 0.91234, "roc_auc_ci": [0.85, 0.95]},
               "operating_points": {"youden_val": {"sensitivity": 0.8, "specificity": 0.7}}}
    path = model_card.write_model_card("binary", {"architecture": "small_cnn", "threshold": 0.42}, summary,
                                       results, notes=["Grad-CAM looks inside the lungs."], out_dir=tmp_path)
    text = path.read_text()
    assert path.name == "binary.md"
    assert "SYNTHETIC" in text and "not medical data" in text
    assert "0.912" in text and "[0.850, 0.950]" in text
    assert "| youden_val | 0.800 | 0.700 |" in text
    assert "Not a medical device" in text and "Grad-CAM looks inside the lungs." in text


def test_real_data_card_has_no_synthetic_banner():
    text = model_card.render_model_card("m", {}, {"synthetic": False, "classes": ["A"]}, {})
    assert "SYNTHETIC" not in text


def test_cards_from_metrics(tmp_path, monkeypatch):
    import json

    point = {"threshold": 0.5, "accuracy": 0.8, "sensitivity": 0.9, "specificity": 0.6, "precision": 0.8, "f1": 0.85}
    (tmp_path / "binary.json").write_text(json.dumps({
        "model": {"backbone": "small_cnn"}, "threshold": {"youden_val": 0.5},
        "test": {"n": 10, "roc_auc": 0.9, "roc_auc_ci": [0.8, 0.95], "youden_val": point}}))
    per_class = {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "specificity": 0.5, "support": 3} for c in "AB"}
    (tmp_path / "multiclass.json").write_text(json.dumps({"runs": {"resnet18": {
        "arch": "resnet18", "best_epoch": 2, "test": {"n": 6, "macro_f1": 0.5, "macro_f1_ci": [0.3, 0.7],
                                                        "per_class": per_class}}}}))
    (tmp_path / "data_binary.json").write_text(json.dumps({"synthetic": True, "classes": ["N", "P"]}))
    paths = model_card.cards_from_metrics(tmp_path, out_dir=tmp_path / "cards")
    assert [p.name for p in paths] == ["binary.md", "resnet18.md"]
    assert "| youden_val | 0.800 | 0.850 | 0.800 | 0.900 | 0.600 | 0.500 |" in paths[0].read_text()
    assert "| A | 0.500 | 0.500 | 0.500 | 0.500 | 3 |" in paths[1].read_text()
