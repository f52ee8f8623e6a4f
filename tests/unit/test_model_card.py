"""Model cards state the data, the results with intervals, and the limits."""

from xraylib import model_card


def test_model_card_content_and_synthetic_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(model_card, "MODEL_CARDS_DIR", tmp_path)
    summary = {"synthetic": True, "source": "synthetic", "root": "data/raw/synthetic/chest_xray",
               "classes": ["NORMAL", "PNEUMONIA"], "per_split": {"train": 10, "val": 2, "test": 3}, "patients": 9}
    results = {"headline": {"roc_auc": 0.91234, "roc_auc_ci": [0.85, 0.95]},
               "operating_points": {"youden_val": {"sensitivity": 0.8, "specificity": 0.7}}}
    path = model_card.write_model_card("binary", {"architecture": "small_cnn", "threshold": 0.42}, summary,
                                       results, notes=["Grad-CAM looks inside the lungs."])
    text = path.read_text()
    assert path.name == "binary.md"
    assert "SYNTHETIC" in text and "not medical data" in text
    assert "0.912" in text and "[0.850, 0.950]" in text
    assert "| youden_val | 0.800 | 0.700 |" in text
    assert "Not a medical device" in text and "Grad-CAM looks inside the lungs." in text


def test_real_data_card_has_no_synthetic_banner():
    text = model_card.render_model_card("m", {}, {"synthetic": False, "classes": ["A"]}, {})
    assert "SYNTHETIC" not in text
